//! The store against both real databases: SQLite (a file) and PostgreSQL (the
//! server on 127.0.0.1:5432, a fresh schema per test; RILL_TEST_DATABASE_URL
//! overrides the URL).

mod common;

use rill::store::{
    Figures, HistoryMessage, MessageStatus, NewMessage, NewReply, SqlStore, Store, StoreError,
    StoreOptions, Turn,
};

/// Where the PostgreSQL tests connect.
fn postgres_url() -> String {
    std::env::var("RILL_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned())
}

/// Drops the test's PostgreSQL schema and SQLite directory.
struct Cleanup {
    admin: sqlx::AnyPool,
    schema: String,
    dir: std::path::PathBuf,
}

impl Cleanup {
    async fn run(self) {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&self.admin)
            .await
            .unwrap();
        common::remove_data_dir(&self.dir);
    }
}

/// A store on a fresh SQLite file and one on a fresh PostgreSQL schema.
async fn stores() -> (Vec<(&'static str, SqlStore)>, Cleanup) {
    let dir = common::temp_dir();
    let sqlite = SqlStore::open(None, &dir)
        .await
        .expect("SQLite store opens");
    sqlx::any::install_default_drivers();
    let schema = format!("rill_test_{}", uuid::Uuid::new_v4().simple());
    let admin = sqlx::AnyPool::connect(&postgres_url())
        .await
        .expect("PostgreSQL is reachable (start it: see the env notes)");
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&admin)
        .await
        .unwrap();
    let separator = if postgres_url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{separator}options=-c%20search_path%3D{schema}",
        postgres_url()
    );
    let postgres = SqlStore::open(Some(&url), &dir)
        .await
        .expect("PostgreSQL store opens");
    let cleanup = Cleanup { admin, schema, dir };
    (vec![("sqlite", sqlite), ("postgres", postgres)], cleanup)
}

/// A checkpoint, and the wait until it is committed (a checkpoint itself
/// does not wait: the reads below would race it).
async fn checkpointed(store: &SqlStore, id: &str, text: &str) {
    store.checkpoint(id, text).await.unwrap();
    store.settle().await.unwrap();
}

/// Conversation `conversation` of `owner` with reply `id` streaming, no text yet.
async fn streaming_reply(store: &SqlStore, owner: &str, conversation: &str, id: &str) {
    store
        .ensure_conversation(conversation, owner, None, "")
        .await
        .unwrap();
    store
        .add_message(NewMessage {
            status: MessageStatus::Streaming,
            role: "assistant",
            ..user_message(id, conversation, "")
        })
        .await
        .unwrap();
}

fn user_message<'a>(id: &'a str, conversation: &'a str, text: &'a str) -> NewMessage<'a> {
    NewMessage {
        id,
        conversation_id: conversation,
        role: "user",
        persona: None,
        model: None,
        content: text,
        status: MessageStatus::Complete,
        stream_id: None,
    }
}

#[tokio::test]
async fn conversations_belong_to_their_owner() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        let created = store
            .ensure_conversation(
                "python-session-1",
                "user:alice",
                Some("cust-1"),
                "Engine power",
            )
            .await
            .unwrap();
        assert_eq!(created.owner, "user:alice", "{backend}");
        assert_eq!(created.customer_id.as_deref(), Some("cust-1"));
        let again = store
            .ensure_conversation("python-session-1", "user:alice", None, "ignored")
            .await
            .unwrap();
        assert_eq!(
            again.title, "Engine power",
            "{backend}: an existing conversation is reused"
        );
        for stranger in ["user:bob", "anon:x"] {
            assert!(
                matches!(
                    store
                        .ensure_conversation("python-session-1", stranger, None, "")
                        .await,
                    Err(StoreError::Forbidden)
                ),
                "{backend}: never silently shared"
            );
            assert!(matches!(
                store.messages(stranger, "python-session-1").await,
                Err(StoreError::Forbidden)
            ));
            assert!(matches!(
                store
                    .delete_conversation(stranger, "python-session-1")
                    .await,
                Err(StoreError::Forbidden)
            ));
        }
        assert!(matches!(
            store.messages("user:alice", "nope").await,
            Err(StoreError::NotFound)
        ));
    }
    cleanup.run().await;
}

#[tokio::test]
async fn a_reply_is_created_checkpointed_and_finalized() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        store
            .ensure_conversation("c1", "user:a", None, "t")
            .await
            .unwrap();
        store
            .add_message(user_message("m1", "c1", "What is the engine power?"))
            .await
            .unwrap();
        store
            .add_message(NewMessage {
                id: "m2",
                conversation_id: "c1",
                role: "assistant",
                persona: Some("assistant"),
                model: Some("demo"),
                content: "",
                status: MessageStatus::Streaming,
                stream_id: Some("s1"),
            })
            .await
            .unwrap();
        checkpointed(&store, "m2", "The engine").await;
        let during = store.messages("user:a", "c1").await.unwrap();
        assert_eq!(during[1].content, "The engine", "{backend}");
        assert_eq!(during[1].status, MessageStatus::Streaming);
        store
            .finish_message(
                "m2",
                "The engine makes 300 kW.",
                MessageStatus::Complete,
                Figures {
                    usage: Some((5, 6)),
                    usage_estimated: true,
                    first_token_ms: Some(40),
                    total_ms: Some(900),
                },
            )
            .await
            .unwrap();
        // A late checkpoint never overwrites a finished reply.
        checkpointed(&store, "m2", "The eng").await;
        let messages = store.messages("user:a", "c1").await.unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[0].role, "user");
        assert_eq!(messages[0].content, "What is the engine power?");
        assert_eq!(messages[1].content, "The engine makes 300 kW.", "{backend}");
        assert_eq!(messages[1].status, MessageStatus::Complete);
        assert_eq!(
            messages[1].figures,
            Figures {
                usage: Some((5, 6)),
                usage_estimated: true,
                first_token_ms: Some(40),
                total_ms: Some(900),
            },
            "{backend}"
        );
        assert_eq!(
            messages[0].figures,
            Figures::default(),
            "a question has none"
        );
        assert_eq!(messages[1].stream_id.as_deref(), Some("s1"));
        assert_eq!(messages[1].model.as_deref(), Some("demo"));
    }
    cleanup.run().await;
}

#[tokio::test]
async fn replies_left_streaming_are_marked_interrupted_with_their_checkpoint() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        streaming_reply(&store, "anon:1", "c", "r").await;
        // No settling: the interrupt is queued after the checkpoint.
        store.checkpoint("r", "half a reply").await.unwrap();
        assert_eq!(store.mark_interrupted().await.unwrap(), 1, "{backend}");
        let messages = store.messages("anon:1", "c").await.unwrap();
        assert_eq!(messages[0].status, MessageStatus::Interrupted);
        assert_eq!(messages[0].content, "half a reply");
        assert_eq!(store.mark_interrupted().await.unwrap(), 0);
    }
    cleanup.run().await;
}

