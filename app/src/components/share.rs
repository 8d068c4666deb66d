//! Sharing the open conversation: a read-only public link (`/s/<token>`)
//! that shows the conversation as it is now, lasting a chosen time or until
//! revoked. The dialog shows the link with a copy button, updates it to the
//! latest messages, or stops sharing.

use leptos::prelude::*;
use rill_protocol::conversations::ShareLink;

use crate::chat::ChatState;
use crate::components::deferred::{Deferred, share_dialog};
use crate::components::modal::Modal;

/// The expiry choices: label and seconds (`None`: until revoked).
const EXPIRY: [(&str, Option<u64>); 4] = [
    ("Until I stop sharing", None),
    ("1 day", Some(86_400)),
    ("7 days", Some(7 * 86_400)),
    ("30 days", Some(30 * 86_400)),
];

/// The topbar's Share button; its dialog's code is loaded when first opened.
#[component]
pub fn ShareButton() -> impl IntoView {
    let open = RwSignal::new(false);
    view! {
        <button
            type="button"
            class="share-open"
            aria-haspopup="dialog"
            on:click=move |_| open.set(true)
        >
            "Share"
        </button>
        <Show when=move || open.get()>
            <Deferred load=move || share_dialog(open) on_close=move |()| open.set(false)/>
        </Show>
    }
    .into_any()
}

/// The share dialog, shown while `open`: it reads the conversation's link
/// when it opens.
#[component]
pub fn ShareDialog(open: RwSignal<bool>) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let link = RwSignal::new(None::<ShareLink>);
    let busy = RwSignal::new(false);
    let message = RwSignal::new(String::new());
    let expiry = RwSignal::new(0usize);
    // Runs one request on the open conversation's link and shows the outcome.
    let act = move |action: Action| {
        let Some(id) = state.session_id.get_untracked() else {
            return;
        };
        busy.set(true);
        message.set(match action {
            Action::Read => "Checking…".to_owned(),
            Action::Share => "Making the link…".to_owned(),
            Action::Revoke => "Stopping…".to_owned(),
        });
        #[cfg(feature = "browser")]
        leptos::task::spawn_local(async move {
            use crate::transport::ShareAction;
            let wire = match action {
                Action::Read => ShareAction::Read,
                Action::Share => ShareAction::Share(EXPIRY[expiry.get_untracked()].1),
                Action::Revoke => ShareAction::Revoke,
            };
            match crate::transport::share(&id, wire).await {
                Ok(found) => {
                    message.set(match (&found, action) {
                        (None, Action::Revoke) => "Sharing stopped: the link no longer works.",
                        (None, _) => "Not shared. Anyone with the link will see this conversation, read-only, without your name.",
                        (Some(_), Action::Share) => "Link ready: it shows the conversation as it is now.",
                        (Some(_), _) => "Shared: the link shows the conversation as it was when shared.",
                    }
                    .to_owned());
                    link.set(found);
                }
                Err(why) => message.set(format!("Could not share: {why}")),
            }
            busy.set(false);
        });
        #[cfg(not(feature = "browser"))]
        let _ = (id, expiry);
    };
    let url = move || {
        link.with(|l| {
            l.as_ref().map(|l| {
                #[cfg(feature = "browser")]
                {
                    crate::transport::absolute(&l.path)
                }
                #[cfg(not(feature = "browser"))]
                {
                    l.path.clone()
                }
            })
        })
    };
    let copy = move |_| {
        #[cfg(feature = "browser")]
        if let Some(url) = url() {
            crate::transport::copy_text(state, url);
            message.set("Link copied.".to_owned());
        }
    };
    act(Action::Read);
    view! {
        <Modal backdrop="shortcuts-backdrop" class="shortcuts share-dialog" labelled_by="share-title" on_close=move |()| open.set(false)>
            <h2 id="share-title">"Share this conversation"</h2>
            <p class="share-message" role="status" aria-live="polite">{move || message.get()}</p>
            <Show when=move || link.with(Option::is_some)>
                <div class="share-link">
                    <label for="share-url">"Link"</label>
                    <input id="share-url" type="text" readonly prop:value=move || url().unwrap_or_default()/>
                    <button type="button" class="share-copy" on:click=copy>"Copy link"</button>
                </div>
            </Show>
            <div class="share-expiry">
                <label for="share-expiry">"Link works"</label>
                <select
                    id="share-expiry"
                    on:change=move |ev| {
                        expiry.set(event_target_value(&ev).parse().unwrap_or(0));
                    }
                >
                    {EXPIRY
                        .iter()
                        .enumerate()
                        .map(|(i, (label, _))| view! { <option value=i.to_string() selected=move || expiry.get() == i>{*label}</option> })
                        .collect_view()}
                </select>
            </div>
            <div class="share-actions">
                <button type="button" class="share-create" disabled=move || busy.get() on:click=move |_| act(Action::Share)>
                    {move || if link.with(Option::is_some) { "Update link to now" } else { "Create link" }}
                </button>
                <Show when=move || link.with(Option::is_some)>
                    <button type="button" class="share-revoke" disabled=move || busy.get() on:click=move |_| act(Action::Revoke)>
                        "Stop sharing"
                    </button>
                </Show>
                <button type="button" class="close" on:click=move |_| open.set(false)>"Close"</button>
            </div>
        </Modal>
    }
    .into_any()
}

/// What the dialog asks of the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Read,
    Share,
    Revoke,
}
