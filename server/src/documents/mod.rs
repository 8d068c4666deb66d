//! Documents and retrieval: files uploaded to a project are read, split into
//! chunks and indexed in the background, with their progress announced to
//! the project's room; a question in the project retrieves the best chunks
//! before the model answers.
//!
//! - [`extract`]: what a file is and the text in it (Markdown, text, HTML, PDF).
//! - [`chunk`]: the passages (text-splitter, with overlap, headings kept).
//! - [`index`]: each project's BM25 index (tantivy, on disk).
//!
//! The store is the truth: a document's file and chunks are stored, and it is
//! `completed` only once its chunks are (in one transaction, after they were
//! indexed). The index is derived from the store and is brought back in step
//! with it before a question searches it ([`Documents::ready`]): chunks of
//! documents the store has as completed but the index lacks are added from
//! the store, and those the store no longer has are removed. So a crash at
//! any point leaves the index right by the next question — a document left
//! `processing` is processed again at startup — and `rill reindex` rebuilds
//! every index from the store.

pub mod chunk;
pub mod extract;
pub mod index;
#[cfg(test)]
pub(crate) mod testpdf;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rill_protocol::documents::{DocumentInfo, DocumentStatus, ProjectInfo, Source, SourceMetadata};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::auth::Identity;
use crate::error::{Error, Result};
use crate::rooms::{PROJECT_PREFIX, RoomEventKind, Rooms};
use crate::store::Store;
use crate::store::documents::{DocumentStore, NewDocument};
use index::{IndexError, ProjectIndex};

/// Documents processed at once (each is CPU work on a blocking thread).
const PROCESSING_AT_ONCE: usize = 1;
/// Longest file name kept, in characters.
const MAX_FILENAME_CHARS: usize = 200;

/// Limits of the documents service.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    /// The largest file accepted, in bytes.
    pub max_bytes: usize,
    /// How many chunks a question retrieves.
    pub top_k: usize,
    /// How many projects' indexes stay open (each holds files and a reader).
    pub open_indexes: usize,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        DocumentLimits {
            max_bytes: 20 * 1024 * 1024,
            top_k: 4,
            open_indexes: 64,
        }
    }
}

/// A project ready to search: its completed documents (id → file name) and
/// its index, in step with them.
pub struct Ready {
    project_id: String,
    documents: HashMap<String, String>,
    index: Arc<ProjectIndex>,
}

/// The documents service. Cheap to clone.
#[derive(Clone)]
pub struct Documents {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn DocumentStore>,
    projects: Arc<dyn Store>,
    rooms: Arc<Rooms>,
    /// `<data dir>/index`.
    root: PathBuf,
    limits: DocumentLimits,
    /// Open indexes by project, at most `limits.open_indexes` of them.
    open: Mutex<OpenIndexes<ProjectIndex>>,
    /// One change of a project's index at a time (processing, deleting,
    /// bringing it in step).
    changing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    processing: Semaphore,
    tasks: TaskTracker,
}

impl From<IndexError> for Error {
    fn from(error: IndexError) -> Self {
        Error::Internal(error.to_string())
    }
}

/// Runs blocking index work off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> std::result::Result<T, IndexError> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Internal(format!("index task failed: {e}")))?
        .map_err(Error::from)
}