/// A checkpoint is queued, not waited for: it returns while another
/// connection holds SQLite's write lock (waiting for the commit, it would
/// fail after the busy timeout instead), and it is committed once the lock
/// is gone, with no other write to push it out.
#[tokio::test]
async fn sqlite_a_checkpoint_does_not_wait_for_the_commit() {
    let dir = common::temp_dir();
    let store = SqlStore::open(None, &dir).await.unwrap();
    streaming_reply(&store, "user:ann", "c", "r").await;
    let other = rusqlite::Connection::open(dir.join("rill.db")).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let queued = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        store.checkpoint("r", "written while locked"),
    )
    .await
    .expect("the checkpoint waited for the locked database");
    queued.unwrap();
    other.execute_batch("COMMIT").unwrap();
    // No later write comes to end the writer's wait for more: the
    // checkpoint still lands on its own.
    let mut landed = String::new();
    for _ in 0..200 {
        landed = store.messages("user:ann", "c").await.unwrap()[0]
            .content
            .clone();
        if landed == "written while locked" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        landed, "written while locked",
        "the checkpoint never landed"
    );
    drop(store);
    common::remove_data_dir(&dir);
}

#[tokio::test]
async fn lists_are_per_owner_newest_first_and_delete_removes_messages() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        for id in ["old", "mid", "new"] {
            store
                .ensure_conversation(id, "user:a", None, id)
                .await
                .unwrap();
            store
                .add_message(user_message(&format!("{id}-m"), id, "hi"))
                .await
                .unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        store
            .ensure_conversation("other", "user:b", None, "")
            .await
            .unwrap();
        let ids = |page: &rill::store::ConversationPage| -> Vec<String> {
            page.conversations.iter().map(|c| c.id.clone()).collect()
        };
        let all = store.conversations("user:a", 50, None).await.unwrap();
        assert_eq!(ids(&all), ["new", "mid", "old"], "{backend}");
        assert_eq!(all.next, None);
        // Pages follow each other without gaps or repeats.
        let first = store.conversations("user:a", 2, None).await.unwrap();
        assert_eq!(ids(&first), ["new", "mid"], "{backend}");
        let second = store
            .conversations("user:a", 2, first.next.as_deref())
            .await
            .unwrap();
        assert_eq!(ids(&second), ["old"], "{backend}");
        assert_eq!(second.next, None);
        // A garbage cursor starts from the top rather than failing.
        let garbage = store
            .conversations("user:a", 50, Some("not-a-cursor"))
            .await
            .unwrap();
        assert_eq!(garbage.conversations.len(), 3);
        assert!(matches!(
            store.delete_conversation("user:b", "mid").await,
            Err(StoreError::Forbidden)
        ));
        store.delete_conversation("user:a", "mid").await.unwrap();
        assert!(matches!(
            store.messages("user:a", "mid").await,
            Err(StoreError::NotFound)
        ));
        let count = |owner| {
            let store = store.clone();
            async move {
                store
                    .conversations(owner, 50, None)
                    .await
                    .unwrap()
                    .conversations
                    .len()
            }
        };
        assert_eq!(count("user:a").await, 2);
        assert_eq!(count("user:b").await, 1);
    }
    cleanup.run().await;
}

#[tokio::test]
async fn sqlite_data_survives_reopening_and_migrations_run_once() {
    let dir = common::temp_dir();
    {
        let store = SqlStore::open(None, &dir).await.unwrap();
        store
            .ensure_conversation("kept", "user:a", None, "Kept")
            .await
            .unwrap();
        store
            .add_message(user_message("k1", "kept", "remember me"))
            .await
            .unwrap();
    }
    let reopened = SqlStore::open(None, &dir).await.unwrap();
    let messages = reopened.messages("user:a", "kept").await.unwrap();
    assert_eq!(messages[0].content, "remember me");
    assert!(dir.join("rill.db").exists());
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn rename_truncate_and_find_by_message_respect_the_owner() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        store
            .ensure_conversation("c", "guest:g", None, "First question")
            .await
            .unwrap();
        for (id, text) in [("m1", "one"), ("m2", "two"), ("m3", "three")] {
            store
                .add_message(user_message(id, "c", text))
                .await
                .unwrap();
        }
        let renamed = store.rename("guest:g", "c", "Renamed").await.unwrap();
        assert_eq!(renamed.title, "Renamed", "{backend}");
        assert!(matches!(
            store.rename("guest:h", "c", "Stolen").await,
            Err(StoreError::Forbidden)
        ));
        assert_eq!(
            store
                .conversation_of_message("guest:g", "m2")
                .await
                .unwrap()
                .id,
            "c"
        );
        assert!(matches!(
            store.conversation_of_message("guest:h", "m2").await,
            Err(StoreError::Forbidden)
        ));
        assert!(matches!(
            store.conversation_of_message("guest:g", "nope").await,
            Err(StoreError::NotFound)
        ));
        // Each question follows the one before on the conversation's branch.
        let all = store.messages("guest:g", "c").await.unwrap();
        let chain: Vec<(&str, Option<&str>)> = all
            .iter()
            .map(|m| (m.content.as_str(), m.parent_id.as_deref()))
            .collect();
        assert_eq!(
            chain,
            [("one", None), ("two", Some("m1")), ("three", Some("m2"))],
            "{backend}"
        );
    }
    cleanup.run().await;
}

