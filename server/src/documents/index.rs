//! The full-text index of one project's chunks: tantivy (BM25), on disk
//! under `<data dir>/index/<project hash>/`.
//!
//! The index is derived data. The store holds every document's chunks; the
//! index holds a copy to search, and [`ProjectIndex::documents`] says which
//! documents it has, so the service can bring it back in step with the store
//! (add what is missing from the stored chunks, remove what the store no
//! longer has) after a crash, on another instance, or when the directory was
//! lost. An index that cannot be opened is rebuilt empty, then refilled.
//!
//! Every method blocks (disk, CPU): call them off the async workers.

use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

use super::chunk::Chunk;

/// The analyzer's name in the index's tokenizer manager.
const ANALYZER: &str = "rill_en";
/// The writer's memory budget (tantivy's minimum is 15 MB per thread).
const WRITER_BYTES: usize = 20_000_000;
/// Most distinct words of a question that are searched for.
const MAX_QUERY_TERMS: usize = 64;

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// tantivy failed.
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The directory could not be made or read.
    #[error("search index directory: {0}")]
    Io(#[from] std::io::Error),
}

/// The fields of a chunk in the index.
#[derive(Debug, Clone, Copy)]
struct Fields {
    /// `<document>:<seq>`.
    chunk: Field,
    /// The document's id (deleted by it; read as a fast column).
    document: Field,
    seq: Field,
    /// 0 when the document has no pages.
    page: Field,
    filename: Field,
    heading: Field,
    content: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
        .set_stored();
    let fields = Fields {
        chunk: builder.add_text_field("chunk", STRING | STORED),
        document: builder.add_text_field("document", STRING | STORED | FAST),
        seq: builder.add_u64_field("seq", STORED),
        page: builder.add_u64_field("page", STORED),
        filename: builder.add_text_field("filename", text.clone()),
        heading: builder.add_text_field("heading", text.clone()),
        content: builder.add_text_field("content", text),
    };
    (builder.build(), fields)
}

/// English words: split on non-alphanumerics, at most 40 bytes, lower case,
/// accents folded, common words dropped, stemmed ("refunds" finds "refund").
fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter);
    match StopWordFilter::new(Language::English) {
        Some(stop) => builder
            .filter(stop)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// One passage found for a question.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The document.
    pub document_id: String,
    /// The chunk's place in it.
    pub seq: u64,
    /// Its page, if the document has pages.
    pub page: Option<u64>,
    /// The document's file name.
    pub filename: String,
    /// The heading it falls under (Markdown).
    pub heading: Option<String>,
    /// The passage.
    pub content: String,
    /// BM25 relevance.
    pub score: f32,
}

/// A project's index.
pub struct ProjectIndex {
    index: Index,
    reader: IndexReader,
    fields: Fields,
    /// The documents it holds (each with all its chunks).
    documents: Mutex<HashSet<String>>,
    /// One writer at a time (tantivy also locks the directory).
    writing: Mutex<()>,
}

impl std::fmt::Debug for ProjectIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectIndex")
            .field("documents", &self.documents())
            .finish_non_exhaustive()
    }
}