impl Documents {
    /// The service over `store` (documents) and `projects` (ownership),
    /// announcing to `rooms`, keeping indexes under `root`.
    pub fn new(
        store: Arc<dyn DocumentStore>,
        projects: Arc<dyn Store>,
        rooms: Arc<Rooms>,
        root: PathBuf,
        limits: DocumentLimits,
    ) -> Self {
        Documents {
            inner: Arc::new(Inner {
                store,
                projects,
                rooms,
                root,
                limits,
                open: Mutex::new(OpenIndexes::new(limits.open_indexes)),
                changing: Mutex::new(HashMap::new()),
                processing: Semaphore::new(PROCESSING_AT_ONCE),
                tasks: TaskTracker::new(),
            }),
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> DocumentLimits {
        self.inner.limits
    }

    /// At startup: documents a stop left `processing` are processed again.
    pub async fn resume(&self) -> Result<usize> {
        let unfinished = self.inner.store.unfinished_documents().await?;
        let count = unfinished.len();
        for document in unfinished {
            self.spawn_processing(document);
        }
        Ok(count)
    }

    /// Waits for the processing under way (tests, shutdown).
    pub async fn idle(&self) {
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
        self.inner.tasks.reopen();
    }

    /// Stores an upload to project `project_id` (created for the caller if
    /// unknown) and starts processing it: `processing` at once. A file rill
    /// cannot read is refused before anything is stored.
    pub async fn upload(
        &self,
        identity: &Identity,
        project_id: &str,
        filename: &str,
        content_type: Option<&str>,
        content: Vec<u8>,
    ) -> Result<DocumentInfo> {
        check_project_id(project_id)?;
        if content.len() > self.inner.limits.max_bytes {
            return Err(Error::DocumentTooLarge {
                limit: self.inner.limits.max_bytes,
            });
        }
        let filename = clean_filename(filename);
        let kind = extract::detect(&filename, content_type, &content)
            .map_err(|refused| Error::UnsupportedDocument(refused.to_string()))?;
        self.inner
            .projects
            .ensure_project(project_id, &identity.conversation_owner())
            .await?;
        let document = self
            .inner
            .store
            .add_document(NewDocument {
                id: uuid::Uuid::now_v7().to_string(),
                project_id: project_id.to_owned(),
                filename,
                media_type: kind.media_type().to_owned(),
                content,
            })
            .await?;
        self.announce(
            project_id,
            "project_update",
            json!({"type": "document_added", "data": document}),
        );
        self.status(&document, DocumentStatus::Processing, 0, None);
        self.spawn_processing(document.clone());
        Ok(document)
    }

    /// The caller's projects, newest first (at most 500).
    pub async fn projects(&self, identity: &Identity) -> Result<Vec<ProjectInfo>> {
        Ok(self
            .inner
            .store
            .projects_of(&identity.conversation_owner())
            .await?)
    }

    /// The caller's project's documents, newest first.
    pub async fn list(&self, identity: &Identity, project_id: &str) -> Result<Vec<DocumentInfo>> {
        self.owned(identity, project_id).await?;
        Ok(self.inner.store.documents(project_id).await?)
    }

    /// One document of the caller's project.
    pub async fn get(
        &self,
        identity: &Identity,
        project_id: &str,
        document_id: &str,
    ) -> Result<DocumentInfo> {
        self.owned(identity, project_id).await?;
        self.inner
            .store
            .document(project_id, document_id)
            .await?
            .ok_or(Error::NotFound("No such document in this project"))
    }

    /// Deletes a document of the caller's project: gone from the store, then
    /// from the index (a crash between the two leaves chunks the store no
    /// longer has, which no question sees and the next one removes).
    pub async fn delete(
        &self,
        identity: &Identity,
        project_id: &str,
        document_id: &str,
    ) -> Result<()> {
        self.owned(identity, project_id).await?;
        let lock = self.changing(project_id);
        let _changing = lock.lock().await;
        if !self
            .inner
            .store
            .delete_document(project_id, document_id)
            .await?
        {
            return Err(Error::NotFound("No such document in this project"));
        }
        let index = self.index(project_id).await?;
        let ids = vec![document_id.to_owned()];
        blocking(move || index.remove(&ids)).await?;
        self.announce(
            project_id,
            "project_update",
            json!({"type": "document_deleted", "data": {"document_id": document_id, "project_id": project_id}}),
        );
        Ok(())
    }

    /// Whether a question of `identity` in project `project_id` may retrieve
    /// from it: `Ok(true)` if it is the caller's, `Ok(false)` if there is no
    /// such project (nothing to retrieve), `FORBIDDEN` if another owner's.
    pub async fn may_retrieve(&self, identity: &Identity, project_id: &str) -> Result<bool> {
        check_project_id(project_id)?;
        if self.inner.limits.top_k == 0 {
            return Ok(false);
        }
        match self.inner.projects.project_owner(project_id).await? {
            Some(owner) if owner == identity.conversation_owner() => Ok(true),
            Some(_) => Err(Error::Forbidden),
            None => Ok(false),
        }
    }

    /// Project `project_id` ready to search, or `None` if it has no completed
    /// document (retrieval is skipped). Brings its index in step with the
    /// store first.
    pub async fn ready(&self, project_id: &str) -> Result<Option<Ready>> {
        let completed: HashMap<String, String> = self
            .inner
            .store
            .completed_documents(project_id)
            .await?
            .into_iter()
            .collect();
        if completed.is_empty() {
            return Ok(None);
        }
        let index = self.index(project_id).await?;
        let wanted: HashSet<String> = completed.keys().cloned().collect();
        if index.documents() != wanted {
            self.bring_in_step(project_id, &index).await?;
        }
        Ok(Some(Ready {
            project_id: project_id.to_owned(),
            documents: completed,
            index,
        }))
    }

    /// The best chunks of a ready project for `question`, as sources.
    pub async fn search(&self, ready: &Ready, question: &str) -> Result<Vec<Source>> {
        let index = ready.index.clone();
        let allowed: HashSet<String> = ready.documents.keys().cloned().collect();
        let question = question.to_owned();
        let top_k = self.inner.limits.top_k;
        let hits = blocking(move || index.search(&question, top_k, &allowed)).await?;
        tracing::debug!(project = %ready.project_id, found = hits.len(), "retrieved");
        Ok(hits
            .into_iter()
            .map(|hit| Source {
                id: format!("{}:{}", hit.document_id, hit.seq),
                content: hit.content,
                metadata: SourceMetadata {
                    filename: ready
                        .documents
                        .get(&hit.document_id)
                        .cloned()
                        .unwrap_or(hit.filename),
                    document_id: hit.document_id,
                    page: hit.page,
                },
                score: (f64::from(hit.score) * 1000.0).round() / 1000.0,
            })
            .collect())
    }

    /// Rebuilds every project's index from the store (`rill reindex`):
    /// how many projects and documents.
    pub async fn reindex(&self) -> Result<(usize, usize)> {
        let projects = self.inner.store.projects_with_documents().await?;
        let mut documents = 0;
        for project_id in &projects {
            let lock = self.changing(project_id);
            let _changing = lock.lock().await;
            self.inner
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(project_id);
            let dir = index::project_dir(&self.inner.root, project_id);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| {
                    Error::Internal(format!("cannot remove {}: {e}", dir.display()))
                })?;
            }
            let index = self.index(project_id).await?;
            for (id, filename) in self.inner.store.completed_documents(project_id).await? {
                let chunks = self.inner.store.document_chunks(&id).await?;
                let target = index.clone();
                blocking(move || target.put(&id, &filename, &chunks)).await?;
                documents += 1;
            }
        }
        Ok((projects.len(), documents))
    }