#[tokio::test]
async fn a_database_of_the_first_migration_runner_is_adopted_intact() {
    // What a data directory made before sqlx's migrator looks like: the schema,
    // a conversation, and the old runner's log.
    let dir = common::temp_dir();
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=rwc", dir.join("rill.db").display());
    let old = sqlx::AnyPool::connect(&url).await.unwrap();
    for statement in include_str!("../migrations/0001_conversations.sql")
        .split(';')
        .filter(|s| {
            s.lines()
                .any(|l| !l.trim().is_empty() && !l.trim().starts_with("--"))
        })
    {
        sqlx::query(statement).execute(&old).await.unwrap();
    }
    for statement in [
        "CREATE TABLE rill_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        "INSERT INTO rill_migrations VALUES (1, 0)",
        "INSERT INTO conversations VALUES ('kept', 'user:ann', 'Old one', NULL, 1, 2)",
        "INSERT INTO messages (id, conversation_id, role, content, status, created_at, updated_at) \
         VALUES ('old-q', 'kept', 'user', 'Where is the lighthouse?', 'complete', 1, 1)",
        "INSERT INTO messages (id, conversation_id, role, persona, content, status, created_at, updated_at) \
         VALUES ('old-r', 'kept', 'assistant', 'assistant', 'On the cape.', 'complete', 1, 1), \
         ('old-s', 'kept', 'assistant', 'data_scientist', 'At 48.1 N.', 'complete', 1, 1), \
         ('old-t', 'kept', 'user', NULL, 'How tall?', 'complete', 2, 2), \
         ('old-u', 'kept', 'assistant', 'assistant', 'Forty metres.', 'complete', 2, 2)",
    ] {
        sqlx::query(statement).execute(&old).await.unwrap();
    }
    old.close().await;

    let store = SqlStore::open(None, &dir)
        .await
        .expect("the old database opens");
    let kept = store.owned_conversation("user:ann", "kept").await.unwrap();
    assert_eq!(kept.title, "Old one");
    // The branches migration made the old conversation one branch, in order:
    // each message after the question before it, side-by-side replies in
    // their slots, the last question its leaf.
    assert_eq!(kept.leaf_id.as_deref(), Some("old-t"));
    let shown = store.messages("user:ann", "kept").await.unwrap();
    let tree: Vec<(&str, Option<&str>, i64)> = shown
        .iter()
        .map(|m| (m.id.as_str(), m.parent_id.as_deref(), m.slot))
        .collect();
    assert_eq!(
        tree,
        [
            ("old-q", None, 0),
            ("old-r", Some("old-q"), 0),
            ("old-s", Some("old-q"), 1),
            ("old-t", Some("old-q"), 0),
            ("old-u", Some("old-t"), 0),
        ]
    );
    // A new question continues it, with all of it as history.
    let history = store
        .start_turn(turn("kept", "user:ann", "new-q", "And its light?"))
        .await
        .unwrap();
    assert_eq!(history.len(), 5);
    // The search migration indexed what was already there.
    let found = store
        .search("user:ann", &["lighthouse".to_owned()], 10, 0)
        .await
        .unwrap();
    assert_eq!(found.hits.len(), 1);
    assert_eq!(found.hits[0].message_id, "old-q");
    let check = sqlx::AnyPool::connect(&url).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&check)
            .await
            .unwrap();
    // Every embedded migration, in order, once (the old log's included).
    assert!(applied.len() >= 2, "{applied:?}");
    assert_eq!(applied, (1..=applied.len() as i64).collect::<Vec<_>>());
    let old_log = sqlx::query("SELECT name FROM sqlite_master WHERE name = 'rill_migrations'")
        .fetch_optional(&check)
        .await
        .unwrap();
    assert!(old_log.is_none(), "the old log is gone");
    check.close().await;
    // Opening again applies nothing new.
    drop(store);
    SqlStore::open(None, &dir).await.expect("it opens again");
    common::remove_data_dir(&dir);
}

fn turn(conversation: &str, owner: &str, question_id: &str, question: &str) -> Turn {
    Turn {
        conversation_id: conversation.into(),
        owner: owner.into(),
        customer_id: None,
        title: question.into(),
        replace_from: None,
        regenerate: None,
        include_history: true,
        history_limit: 40,
        question_id: question_id.into(),
        question: question.into(),
        replies: vec![NewReply {
            id: format!("{question_id}-reply"),
            persona: "assistant".into(),
            model: "demo".into(),
            stream_id: format!("{question_id}-stream"),
        }],
    }
}

#[tokio::test]
async fn a_turn_stores_question_and_replies_in_one_write_and_returns_the_history() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        let first = store
            .start_turn(turn("t-1", "user:ann", "q1", "First?"))
            .await
            .unwrap();
        assert!(
            first.is_empty(),
            "{backend}: a new conversation has no history"
        );
        store.checkpoint("q1-reply", "One.").await.unwrap();
        let second = store
            .start_turn(turn("t-1", "user:ann", "q2", "Second?"))
            .await
            .unwrap();
        let ids: Vec<&str> = second.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(
            ids,
            ["q1", "q1-reply"],
            "{backend}: history is what came before"
        );
        // A reply still streaming is shown with the text it has so far.
        assert_eq!(second[1].role, "assistant");
        assert_eq!(second[1].content, "One.");
        // Routing chose who answers q2: recorded on its reply.
        store
            .set_persona("q2-reply", "data_scientist", "small", 0.75)
            .await
            .unwrap();
        let all = store.messages("user:ann", "t-1").await.unwrap();
        assert_eq!(all.len(), 4, "{backend}");
        assert_eq!(all[3].stream_id.as_deref(), Some("q2-stream"));
        assert_eq!(
            all[3].persona.as_deref(),
            Some("data_scientist"),
            "{backend}"
        );
        assert_eq!(all[3].model.as_deref(), Some("small"), "{backend}");
        assert_eq!(all[3].confidence, Some(0.75), "{backend}");
        assert_eq!(all[1].confidence, None, "{backend}");
        assert_eq!(all[1].persona.as_deref(), Some("assistant"), "{backend}");
        // The history is the newest messages with text, at most the limit:
        // q2's reply has none yet.
        let mut limited = turn("t-1", "user:ann", "q2b", "Third?");
        limited.history_limit = 2;
        let ids: Vec<String> = store
            .start_turn(limited)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["q1-reply", "q2"], "{backend}");

        // Someone else's conversation: refused, nothing written.
        assert!(matches!(
            store
                .start_turn(turn("t-1", "user:bob", "q3", "Mine?"))
                .await,
            Err(StoreError::Forbidden)
        ));
        // A replace_from that is not there: refused, the question not stored,
        // and the branch the conversation shows is the same.
        let shown_before: Vec<String> = store
            .messages("user:ann", "t-1")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        let mut bad = turn("t-1", "user:ann", "q4", "Again?");
        bad.replace_from = Some("no-such-message".into());
        assert!(matches!(
            store.start_turn(bad).await,
            Err(StoreError::NotFound)
        ));
        let shown_after = store.messages("user:ann", "t-1").await.unwrap();
        assert_eq!(ids_of(&shown_after), shown_before, "{backend}");
        // A good one is a new version of that question: the branch shown
        // goes through it, the old version and what followed it are kept.
        let mut again = turn("t-1", "user:ann", "q5", "Second, better?");
        again.replace_from = Some("q2".into());
        let history = store.start_turn(again).await.unwrap();
        assert_eq!(ids_of(&history), ["q1", "q1-reply"], "{backend}");
        let shown = store.messages("user:ann", "t-1").await.unwrap();
        assert_eq!(
            ids_of(&shown),
            ["q1", "q1-reply", "q5", "q5-reply"],
            "{backend}"
        );
        assert_eq!(shown[2].versions, ["q2", "q5"], "{backend}");
        assert!(shown[0].versions.len() == 1, "{backend}");
    }
    cleanup.run().await;
}

/// A message with an id: stored, or in a question's history.
trait Identified {
    fn id(&self) -> &str;
}