impl ProjectIndex {
    /// Opens the index in `dir`, creating it if there is none; one that cannot
    /// be read (damaged, or of another schema) is replaced by an empty one.
    pub fn open(dir: &Path) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir)?;
        let (schema, fields) = schema();
        let index = match Self::open_as_is(dir, &schema) {
            Ok(index) => index,
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "search index unreadable: rebuilding it from the store");
                std::fs::remove_dir_all(dir)?;
                std::fs::create_dir_all(dir)?;
                Self::open_as_is(dir, &schema)?
            }
        };
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        let project = ProjectIndex {
            index,
            reader,
            fields,
            documents: Mutex::new(HashSet::new()),
            writing: Mutex::new(()),
        };
        let held = project.read_documents()?;
        *project.documents.lock().unwrap_or_else(|p| p.into_inner()) = held;
        Ok(project)
    }

    fn open_as_is(dir: &Path, schema: &Schema) -> Result<Index, IndexError> {
        let index = Index::open_or_create(
            MmapDirectory::open(dir).map_err(|e| {
                IndexError::Tantivy(tantivy::TantivyError::SystemError(e.to_string()))
            })?,
            schema.clone(),
        )?;
        index.tokenizers().register(ANALYZER, analyzer());
        Ok(index)
    }

    /// The documents the index holds now, read from its live chunks.
    fn read_documents(&self) -> Result<HashSet<String>, IndexError> {
        let searcher = self.reader.searcher();
        let mut held = HashSet::new();
        for segment in searcher.segment_readers() {
            let Some(column) = segment.fast_fields().str("document")? else {
                continue;
            };
            let mut ords = BTreeSet::new();
            for doc in segment.doc_ids_alive() {
                ords.extend(column.term_ords(doc));
            }
            let mut id = String::new();
            for ord in ords {
                if column.ord_to_str(ord, &mut id)? {
                    held.insert(id.clone());
                }
            }
        }
        Ok(held)
    }

    /// The documents the index holds.
    pub fn documents(&self) -> HashSet<String> {
        self.documents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many chunks the index holds.
    pub fn chunk_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    fn writer(&self) -> Result<IndexWriter, IndexError> {
        Ok(self.index.writer_with_num_threads(1, WRITER_BYTES)?)
    }

    /// Replaces whatever the index holds of `document_id` by `chunks`, and
    /// commits (durable when this returns).
    pub fn put(
        &self,
        document_id: &str,
        filename: &str,
        chunks: &[Chunk],
    ) -> Result<(), IndexError> {
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut writer = self.writer()?;
        let f = self.fields;
        writer.delete_term(Term::from_field_text(f.document, document_id));
        for chunk in chunks {
            let mut doc = TantivyDocument::default();
            doc.add_text(f.chunk, format!("{document_id}:{}", chunk.seq));
            doc.add_text(f.document, document_id);
            doc.add_u64(f.seq, chunk.seq);
            doc.add_u64(f.page, chunk.page.unwrap_or(0));
            doc.add_text(f.filename, filename);
            if let Some(heading) = &chunk.heading {
                doc.add_text(f.heading, heading);
            }
            doc.add_text(f.content, &chunk.content);
            writer.add_document(doc)?;
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        let mut held = self.documents.lock().unwrap_or_else(|p| p.into_inner());
        if chunks.is_empty() {
            held.remove(document_id);
        } else {
            held.insert(document_id.to_owned());
        }
        Ok(())
    }

    /// Removes `document_ids` from the index, and commits.
    pub fn remove(&self, document_ids: &[String]) -> Result<(), IndexError> {
        if document_ids.is_empty() {
            return Ok(());
        }
        let _one = self.writing.lock().unwrap_or_else(|p| p.into_inner());
        let mut writer = self.writer()?;
        for id in document_ids {
            writer.delete_term(Term::from_field_text(self.fields.document, id));
        }
        writer.commit()?;
        writer.wait_merging_threads()?;
        self.reader.reload()?;
        let mut held = self.documents.lock().unwrap_or_else(|p| p.into_inner());
        for id in document_ids {
            held.remove(id);
        }
        Ok(())
    }

    /// The best `limit` chunks for `question` by BM25 over their text, their
    /// heading and their file name (a word of the heading counts 1.5 times, of
    /// the name half), among the documents `allowed` (the store's completed
    /// ones). A question without a searchable word finds nothing.
    pub fn search(
        &self,
        question: &str,
        limit: usize,
        allowed: &HashSet<String>,
    ) -> Result<Vec<Hit>, IndexError> {
        let f = self.fields;
        let words = self.words(question);
        if words.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for word in &words {
            for (field, boost) in [(f.content, 1.0), (f.heading, 1.5), (f.filename, 0.5)] {
                let term = TermQuery::new(
                    Term::from_field_text(field, word),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(term), boost)),
                ));
            }
        }
        let query = BooleanQuery::new(clauses);
        let searcher = self.reader.searcher();
        // Chunks of documents the store no longer has (or not yet) are
        // skipped: ask for a few more than needed.
        let wanted = limit.saturating_mul(3).max(limit + 8);
        let top = searcher.search(&query, &TopDocs::with_limit(wanted).order_by_score())?;
        let mut hits = Vec::with_capacity(limit);
        for (score, address) in top {
            let doc: TantivyDocument = searcher.doc(address)?;
            let text = |field| {
                doc.get_first(field)
                    .and_then(|v| v.as_str().map(str::to_owned))
            };
            let number = |field| doc.get_first(field).and_then(|v| v.as_u64());
            let Some(document_id) = text(f.document) else {
                continue;
            };
            if !allowed.contains(&document_id) {
                continue;
            }
            hits.push(Hit {
                document_id,
                seq: number(f.seq).unwrap_or_default(),
                page: number(f.page).filter(|p| *p > 0),
                filename: text(f.filename).unwrap_or_default(),
                heading: text(f.heading),
                content: text(f.content).unwrap_or_default(),
                score,
            });
            if hits.len() == limit {
                break;
            }
        }
        Ok(hits)
    }

    /// The distinct searchable words of `text`, as the index spells them.
    fn words(&self, text: &str) -> Vec<String> {
        let mut analyzer = analyzer();
        let mut stream = analyzer.token_stream(text);
        let mut words: Vec<String> = Vec::new();
        while stream.advance() {
            let word = &stream.token().text;
            if !words.contains(word) {
                words.push(word.clone());
                if words.len() == MAX_QUERY_TERMS {
                    break;
                }
            }
        }
        words
    }
}