    /// Checks that project `project_id` exists and is the caller's.
    async fn owned(&self, identity: &Identity, project_id: &str) -> Result<()> {
        check_project_id(project_id)?;
        match self.inner.projects.project_owner(project_id).await? {
            Some(owner) if owner == identity.conversation_owner() => Ok(()),
            Some(_) => Err(Error::Forbidden),
            None => Err(Error::NotFound("No such project")),
        }
    }

    /// The lock that orders changes to a project's index.
    fn changing(&self, project_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .changing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(project_id.to_owned())
            .or_default()
            .clone()
    }

    /// A project's index, opened once.
    async fn index(&self, project_id: &str) -> Result<Arc<ProjectIndex>> {
        if let Some(index) = self
            .inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(project_id)
        {
            return Ok(index);
        }
        let dir = index::project_dir(&self.inner.root, project_id);
        let opened = Arc::new(blocking(move || ProjectIndex::open(&dir)).await?);
        let mut open = self.inner.open.lock().unwrap_or_else(|p| p.into_inner());
        Ok(open.insert(project_id, opened))
    }

    /// Makes the index hold exactly the project's completed documents.
    async fn bring_in_step(&self, project_id: &str, index: &Arc<ProjectIndex>) -> Result<()> {
        let lock = self.changing(project_id);
        let _changing = lock.lock().await;
        let completed = self.inner.store.completed_documents(project_id).await?;
        let held = index.documents();
        let wanted: HashSet<&String> = completed.iter().map(|(id, _)| id).collect();
        let extra: Vec<String> = held
            .iter()
            .filter(|id| !wanted.contains(id))
            .cloned()
            .collect();
        if !extra.is_empty() {
            tracing::info!(project = %project_id, count = extra.len(), "removing chunks of documents the store no longer has from the index");
            let target = index.clone();
            blocking(move || target.remove(&extra)).await?;
        }
        for (id, filename) in completed {
            if held.contains(&id) {
                continue;
            }
            tracing::info!(project = %project_id, document = %id, "indexing a stored document the index lacks");
            let chunks = self.inner.store.document_chunks(&id).await?;
            let target = index.clone();
            blocking(move || target.put(&id, &filename, &chunks)).await?;
        }
        Ok(())
    }