impl Identified for rill::store::StoredMessage {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Identified for HistoryMessage {
    fn id(&self) -> &str {
        &self.id
    }
}

fn ids_of<M: Identified>(messages: &[M]) -> Vec<&str> {
    messages.iter().map(Identified::id).collect()
}

#[tokio::test]
async fn branches_keep_every_version_and_history_follows_the_one_shown() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        // q1 → q2 → q3, each answered; q1 by two personas side by side.
        let mut first = turn("b", "user:ann", "q1", "Where?");
        first.replies.push(NewReply {
            id: "q1-second".into(),
            persona: "data_scientist".into(),
            model: "demo".into(),
            stream_id: "q1-second-stream".into(),
        });
        store.start_turn(first).await.unwrap();
        for (id, text) in [("q1-reply", "Here."), ("q1-second", "At 48 N.")] {
            store
                .finish_message(id, text, MessageStatus::Complete, Figures::default())
                .await
                .unwrap();
        }
        for (id, text) in [("q2", "Why?"), ("q3", "When?")] {
            store
                .start_turn(turn("b", "user:ann", id, text))
                .await
                .unwrap();
            store
                .finish_message(
                    &format!("{id}-reply"),
                    &format!("Answer to {text}"),
                    MessageStatus::Complete,
                    Figures::default(),
                )
                .await
                .unwrap();
        }
        // Edit q2: a new branch from q1.
        let mut edit = turn("b", "user:ann", "q2b", "Why not?");
        edit.replace_from = Some("q2-reply".into()); // a reply names its question
        store.start_turn(edit).await.unwrap();
        let shown = store.messages("user:ann", "b").await.unwrap();
        assert_eq!(
            ids_of(&shown),
            ["q1", "q1-reply", "q1-second", "q2b", "q2b-reply"],
            "{backend}"
        );
        // The next question follows the edited branch: its history has q2b,
        // not q2 or q3.
        let history = store
            .start_turn(turn("b", "user:ann", "q4", "Then?"))
            .await
            .unwrap();
        assert_eq!(
            ids_of(&history),
            ["q1", "q1-reply", "q1-second", "q2b"],
            "{backend}: q2b's reply has no text yet"
        );

        // Back to q2: its branch comes back as it was left, down to q3.
        let q2_branch = [
            "q1",
            "q1-reply",
            "q1-second",
            "q2",
            "q2-reply",
            "q3",
            "q3-reply",
        ];
        store.select_version("user:ann", "b", "q2").await.unwrap();
        let shown = store.messages("user:ann", "b").await.unwrap();
        assert_eq!(ids_of(&shown), q2_branch, "{backend}");
        assert_eq!(shown[3].versions, ["q2", "q2b"], "{backend}");

        // Regenerate the second of q1's side-by-side replies: a version in
        // its slot; the first reply and the questions after stay.
        let target = store
            .regenerate_target("user:ann", "q1-second")
            .await
            .unwrap();
        assert_eq!(target.question_id, "q1", "{backend}");
        assert_eq!(target.question, "Where?", "{backend}");
        assert_eq!(target.question_parent, None, "{backend}");
        assert_eq!(target.slot, 1, "{backend}");
        assert_eq!(target.persona.as_deref(), Some("data_scientist"));
        let mut again = turn("b", "user:ann", "unused", "ignored");
        again.replies[0].id = "q1-third".into();
        again.regenerate = Some(target);
        assert!(store.start_turn(again).await.unwrap().is_empty());
        let shown = store.messages("user:ann", "b").await.unwrap();
        assert_eq!(
            ids_of(&shown),
            [
                "q1", "q1-reply", "q1-third", "q2", "q2-reply", "q3", "q3-reply"
            ],
            "{backend}: the new version shows in the old one's place"
        );
        assert_eq!(shown[2].versions, ["q1-second", "q1-third"], "{backend}");
        assert!(
            store
                .messages("user:ann", "b")
                .await
                .unwrap()
                .iter()
                .all(|m| m.id != "unused"),
            "{backend}: regenerating stores no question"
        );
        // Selecting the old reply shows it again, and history follows.
        store
            .select_version("user:ann", "b", "q1-second")
            .await
            .unwrap();
        let history = store
            .start_turn(turn("b", "user:ann", "q5", "And?"))
            .await
            .unwrap();
        assert_eq!(ids_of(&history), q2_branch, "{backend}");

        // Refusals: someone else's, and messages that are not there.
        assert!(matches!(
            store.select_version("user:bob", "b", "q2").await,
            Err(StoreError::Forbidden)
        ));
        assert!(matches!(
            store.select_version("user:ann", "b", "nope").await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.regenerate_target("user:bob", "q1-reply").await,
            Err(StoreError::Forbidden)
        ));
        assert!(matches!(
            store.regenerate_target("user:ann", "q1").await,
            Err(StoreError::NotFound)
        ));
    }
    cleanup.run().await;
}

#[tokio::test]
async fn concurrent_writes_all_land_and_a_bad_one_fails_alone() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        let store = std::sync::Arc::new(store);
        store
            .ensure_conversation("busy", "user:ann", None, "Busy")
            .await
            .unwrap();
        let writes: Vec<_> = (0..300)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    // Write 150 reuses the id of write 0: a primary-key violation.
                    let id = if i == 150 {
                        "m-0".to_owned()
                    } else {
                        format!("m-{i}")
                    };
                    let text = format!("message {i}");
                    store.add_message(user_message(&id, "busy", &text)).await
                })
            })
            .collect();
        let mut failed = 0;
        for write in writes {
            if write.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 1, "{backend}: only the bad write fails");
        let stored = store.messages("user:ann", "busy").await.unwrap();
        assert_eq!(stored.len(), 299, "{backend}: every good write is there");
    }
    cleanup.run().await;
}

#[tokio::test]
async fn projects_are_created_for_their_first_owner_and_kept_from_others() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        let id = format!("p-{}", uuid::Uuid::new_v4());
        assert_eq!(store.project_owner(&id).await.unwrap(), None, "{backend}");
        store.ensure_project(&id, "user:ann").await.unwrap();
        store.ensure_project(&id, "user:ann").await.unwrap();
        assert_eq!(
            store.project_owner(&id).await.unwrap().as_deref(),
            Some("user:ann"),
            "{backend}"
        );
        assert!(
            matches!(
                store.ensure_project(&id, "user:bob").await,
                Err(StoreError::Forbidden)
            ),
            "{backend}"
        );
    }
    cleanup.run().await;
}

/// `text`'s words as the search service passes them.
fn terms(text: &str) -> Vec<String> {
    rill::conversations::search_terms(text)
}

