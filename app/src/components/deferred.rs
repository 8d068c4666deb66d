//! Views the first page does not show, loaded the first time they are shown:
//! the search, share and shortcuts dialogs and the documents panel.
//!
//! In the hydrate build each is a split point (`wasm_split`, what Leptos's
//! `#[lazy]` is built on): cargo-leptos `--split` moves its code, and the code
//! only it uses, out of the main wasm into a chunk the browser fetches when the
//! view is first opened, so a page starts with less to download, compile and
//! hydrate. After the page has started, [`prefetch`] fetches the chunks in the
//! background, so opening a dialog is instant and works offline later. The
//! server and the static build (trunk, which does not split) call the same
//! functions directly.
//!
//! A chunk that cannot be fetched (offline, a server restarted with a newer
//! build) does not take the page down: the split points are `fallible`, and
//! [`Deferred`] shows why with a button that tries again.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use leptos::prelude::*;

/// The code of a view could not be fetched (the browser console says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotLoaded;

#[cfg(feature = "hydrate")]
impl From<leptos::wasm_split::SplitLoaderError> for NotLoaded {
    fn from(_: leptos::wasm_split::SplitLoaderError) -> Self {
        NotLoaded
    }
}

/// Defines `pub async fn $name(args) -> Result<AnyView, NotLoaded>` rendering
/// `$view`, and a module `$name` whose `view` is the split point in the
/// hydrate build and whose `prefetch` fetches the chunk without showing it.
macro_rules! split_view {
    ($(#[$doc:meta])* $name:ident ($($arg:ident: $ty:ty),*) => $view:expr) => {
        mod $name {
            use super::*;

            #[cfg_attr(
                feature = "hydrate",
                leptos::wasm_split::wasm_split(
                    $name,
                    wasm_split_path = ::leptos::wasm_split,
                    fallible,
                    preload(prefetch)
                )
            )]
            pub(super) fn view($($arg: $ty),*) -> Result<AnyView, NotLoaded> {
                Ok($view.into_any())
            }
        }

        $(#[$doc])*
        pub async fn $name($($arg: $ty),*) -> Result<AnyView, NotLoaded> {
            #[cfg(feature = "hydrate")]
            return $name::view($($arg),*).await;
            #[cfg(not(feature = "hydrate"))]
            return $name::view($($arg),*);
        }
    };
}

split_view! {
    /// The search dialog (Ctrl/Cmd+K).
    search_dialog () => view! { <crate::components::search::SearchDialog/> }
}

split_view! {
    /// The share dialog of the open conversation, open while `open`.
    share_dialog (open: RwSignal<bool>) => view! { <crate::components::share::ShareDialog open/> }
}

split_view! {
    /// The list of keyboard shortcuts (`?`), open while `open`.
    shortcuts_dialog (open: RwSignal<bool>) =>
        view! { <crate::components::shortcuts::ShortcutsDialog open/> }
}

split_view! {
    /// The chosen project's documents panel.
    documents_panel () => view! { <crate::components::documents::DocumentsPanel/> }
}

/// Fetches every deferred view's code in the background, one after another
/// (a failure is retried when the view is opened). Called once the page has
/// started; a no-op where nothing is split.
pub async fn prefetch() {
    #[cfg(feature = "hydrate")]
    {
        let _ = search_dialog::prefetch().await;
        let _ = share_dialog::prefetch().await;
        let _ = shortcuts_dialog::prefetch().await;
        let _ = documents_panel::prefetch().await;
    }
}

/// What [`Deferred`] waits for: a view, or why its code is not here.
type Loading = Pin<Box<dyn Future<Output = Result<AnyView, NotLoaded>> + Send>>;

/// Shows the view `load` makes once its code is here (nothing until then); if
/// the code could not be fetched, a notice with a button that tries again and
/// one that closes (`on_close`: what closing the view does).
/// (`load` is boxed so this component is compiled once, not once per view.)
#[component]
pub fn Deferred<F, Fut>(load: F, #[prop(into)] on_close: Callback<()>) -> impl IntoView
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<AnyView, NotLoaded>> + Send + 'static,
{
    deferred(Arc::new(move || Box::pin(load()) as Loading), on_close)
}

fn deferred(load: Arc<dyn Fn() -> Loading + Send + Sync>, on_close: Callback<()>) -> AnyView {
    let attempt = RwSignal::new(0u32);
    (move || {
        attempt.track();
        let loading = load();
        Suspend::new(async move {
            match loading.await {
                Ok(view) => view,
                Err(NotLoaded) => view! {
                    <p class="deferred-failed" role="alert">
                        "This part of the page could not be loaded: check the connection, or reload the page if rill was updated. "
                        <button type="button" on:click=move |_| attempt.update(|n| *n += 1)>
                            "Try again"
                        </button>
                        " "
                        <button type="button" on:click=move |_| on_close.run(())>"Close"</button>
                    </p>
                }
                .into_any(),
            }
        })
    })
    .into_any()
}