    /// Sends `event` to the project's room, on every dialect.
    fn announce(&self, project_id: &str, event: &str, data: serde_json::Value) {
        self.inner.rooms.publish(
            &format!("{PROJECT_PREFIX}{project_id}"),
            RoomEventKind::Event {
                event: event.to_owned(),
                data,
            },
        );
    }

    /// Announces `document_status`.
    fn status(
        &self,
        document: &DocumentInfo,
        status: DocumentStatus,
        progress: u8,
        detail: Option<serde_json::Value>,
    ) {
        let mut data = json!({
            "project_id": document.project_id,
            "document_id": document.document_id,
            "filename": document.filename,
            "status": status,
            "progress": progress,
        });
        if let (Some(object), Some(serde_json::Value::Object(extra))) =
            (data.as_object_mut(), detail)
        {
            object.extend(extra);
        }
        self.announce(&document.project_id, "document_status", data);
    }

    fn spawn_processing(&self, document: DocumentInfo) {
        let service = self.clone();
        self.inner.tasks.spawn(async move {
            let Ok(_turn) = service.inner.processing.acquire().await else {
                return;
            };
            if let Err(error) = service.process(&document).await {
                tracing::error!(document = %document.document_id, %error, "processing a document failed");
            }
        });
    }

    /// Reads, splits and indexes one document, then stores its chunks as
    /// `completed` — or marks it `failed` with the reason.
    async fn process(&self, document: &DocumentInfo) -> Result<()> {
        let id = document.document_id.clone();
        let Some(bytes) = self.inner.store.document_file(&id).await? else {
            return Ok(()); // deleted meanwhile
        };
        let Some(kind) = extract::Kind::from_media_type(&document.media_type) else {
            return self
                .failed(
                    document,
                    &format!("unknown media type {}", document.media_type),
                )
                .await;
        };
        self.status(document, DocumentStatus::Processing, 10, None);
        let read = tokio::task::spawn_blocking(move || {
            extract::extract(kind, &bytes).map(|text| {
                let chunks = chunk::chunks(kind, &text);
                (text.page_count, chunks)
            })
        })
        .await
        .map_err(|e| Error::Internal(format!("extraction task failed: {e}")))?;
        let (pages, chunks) = match read {
            Ok(read) => read,
            Err(unreadable) => return self.failed(document, &unreadable.to_string()).await,
        };
        self.status(
            document,
            DocumentStatus::Processing,
            60,
            Some(json!({"chunks": chunks.len()})),
        );
        let lock = self.changing(&document.project_id);
        let _changing = lock.lock().await;
        let index = self.index(&document.project_id).await?;
        let (target, doc_id, filename, indexed) = (
            index.clone(),
            id.clone(),
            document.filename.clone(),
            chunks.clone(),
        );
        blocking(move || target.put(&doc_id, &filename, &indexed)).await?;
        self.status(document, DocumentStatus::Processing, 90, None);
        if !self
            .inner
            .store
            .complete_document(&id, pages, &chunks)
            .await?
        {
            // Deleted while it was processed: take its chunks back out.
            let ids = vec![id];
            return blocking(move || index.remove(&ids)).await;
        }
        self.status(
            document,
            DocumentStatus::Completed,
            100,
            Some(json!({"chunks": chunks.len(), "pages": pages})),
        );
        Ok(())
    }