#[tokio::test]
async fn search_finds_finished_messages_of_the_owner_ranked_with_marked_snippets() {
    use rill::store::{MARK_END, MARK_START};
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        for (id, owner, title) in [
            ("s1", "user:ann", "Boats"),
            ("s2", "user:ann", "Cooking"),
            ("s3", "user:bob", "Bob's boats"),
        ] {
            store
                .ensure_conversation(id, owner, None, title)
                .await
                .unwrap();
        }
        store
            .add_message(user_message(
                "q1",
                "s1",
                "How do I repaint a wooden sailboat hull?",
            ))
            .await
            .unwrap();
        store
            .add_message(user_message(
                "q2",
                "s2",
                "A recipe for sailboat-shaped cookies, sailboat sailboat: sails of sugar",
            ))
            .await
            .unwrap();
        store
            .add_message(user_message("q3", "s3", "Bob's sailboat is private"))
            .await
            .unwrap();
        // A reply still streaming is not searched; once finished, it is.
        store
            .add_message(NewMessage {
                id: "r1",
                conversation_id: "s1",
                role: "assistant",
                persona: Some("assistant"),
                model: Some("demo"),
                content: "",
                status: MessageStatus::Streaming,
                stream_id: Some("st1"),
            })
            .await
            .unwrap();
        checkpointed(&store, "r1", "Sand the hull with marinegrade paper").await;
        let streaming = store
            .search("user:ann", &terms("marinegrade"), 10, 0)
            .await
            .unwrap();
        assert!(streaming.hits.is_empty(), "{backend}: {streaming:?}");
        store
            .finish_message(
                "r1",
                "Sand the hull with marinegrade paper, then prime it.",
                MessageStatus::Complete,
                Figures::default(),
            )
            .await
            .unwrap();
        let finished = store
            .search("user:ann", &terms("marinegrade"), 10, 0)
            .await
            .unwrap();
        assert_eq!(finished.hits.len(), 1, "{backend}");
        assert_eq!(finished.hits[0].message_id, "r1");
        assert_eq!(finished.hits[0].role, "assistant");
        assert_eq!(finished.hits[0].persona.as_deref(), Some("assistant"));

        // Every word must match; other owners' messages never appear.
        let page = store
            .search("user:ann", &terms("sailboat"), 10, 0)
            .await
            .unwrap();
        let ids: Vec<&str> = page.hits.iter().map(|h| h.message_id.as_str()).collect();
        assert_eq!(ids.len(), 2, "{backend}: {ids:?}");
        assert!(!ids.contains(&"q3"), "{backend}: another owner's message");
        // The message that says it three times ranks first.
        assert_eq!(ids[0], "q2", "{backend}: ranked by relevance");
        assert_eq!(page.hits[0].conversation_title, "Cooking");
        assert!(page.hits[0].score >= page.hits[1].score, "{backend}");
        let snippet = &page.hits[0].snippet;
        assert!(
            snippet.contains(&format!("{MARK_START}sailboat{MARK_END}")),
            "{backend}: {snippet:?}"
        );
        let both = store
            .search("user:ann", &terms("wooden sailboat"), 10, 0)
            .await
            .unwrap();
        assert_eq!(both.hits.len(), 1, "{backend}");
        assert_eq!(both.hits[0].message_id, "q1");
        // The last word matches as a prefix (search as you type).
        let typing = store
            .search("user:ann", &terms("wooden sailb"), 10, 0)
            .await
            .unwrap();
        assert_eq!(typing.hits.len(), 1, "{backend}");
        // Upper case and diacritics of the query do not matter to SQLite;
        // case does not matter to either.
        let upper = store
            .search("user:ann", &terms("WOODEN"), 10, 0)
            .await
            .unwrap();
        assert_eq!(upper.hits.len(), 1, "{backend}");
        // Paging: one per page, then the next.
        let first = store
            .search("user:ann", &terms("sailboat"), 1, 0)
            .await
            .unwrap();
        assert!(first.more, "{backend}");
        let second = store
            .search("user:ann", &terms("sailboat"), 1, 1)
            .await
            .unwrap();
        assert!(!second.more, "{backend}");
        assert_ne!(first.hits[0].message_id, second.hits[0].message_id);
        // Deleting a conversation removes its messages from the results.
        store.delete_conversation("user:ann", "s2").await.unwrap();
        let after_delete = store
            .search("user:ann", &terms("sailboat"), 10, 0)
            .await
            .unwrap();
        assert_eq!(after_delete.hits.len(), 1, "{backend}");
        // Nothing matches nothing.
        let none = store.search("user:ann", &[], 10, 0).await.unwrap();
        assert!(none.hits.is_empty());
    }
    cleanup.run().await;
}

#[tokio::test]
async fn a_shared_link_shows_a_snapshot_until_revoked_or_expired() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        store
            .ensure_conversation("sh", "user:ann", Some("cust-9"), "Shared")
            .await
            .unwrap();
        store
            .add_message(user_message("a1", "sh", "first"))
            .await
            .unwrap();
        assert_eq!(
            store.live_share("user:ann", "sh").await.unwrap(),
            None,
            "{backend}"
        );
        assert!(matches!(
            store.share("user:bob", "sh", &"b".repeat(32), None).await,
            Err(StoreError::Forbidden)
        ));
        assert!(matches!(
            store.share("user:ann", "nope", &"c".repeat(32), None).await,
            Err(StoreError::NotFound)
        ));
        let token = "a".repeat(32);
        let share = store.share("user:ann", "sh", &token, None).await.unwrap();
        assert_eq!(share.token, token);
        assert_eq!(share.expires_at, None);
        // Messages after the snapshot are not shown...
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        store
            .add_message(user_message("a2", "sh", "second"))
            .await
            .unwrap();
        let (conversation, shown) = store.shared_messages(&share).await.unwrap();
        assert_eq!(conversation.title, "Shared");
        assert_eq!(shown.len(), 1, "{backend}");
        // ...until it is shared again: the same token, the snapshot moved.
        let again = store
            .share("user:ann", "sh", &"d".repeat(32), Some(i64::MAX))
            .await
            .unwrap();
        assert_eq!(
            again.token, token,
            "{backend}: one live link per conversation"
        );
        assert_eq!(again.expires_at, Some(i64::MAX));
        assert!(again.shared_upto >= share.shared_upto);
        let (_, shown) = store.shared_messages(&again).await.unwrap();
        assert_eq!(shown.len(), 2, "{backend}");
        assert_eq!(
            store
                .live_share("user:ann", "sh")
                .await
                .unwrap()
                .map(|s| s.token),
            Some(token.clone())
        );
        // Revoked: the row stays (the page says so), no live link is left.
        assert!(matches!(
            store.unshare("user:bob", "sh").await,
            Err(StoreError::Forbidden)
        ));
        assert_eq!(store.unshare("user:ann", "sh").await.unwrap(), 1);
        assert_eq!(store.unshare("user:ann", "sh").await.unwrap(), 0);
        let revoked = store.share_by_token(&token).await.unwrap().unwrap();
        assert!(revoked.revoked_at.is_some(), "{backend}");
        assert_eq!(store.live_share("user:ann", "sh").await.unwrap(), None);
        // Sharing after a revoke makes a new token.
        let fresh = store
            .share("user:ann", "sh", &"e".repeat(32), Some(1))
            .await
            .unwrap();
        assert_eq!(fresh.token, "e".repeat(32), "{backend}");
        // An expired link is not live: sharing again makes another.
        let next = store
            .share("user:ann", "sh", &"f".repeat(32), None)
            .await
            .unwrap();
        assert_eq!(next.token, "f".repeat(32), "{backend}");
        // Deleting the conversation deletes its links.
        store.delete_conversation("user:ann", "sh").await.unwrap();
        assert_eq!(
            store.share_by_token(&"f".repeat(32)).await.unwrap(),
            None,
            "{backend}"
        );
        assert_eq!(store.share_by_token(&token).await.unwrap(), None);
    }
    cleanup.run().await;
}