/// Where project `project_id`'s index lives under `root`: a hash of the id
/// (ids are any text up to 128 characters; directory names are not).
pub fn project_dir(root: &Path, project_id: &str) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(project_id.as_bytes());
    let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    root.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(seq: u64, heading: Option<&str>, content: &str) -> Chunk {
        Chunk {
            seq,
            page: None,
            heading: heading.map(str::to_owned),
            content: content.into(),
        }
    }

    fn all(index: &ProjectIndex) -> HashSet<String> {
        index.documents()
    }

    #[test]
    fn finds_the_best_passage_with_stemming_and_keeps_documents_apart() {
        let dir = tempfile::tempdir().unwrap();
        let index = ProjectIndex::open(dir.path()).unwrap();
        index
            .put(
                "hb",
                "handbook.md",
                &[
                    chunk(
                        1,
                        Some("Holidays"),
                        "Everyone gets 25 days of paid leave a year.",
                    ),
                    chunk(
                        2,
                        Some("Money"),
                        "Refunds are paid within 14 days of the request.",
                    ),
                    chunk(3, None, "The office opens at nine."),
                ],
            )
            .unwrap();
        index
            .put(
                "other",
                "other.md",
                &[chunk(1, None, "Refund refund refund policy.")],
            )
            .unwrap();
        assert_eq!(all(&index), HashSet::from(["hb".into(), "other".into()]));
        let only_hb = HashSet::from(["hb".to_owned()]);
        let hits = index
            .search("How long do REFUNDS take?", 3, &only_hb)
            .unwrap();
        assert_eq!(hits[0].document_id, "hb");
        assert_eq!(hits[0].seq, 2);
        assert!(hits[0].content.contains("14 days"));
        assert_eq!(hits[0].heading.as_deref(), Some("Money"));
        assert!(hits.iter().all(|h| h.document_id == "hb"), "{hits:?}");
        // Common words alone find nothing; hostile query syntax is just words.
        assert!(index.search("what is the", 3, &only_hb).unwrap().is_empty());
        assert!(
            index
                .search("title:(\"x\" AND -y)^9 *", 3, &only_hb)
                .unwrap()
                .is_empty()
        );
        assert!(index.search("", 3, &only_hb).unwrap().is_empty());
    }

    #[test]
    fn put_replaces_remove_removes_and_reopening_remembers() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = ProjectIndex::open(dir.path()).unwrap();
            index
                .put("a", "a.md", &[chunk(1, None, "alpha bravo")])
                .unwrap();
            index
                .put("a", "a.md", &[chunk(1, None, "charlie delta")])
                .unwrap();
            index
                .put("b", "b.md", &[chunk(1, None, "echo foxtrot")])
                .unwrap();
            assert_eq!(index.chunk_count(), 2);
            let allowed = HashSet::from(["a".to_owned(), "b".to_owned()]);
            assert!(index.search("alpha", 5, &allowed).unwrap().is_empty());
            assert_eq!(index.search("charlie", 5, &allowed).unwrap().len(), 1);
            index.remove(&["b".to_owned()]).unwrap();
            assert!(index.search("echo", 5, &allowed).unwrap().is_empty());
        }
        let reopened = ProjectIndex::open(dir.path()).unwrap();
        assert_eq!(reopened.documents(), HashSet::from(["a".to_owned()]));
        assert_eq!(reopened.chunk_count(), 1);
    }

    #[test]
    fn a_damaged_index_is_replaced_by_an_empty_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let index = ProjectIndex::open(dir.path()).unwrap();
            index.put("a", "a.md", &[chunk(1, None, "alpha")]).unwrap();
        }
        std::fs::write(dir.path().join("meta.json"), b"{ not json").unwrap();
        let index = ProjectIndex::open(dir.path()).unwrap();
        assert!(index.documents().is_empty());
        index.put("a", "a.md", &[chunk(1, None, "alpha")]).unwrap();
        assert_eq!(index.documents().len(), 1);
    }

    #[test]
    fn project_directories_are_stable_and_distinct() {
        let root = Path::new("/data/index");
        assert_eq!(project_dir(root, "p1"), project_dir(root, "p1"));
        assert_ne!(project_dir(root, "p1"), project_dir(root, "p2"));
        let name = project_dir(root, "../../etc/passwd");
        assert_eq!(name.parent(), Some(root));
        assert_eq!(name.file_name().unwrap().len(), 32);
    }
}