    /// Marks a document failed (nothing of it indexed) and says why.
    async fn failed(&self, document: &DocumentInfo, reason: &str) -> Result<()> {
        tracing::info!(document = %document.document_id, reason, "document not readable");
        let lock = self.changing(&document.project_id);
        let _changing = lock.lock().await;
        let index = self.index(&document.project_id).await?;
        let ids = vec![document.document_id.clone()];
        blocking(move || index.remove(&ids)).await?;
        if self
            .inner
            .store
            .fail_document(&document.document_id, reason)
            .await?
        {
            self.status(
                document,
                DocumentStatus::Failed,
                100,
                Some(json!({"error": reason})),
            );
        }
        Ok(())
    }
}

impl Ready {
    /// The project.
    pub fn project_id(&self) -> &str {
        &self.project_id
    }
}

/// A project id rill accepts: at most 128 characters, no control characters.
fn check_project_id(id: &str) -> Result<()> {
    if id.is_empty() || id.chars().count() > 128 || id.chars().any(char::is_control) {
        return Err(Error::InvalidMessage(
            "a project id is 1 to 128 characters without control characters".into(),
        ));
    }
    Ok(())
}

/// A file name as shown: its last path component, without control
/// characters, at most [`MAX_FILENAME_CHARS`]; `document` if nothing is left.
fn clean_filename(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let clean: String = last
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_FILENAME_CHARS)
        .collect();
    let clean = clean.trim();
    if clean.is_empty() || clean == "." || clean == ".." {
        "document".to_owned()
    } else {
        clean.to_owned()
    }
}

/// What the model is told about the sources: numbered passages to answer
/// from and cite.
pub fn prompt_context(sources: &[Source]) -> String {
    let mut text = String::from(
        "\n\nAnswer from the numbered sources below when they hold the answer, and cite \
         them as [1], [2] … after the sentences that use them. If they do not hold the \
         answer, say so before answering from general knowledge.\n",
    );
    for (n, source) in sources.iter().enumerate() {
        let page = source
            .metadata
            .page
            .map(|p| format!(", page {p}"))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n[{}] {}{page}:\n{}\n",
            n + 1,
            source.metadata.filename,
            source.content.trim()
        ));
    }
    text
}

/// The open indexes: a map bounded by least recent use. An index is closed
/// (dropped from the map) only when nothing else holds it, so a project never
/// has two open at once; past the bound with every index in use, the map grows
/// until one is free again.
struct OpenIndexes<T> {
    limit: usize,
    /// Each project's index and when it was last asked for.
    entries: HashMap<String, (Arc<T>, u64)>,
    clock: u64,
}