#[tokio::test]
async fn documents_keep_their_file_chunks_and_status_in_both_databases() {
    use rill::documents::chunk::Chunk;
    use rill::store::documents::{DocumentStore, NewDocument};
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        store.ensure_project("p", "user:alice").await.unwrap();
        // Every byte value survives (BLOB / BYTEA).
        let file: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let new = |id: &str| NewDocument {
            id: id.into(),
            project_id: "p".into(),
            filename: "handbook.pdf".into(),
            media_type: "application/pdf".into(),
            content: file.clone(),
        };
        let added = store.add_document(new("d1")).await.unwrap();
        assert_eq!(added.size, 70_000, "{backend}");
        assert_eq!(store.document_file("d1").await.unwrap(), Some(file.clone()));
        store.add_document(new("d2")).await.unwrap();
        assert_eq!(
            store.unfinished_documents().await.unwrap().len(),
            2,
            "{backend}"
        );
        assert!(store.completed_documents("p").await.unwrap().is_empty());

        // 250 chunks: several INSERT batches, in one transaction.
        let chunks: Vec<Chunk> = (1..=250)
            .map(|seq| Chunk {
                seq,
                page: (seq % 2 == 0).then_some(seq / 2),
                heading: (seq % 3 == 0).then(|| format!("Heading {seq}")),
                content: format!("passage {seq} with 'quotes' and ünïcode"),
            })
            .collect();
        assert!(
            store
                .complete_document("d1", Some(125), &chunks)
                .await
                .unwrap()
        );
        // Only a processing document completes, once.
        assert!(
            !store
                .complete_document("d1", Some(125), &chunks)
                .await
                .unwrap()
        );
        assert_eq!(
            store.document_chunks("d1").await.unwrap(),
            chunks,
            "{backend}"
        );
        let done = store.document("p", "d1").await.unwrap().unwrap();
        assert_eq!((done.chunks, done.pages), (250, Some(125)), "{backend}");
        assert_eq!(
            store.completed_documents("p").await.unwrap(),
            vec![("d1".to_owned(), "handbook.pdf".to_owned())]
        );

        assert!(store.fail_document("d2", "no text").await.unwrap());
        let failed = store.document("p", "d2").await.unwrap().unwrap();
        assert_eq!(failed.error.as_deref(), Some("no text"), "{backend}");
        assert!(
            !store.fail_document("d1", "late").await.unwrap(),
            "{backend}"
        );
        assert_eq!(store.documents("p").await.unwrap().len(), 2);
        assert!(store.unfinished_documents().await.unwrap().is_empty());
        assert_eq!(store.projects_with_documents().await.unwrap(), ["p"]);
        let projects = store.projects_of("user:alice").await.unwrap();
        assert_eq!(
            (projects[0].project_id.as_str(), projects[0].documents),
            ("p", 2)
        );
        assert!(store.projects_of("user:bob").await.unwrap().is_empty());

        // Another project's id does not reach it; deleting takes everything.
        assert!(
            store.document("q", "d1").await.unwrap().is_none(),
            "{backend}"
        );
        assert!(!store.delete_document("q", "d1").await.unwrap());
        assert!(store.delete_document("p", "d1").await.unwrap());
        assert!(store.document_chunks("d1").await.unwrap().is_empty());
        assert_eq!(store.document_file("d1").await.unwrap(), None);
        assert!(store.completed_documents("p").await.unwrap().is_empty());
    }
    cleanup.run().await;
}

