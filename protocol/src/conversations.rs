//! The bodies of the conversation routes (`/api/v1/conversations…`), shared by
//! the server (which writes them) and the UI (which reads them).

use serde::{Deserialize, Serialize};

use crate::{Cost, Timing, Usage};

/// A conversation in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationSummary {
    /// Its id (the wire's `session_id`).
    pub id: String,
    /// Its title (the first question, until renamed).
    pub title: String,
    /// The client's customer reference, if one was sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// Milliseconds since the Unix epoch (last message); lists are newest first.
    pub updated_at: i64,
}

/// `GET /api/v1/conversations`: one page, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationList {
    /// The conversations of this page.
    pub conversations: Vec<ConversationSummary>,
    /// Pass as `?after=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationMessage {
    /// Its id (`replace_from` takes it; a reply's is `start.message_id`).
    pub id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The persona that answered (replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona_id: Option<String>,
    /// The model that answered (replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The text (while `streaming`, the last checkpoint).
    pub content: String,
    /// `complete`, `streaming`, `cancelled`, `interrupted` or `error`.
    pub status: String,
    /// Token counts, when the provider reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// The stream that produced it (replies); attach to it while `streaming`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// How sure routing was of `persona_id`, for replies to `persona_id: "auto"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// How long the reply took (replies that produced text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timing: Option<Timing>,
    /// What the reply cost, when its model has a price (`--prices`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<Cost>,
    /// A question's previous question on its branch; a reply's question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_id: Option<String>,
    /// When it has other versions (an edited question's earlier texts, a
    /// regenerated reply's earlier answers): their ids, itself included,
    /// oldest first. `POST /api/v1/conversations/{id}/select` shows another.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<String>,
    /// The passages a reply was given from its project's documents (the
    /// stream's `sources`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<crate::documents::Source>,
}

/// `POST /api/v1/conversations/{id}/select`: show this version of a message
/// (and the branch that continues from it, as it was left).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SelectVersion {
    /// One of a message's `versions`.
    pub message_id: String,
}

/// `GET /api/v1/conversations/{id}`: the conversation and its messages, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationDetail {
    /// The conversation.
    #[serde(flatten)]
    pub conversation: ConversationSummary,
    /// Its messages, oldest first.
    pub messages: Vec<ConversationMessage>,
}

/// `PATCH /api/v1/conversations/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenameConversation {
    /// The new title: 1 to 200 characters, no control characters.
    pub title: String,
}

/// `POST /api/v1/auth/guest`: an anonymous identity's token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestToken {
    /// A JWT to send like any token (auth frame, Bearer, `?token=`).
    pub token: String,
    /// Seconds until it expires.
    pub expires_in: u64,
}

/// Longest derived title, in characters.
const TITLE_CHARS: usize = 60;

/// A conversation's title derived from its first message: the first non-blank
/// line, whitespace collapsed, cut at a word boundary near 60 characters.
pub fn title_from(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("");
    let mut title = String::new();
    // The title's length in chars, counted as it grows.
    let mut chars = 0;
    for word in line.split_whitespace() {
        let extra = usize::from(chars > 0) + word.chars().count();
        if chars + extra > TITLE_CHARS {
            if title.is_empty() {
                title = word.chars().take(TITLE_CHARS).collect();
            }
            title.push('…');
            return title;
        }
        if chars > 0 {
            title.push(' ');
        }
        title.push_str(word);
        chars += extra;
    }
    if title.is_empty() {
        "New chat".to_owned()
    } else {
        title
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_come_from_the_first_line_and_stay_short() {
        assert_eq!(title_from("\n  Hello   world \nmore"), "Hello world");
        assert_eq!(title_from("   "), "New chat");
        let long = "word ".repeat(40);
        let title = title_from(&long);
        assert!(title.ends_with('…'));
        assert!(title.chars().count() <= TITLE_CHARS + 1);
        let unbroken = "x".repeat(200);
        assert_eq!(title_from(&unbroken).chars().count(), TITLE_CHARS + 1);
    }

    #[test]
    fn a_title_is_cut_by_chars_before_the_word_that_would_pass_60() {
        // 20 words of 2: 59 chars with the spaces, all kept.
        let fits = "ab ".repeat(20);
        assert_eq!(title_from(&fits), fits.trim_end());
        // 16 words of 3 would be 63: 15 are kept (59), then the ellipsis;
        // counted in chars, not bytes.
        for word in ["abc", "ééé"] {
            let long = format!("{word} ").repeat(16);
            let kept = format!("{word} ").repeat(15);
            assert_eq!(title_from(&long), format!("{}…", kept.trim_end()));
        }
    }
}

/// One message found by `GET /api/v1/search`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// The message (`#m-<id>` on its conversation's page).
    pub message_id: String,
    /// Its conversation.
    pub conversation_id: String,
    /// The conversation's title.
    pub conversation_title: String,
    /// `user` or `assistant`.
    pub role: String,
    /// The persona that answered (replies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persona_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    /// The best passage of the message, as plain text.
    pub snippet: String,
    /// The same passage as HTML: the text escaped, matched words in `<mark>`.
    pub snippet_html: String,
    /// Relevance, higher is better (comparable within one result only).
    pub score: f64,
}

/// `GET /api/v1/search?q=`: one page of results, best first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    /// The words searched for, as the server understood them.
    pub terms: Vec<String>,
    /// The results of this page.
    pub results: Vec<SearchHit>,
    /// Pass as `?cursor=` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// `POST /api/v1/conversations/{id}/share`'s body (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShareRequest {
    /// Seconds until the link stops working; absent: it works until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<u64>,
}

/// A conversation's public read-only link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareLink {
    /// The link's secret.
    pub token: String,
    /// The page's path on this server: `/s/<token>`.
    pub path: String,
    /// The link shows the messages written up to this time (milliseconds
    /// since the Unix epoch); sharing again moves it to now.
    pub shared_upto: i64,
    /// When the link stops working (milliseconds since the Unix epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}