impl<T> OpenIndexes<T> {
    fn new(limit: usize) -> Self {
        OpenIndexes {
            limit: limit.max(1),
            entries: HashMap::new(),
            clock: 0,
        }
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The project's open index, marked as just used.
    fn get(&mut self, project: &str) -> Option<Arc<T>> {
        let now = self.tick();
        let (index, used) = self.entries.get_mut(project)?;
        *used = now;
        Some(index.clone())
    }

    /// Keeps `opened` for `project` (or the index opened meanwhile by
    /// another caller, which wins), closing least recently used indexes that
    /// are not in use while the map is over its bound.
    fn insert(&mut self, project: &str, opened: Arc<T>) -> Arc<T> {
        let now = self.tick();
        let index = match self.entries.get_mut(project) {
            Some((index, used)) => {
                *used = now;
                index.clone()
            }
            None => {
                self.entries
                    .insert(project.to_owned(), (opened.clone(), now));
                opened
            }
        };
        while self.entries.len() > self.limit {
            let idle = self
                .entries
                .iter()
                .filter(|(name, (index, _))| {
                    name.as_str() != project && Arc::strong_count(index) == 1
                })
                .min_by_key(|(_, (_, used))| *used)
                .map(|(name, _)| name.clone());
            match idle {
                Some(name) => {
                    self.entries.remove(&name);
                }
                None => break,
            }
        }
        index
    }

    /// Forgets the project's index (whoever holds it keeps it until done).
    fn remove(&mut self, project: &str) {
        self.entries.remove(project);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_indexes_close_the_least_recently_used_one_not_in_use() {
        let mut open = OpenIndexes::new(2);
        let a = open.insert("a", Arc::new("index a"));
        drop(a);
        drop(open.insert("b", Arc::new("index b")));
        // `a` asked for again: `b` is now the least recently used.
        drop(open.get("a"));
        drop(open.insert("c", Arc::new("index c")));
        assert_eq!(open.len(), 2);
        assert!(open.get("b").is_none(), "b was closed");
        assert!(open.get("a").is_some() && open.get("c").is_some());
        // An index in use is never closed: the map grows past its bound.
        let held_a = open.get("a").unwrap();
        let held_c = open.get("c").unwrap();
        drop(open.insert("d", Arc::new("index d")));
        assert_eq!(open.len(), 3);
        assert!(Arc::ptr_eq(&held_a, &open.get("a").unwrap()));
        // Once they are free, the next insertion brings it back to its bound.
        drop((held_a, held_c));
        drop(open.insert("e", Arc::new("index e")));
        assert_eq!(open.len(), 2);
        assert!(open.get("e").is_some());
        // Two callers opening one project: the first index kept wins.
        let first = open.insert("e", Arc::new("another e"));
        assert_eq!(*first, "index e");
    }

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\docs\\hand\u{7}book.md"), "handbook.md");
        assert_eq!(clean_filename(""), "document");
        assert_eq!(clean_filename("dir/.."), "document");
        assert_eq!(clean_filename(&"a".repeat(500)).len(), MAX_FILENAME_CHARS);
    }

    #[test]
    fn project_ids_are_bounded() {
        assert!(check_project_id("p1").is_ok());
        assert!(check_project_id("").is_err());
        assert!(check_project_id(&"x".repeat(129)).is_err());
        assert!(check_project_id("a\nb").is_err());
    }

    #[test]
    fn the_prompt_numbers_its_sources() {
        let source = |file: &str, page, content: &str| Source {
            id: "d:1".into(),
            content: content.into(),
            metadata: SourceMetadata {
                document_id: "d".into(),
                filename: file.into(),
                page,
            },
            score: 1.0,
        };
        let text = prompt_context(&[
            source("a.md", None, "Alpha."),
            source("b.pdf", Some(3), "Bravo."),
        ]);
        assert!(text.contains("[1] a.md:\nAlpha."), "{text}");
        assert!(text.contains("[2] b.pdf, page 3:\nBravo."), "{text}");
    }
}