/// SQLite indexes for search after the commit (migration 0010): the
/// triggers only note rows, and a row is in the index or noted, never both.
/// Changed or deleted while noted, or after it was indexed, the index stays
/// whole (FTS5's own integrity check against the messages) and finds what
/// the messages say now.
#[tokio::test]
async fn sqlite_search_indexing_after_the_commit_keeps_the_index_whole() {
    let dir = common::temp_dir();
    let store = SqlStore::open(None, &dir).await.unwrap();
    store
        .ensure_conversation("c", "user:ann", None, "t")
        .await
        .unwrap();
    // Indexed: a search indexes what was noted before it reads.
    store
        .add_message(user_message("q1", "c", "kayak paddles"))
        .await
        .unwrap();
    assert_eq!(
        store
            .search("user:ann", &["kayak".to_owned()], 10, 0)
            .await
            .unwrap()
            .hits
            .len(),
        1
    );
    // Beside the running writer, as another process would: rows the writer
    // does not know of, noted by the triggers alone, indexed by the search.
    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect(&format!("sqlite://{}", dir.join("rill.db").display()))
        .await
        .unwrap();
    let run = |sql: &'static str| {
        let raw = raw.clone();
        async move { sqlx::query(sql).execute(&raw).await.unwrap() }
    };
    let noted = |raw: sqlx::AnyPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM search_pending")
            .fetch_one(&raw)
            .await
            .unwrap()
    };
    let insert = "INSERT INTO messages (id, conversation_id, role, content, status, \
                  created_at, updated_at, slot, selected_at) \
                  VALUES ('{id}', 'c', 'user', '{text}', '{status}', 1, 1, 0, 1)";
    let insert = |id: &str, text: &str, status: &str| {
        insert
            .replace("{id}", id)
            .replace("{text}", text)
            .replace("{status}", status)
    };
    sqlx::query(&insert("n1", "canoe noted then deleted", "complete"))
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query(&insert("n2", "canoe noted then changed", "complete"))
        .execute(&raw)
        .await
        .unwrap();
    sqlx::query(&insert("s1", "streaming canoe", "streaming"))
        .execute(&raw)
        .await
        .unwrap();
    assert_eq!(
        noted(raw.clone()).await,
        2,
        "a streaming reply is not noted"
    );
    run("DELETE FROM messages WHERE id = 'n1'").await;
    run("UPDATE messages SET content = 'raft noted then changed' WHERE id = 'n2'").await;
    // An indexed row changed: it leaves the index with its old text.
    run("UPDATE messages SET content = 'kayak repaired' WHERE id = 'q1'").await;
    // A reply finishing is noted.
    run(
        "UPDATE messages SET content = 'streaming canoe done', status = 'complete' WHERE id = 's1'",
    )
    .await;
    assert_eq!(noted(raw.clone()).await, 3);
    let found = |words: &'static str| {
        let store = &store;
        async move {
            let terms: Vec<String> = words.split(' ').map(str::to_owned).collect();
            let mut ids: Vec<String> = store
                .search("user:ann", &terms, 10, 0)
                .await
                .unwrap()
                .hits
                .into_iter()
                .map(|h| h.message_id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(
        found("canoe").await,
        ["s1"],
        "deleted and changed rows are gone"
    );
    assert_eq!(found("raft").await, ["n2"]);
    assert_eq!(found("kayak repaired").await, ["q1"]);
    assert!(
        found("paddles").await.is_empty(),
        "the old text left the index"
    );
    assert_eq!(
        noted(raw.clone()).await,
        0,
        "the search indexed every noted row"
    );
    // Nothing streams or waits now: the index must say what every message
    // says (FTS5 compares it with the messages themselves).
    run("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)").await;
    // Deleting indexed rows keeps the index whole too.
    store.delete_conversation("user:ann", "c").await.unwrap();
    run("INSERT INTO messages_fts (messages_fts, rank) VALUES ('integrity-check', 1)").await;
    assert!(found("raft").await.is_empty());
    raw.close().await;
    common::remove_data_dir(&dir);
}

/// The writer indexes what the triggers noted without waiting for a search:
/// once no write has come for a moment (a backlog larger than one chunk goes
/// in chunk after chunk), and at its start for rows noted before a restart.
#[tokio::test]
async fn sqlite_the_writer_indexes_noted_rows_when_idle_and_at_its_start() {
    let dir = common::temp_dir();
    let store = SqlStore::open(None, &dir).await.unwrap();
    sqlx::any::install_default_drivers();
    let raw = sqlx::AnyPool::connect(&format!("sqlite://{}", dir.join("rill.db").display()))
        .await
        .unwrap();
    // (rows still noted, rows the index finds for `word`), once they are
    // (0, `want`) or after 5 s.
    let settled = |word: &'static str, want: i64| {
        let raw = raw.clone();
        async move {
            let mut last = (-1, -1);
            for _ in 0..100 {
                let noted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM search_pending")
                    .fetch_one(&raw)
                    .await
                    .unwrap();
                let found: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM messages_fts WHERE messages_fts MATCH $1",
                )
                .bind(word)
                .fetch_one(&raw)
                .await
                .unwrap();
                last = (noted, found);
                if last == (0, want) {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            last
        }
    };
    store
        .ensure_conversation("c", "user:ann", None, "t")
        .await
        .unwrap();
    store
        .add_message(user_message("q1", "c", "kayak paddles"))
        .await
        .unwrap();
    assert_eq!(settled("kayak", 1).await, (0, 1), "indexed with no search");
    // More rows than one chunk indexes, written at once.
    let ids: Vec<String> = (0..150).map(|i| format!("oar{i}")).collect();
    futures::future::join_all(
        ids.iter()
            .map(|id| store.add_message(user_message(id, "c", "oar stroke"))),
    )
    .await
    .into_iter()
    .collect::<Result<Vec<_>, _>>()
    .unwrap();
    assert_eq!(
        settled("oar", 150).await,
        (0, 150),
        "a backlog of several chunks is indexed whole"
    );
    // Noted where this writer does not see it, then a restart.
    sqlx::query(
        "INSERT INTO messages (id, conversation_id, role, content, status, created_at, \
         updated_at, slot, selected_at) \
         VALUES ('q2', 'c', 'user', 'canoe noted', 'complete', 1, 1, 0, 1)",
    )
    .execute(&raw)
    .await
    .unwrap();
    drop(store);
    let store = SqlStore::open(None, &dir).await.unwrap();
    assert_eq!(
        settled("canoe", 1).await,
        (0, 1),
        "indexed at the writer's start"
    );
    drop(store);
    raw.close().await;
    common::remove_data_dir(&dir);
}

/// The WAL is checkpointed while the store is open, beside the writer (whose
/// commits no longer do it), and the WAL file is started over by the first
/// write after a checkpoint has copied all of it, so it does not grow with
/// all that is written.
#[tokio::test]
async fn sqlite_the_wal_is_checkpointed_beside_the_writer_and_started_over() {
    let dir = common::temp_dir();
    let store = SqlStore::open(None, &dir).await.unwrap();
    store
        .ensure_conversation("c", "user:ann", None, "t")
        .await
        .unwrap();
    let size = |name: &str| std::fs::metadata(dir.join(name)).map_or(0, |m| m.len());
    let start = size("rill.db");
    // Rounds of 20 messages of 8 KB each (160 KB per round).
    const ROUND: u64 = 20 * 8192;
    const ROUNDS: u64 = 24;
    let text = "paddle ".repeat(8192 / 7);
    for round in 0..ROUNDS {
        let ids: Vec<String> = (0..20).map(|i| format!("r{round}m{i}")).collect();
        futures::future::join_all(
            ids.iter()
                .map(|id| store.add_message(user_message(id, "c", &text))),
        )
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
        // The database file itself holds as much within 5 s.
        let want = start + (round + 1) * ROUND;
        let mut waited = 0;
        while size("rill.db") < want && waited < 100 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            waited += 1;
        }
        assert!(
            size("rill.db") >= want,
            "round {round}: the database file is {} bytes, want {want}: no checkpoint",
            size("rill.db")
        );
    }
    // Whether the WAL was started over is in its header: the checkpoint
    // counter (bytes 12..16) moves on at each start. (The file's size is no
    // test: it keeps its largest, and on a loaded machine a run of writes
    // can each find the last indexing not yet copied.) After an idle moment
    // — the rows indexed, the checkpoint thread's turn passed — the next
    // write finds the WAL copied whole and starts it over.
    let counter = || {
        let header = std::fs::read(dir.join("rill.db-wal")).unwrap_or_default();
        header
            .get(12..16)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut started_over = false;
    for attempt in 0..5 {
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        let before = counter();
        let id = format!("after{attempt}");
        store
            .add_message(user_message(&id, "c", "one more"))
            .await
            .unwrap();
        if counter() != before {
            started_over = true;
            break;
        }
    }
    assert!(
        started_over,
        "a write after an idle moment did not start the WAL over (checkpoint counter {})",
        counter()
    );
    drop(store);
    common::remove_data_dir(&dir);
}

/// A small deterministic random source (xorshift), so a failure replays.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// The history of a question after the branch shown now, found the long
/// way: the conversation's shown messages that have text, the newest `limit`.
async fn shown_history(store: &SqlStore, conversation: &str, limit: usize) -> Vec<HistoryMessage> {
    let mut shown: Vec<_> = match store.messages("user:ann", conversation).await {
        Ok(shown) => shown,
        Err(StoreError::NotFound) => Vec::new(),
        Err(other) => panic!("{other}"),
    }
    .into_iter()
    .filter(|m| !m.content.is_empty())
    .map(HistoryMessage::from)
    .collect();
    shown.drain(..shown.len().saturating_sub(limit));
    shown
}

/// The SQLite writer reads the history of a question that follows the one
/// it just answered by row; this mixes questions with everything that
/// changes a branch (replies that end with or without text or are left
/// streaming, edits, regenerations, selections, messages added outside a
/// turn, deletions, interruptions, other limits) and checks every history
/// against the one the branch shows.
#[tokio::test]
async fn every_history_is_the_branch_shown_whatever_came_before() {
    let (stores, cleanup) = stores().await;
    // A SQLite writer with room for only a few histories' text: it goes
    // from a history kept with its text to one read back by row and back.
    let small_dir = common::temp_dir();
    let small = SqlStore::open_with(
        None,
        &small_dir,
        StoreOptions {
            history_cache_bytes: 2048,
        },
    )
    .await
    .unwrap();
    let stores = stores
        .into_iter()
        .chain([("sqlite, 2 KiB of history text", small)]);
    for (backend, store) in stores {
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        let mut streaming: Vec<String> = Vec::new();
        let mut checked = 0;
        for step in 0..800 {
            let conversation = ["c0", "c1"][dice.below(2)];
            let finish = |store: &SqlStore, id: String, text: String| {
                let store = store.clone();
                async move {
                    store
                        .finish_message(&id, &text, MessageStatus::Complete, Figures::default())
                        .await
                        .unwrap();
                }
            };
            let roll = dice.below(100);
            let shown = store
                .messages("user:ann", conversation)
                .await
                .unwrap_or_default();
            let mut turn = turn(
                conversation,
                "user:ann",
                &format!("q{step}"),
                &format!("Q{step}?"),
            );
            if dice.below(3) == 0 {
                turn.replies.push(NewReply {
                    id: format!("q{step}-second"),
                    persona: "data_scientist".into(),
                    model: "demo".into(),
                    stream_id: format!("q{step}-second-stream"),
                });
            }
            match roll {
                // A question after the branch shown: its history is checked.
                0..=54 => {
                    turn.history_limit = [40, 40, 40, 5, 2][dice.below(5)];
                    turn.include_history = dice.below(10) != 0;
                    let expected = if turn.include_history {
                        shown_history(&store, conversation, turn.history_limit).await
                    } else {
                        Vec::new()
                    };
                    let replies: Vec<String> = turn.replies.iter().map(|r| r.id.clone()).collect();
                    let history = store.start_turn(turn).await.unwrap();
                    assert_eq!(
                        ids_of(&history),
                        ids_of(&expected),
                        "{backend}: step {step}"
                    );
                    assert_eq!(history, expected, "{backend}: step {step}");
                    checked += 1;
                    for id in replies {
                        match dice.below(10) {
                            0 => finish(&store, id, String::new()).await,
                            1 => {
                                checkpointed(&store, &id, &format!("so far {step}")).await;
                                streaming.push(id);
                            }
                            // Streaming, no text yet.
                            2 => streaming.push(id),
                            _ => finish(&store, id, format!("Answer {step}.")).await,
                        }
                    }
                }
                // A reply left streaming gets its first text, or more.
                55..=59 if !streaming.is_empty() => {
                    let id = &streaming[dice.below(streaming.len())];
                    checkpointed(&store, id, &format!("more {step}")).await;
                }
                // A reply left streaming ends, with or without text.
                60..=64 if !streaming.is_empty() => {
                    let id = streaming.swap_remove(dice.below(streaming.len()));
                    let text = if dice.below(4) == 0 {
                        String::new()
                    } else {
                        format!("Late {step}.")
                    };
                    finish(&store, id, text).await;
                }
                // An edit of one of the branch's messages.
                65..=72 if !shown.is_empty() => {
                    turn.replace_from = Some(shown[dice.below(shown.len())].id.clone());
                    let replies: Vec<String> = turn.replies.iter().map(|r| r.id.clone()).collect();
                    store.start_turn(turn).await.unwrap();
                    for id in replies {
                        finish(&store, id, format!("Edited {step}.")).await;
                    }
                }
                // A reply generated again.
                73..=80 => {
                    let replies: Vec<&rill::store::StoredMessage> =
                        shown.iter().filter(|m| m.role == "assistant").collect();
                    if replies.is_empty() {
                        continue;
                    }
                    let reply = replies[dice.below(replies.len())];
                    let target = store
                        .regenerate_target("user:ann", &reply.id)
                        .await
                        .unwrap();
                    turn.regenerate = Some(target);
                    turn.replies.truncate(1);
                    let id = turn.replies[0].id.clone();
                    store.start_turn(turn).await.unwrap();
                    finish(&store, id, format!("Again {step}.")).await;
                }
                // Another version shown.
                81..=88 => {
                    let versions: Vec<&String> = shown.iter().flat_map(|m| &m.versions).collect();
                    if versions.is_empty() {
                        continue;
                    }
                    let id = versions[dice.below(versions.len())].clone();
                    store
                        .select_version("user:ann", conversation, &id)
                        .await
                        .unwrap();
                }
                // A question added outside a turn.
                89..=92 => {
                    let id = format!("added{step}");
                    store
                        .ensure_conversation(conversation, "user:ann", None, "Added")
                        .await
                        .unwrap();
                    store
                        .add_message(user_message(&id, conversation, "Added?"))
                        .await
                        .unwrap();
                }
                93..=95 => {
                    let _ = store.delete_conversation("user:ann", conversation).await;
                }
                96 => {
                    store.mark_interrupted().await.unwrap();
                    streaming.clear();
                }
                _ => {}
            }
        }
        assert!(checked > 300, "{backend}: {checked} histories checked");
    }
    cleanup.run().await;
    common::remove_data_dir(&small_dir);
}

/// A reply still streaming without text is in no history yet; once it has
/// text, the next question's history shows it, even after a question whose
/// own reply finished in between.
#[tokio::test]
async fn a_reply_streaming_without_text_joins_the_history_once_it_has_some() {
    let (stores, cleanup) = stores().await;
    for (backend, store) in stores {
        store
            .start_turn(turn("s", "user:ann", "q1", "First?"))
            .await
            .unwrap();
        // q1's reply streams on, no text yet; q2 is asked and answered.
        let history = store
            .start_turn(turn("s", "user:ann", "q2", "Second?"))
            .await
            .unwrap();
        assert_eq!(ids_of(&history), ["q1"], "{backend}");
        store
            .finish_message(
                "q2-reply",
                "Two.",
                MessageStatus::Complete,
                Figures::default(),
            )
            .await
            .unwrap();
        store.checkpoint("q1-reply", "One so far").await.unwrap();
        let history = store
            .start_turn(turn("s", "user:ann", "q3", "Third?"))
            .await
            .unwrap();
        assert_eq!(
            ids_of(&history),
            ["q1", "q1-reply", "q2", "q2-reply"],
            "{backend}"
        );
        assert_eq!(history[1].content, "One so far", "{backend}");
        // Finished later, it changes the next history again.
        store
            .finish_message(
                "q3-reply",
                "Three.",
                MessageStatus::Complete,
                Figures::default(),
            )
            .await
            .unwrap();
        store
            .finish_message(
                "q1-reply",
                "One.",
                MessageStatus::Complete,
                Figures::default(),
            )
            .await
            .unwrap();
        let history = store
            .start_turn(turn("s", "user:ann", "q4", "Fourth?"))
            .await
            .unwrap();
        assert_eq!(history[1].content, "One.", "{backend}");
        assert_eq!(history.len(), 6, "{backend}");
    }
    cleanup.run().await;
}
