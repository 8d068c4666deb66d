//! Parts of the server-rendered page hydrated in tasks of their own.
//!
//! Hydrating runs every component of the page in one main-thread task, and V8
//! compiles each wasm function on its first call inside it: the page's
//! longest task. [`Later`] takes a part the reader does not use in the first
//! milliseconds (the sidebar, the conversation's messages) out of it: the
//! hydrate build leaves that part's server-rendered HTML in place while the
//! rest hydrates, then hydrates it right after in a task of its own
//! (`setTimeout(0)`; small parts share one), so the browser may paint and
//! handle input in between.
//! Until then the part is the server's HTML: readable, its links work, its
//! buttons do nothing for those milliseconds (as the whole page before the
//! wasm arrives).
//!
//! Hydration must find the state the server rendered: whatever changes what
//! these parts show (the transport's events, the markdown renderer arriving)
//! starts through [`when_hydrated`], once every part has hydrated.
//!
//! The server renders the part inside `<div class="later">` (`display:
//! contents`, so it adds no box to the layout); the static build, and a part
//! first shown after the page has hydrated, render it there at once.

use leptos::prelude::*;

/// A part of the page hydrated after the rest (see the module's text).
#[component]
pub fn Later(children: Children) -> impl IntoView {
    #[cfg(feature = "hydrate")]
    if queue::hydrating() {
        use leptos::tachys::view::{Position, RenderHtml};

        let anchor = NodeRef::<leptos::html::Div>::new();
        let owner = Owner::current();
        queue::push(Box::new(move || {
            if let (Some(element), Some(owner)) = (anchor.get_untracked(), owner) {
                owner.with(|| {
                    let mounted =
                        children().hydrate_from_position::<true>(&element, Position::FirstChild);
                    // Its reactive parts live as long as this component.
                    StoredValue::new_local(mounted);
                });
            }
        }));
        return view! { <div class="later" node_ref=anchor></div> }.into_any();
    }
    // On the server, in the static build, and where the page has already
    // hydrated (a part shown later), at once.
    view! { <div class="later">{children()}</div> }.into_any()
}

/// Runs `start` in a task of its own once every [`Later`] part of the page
/// has hydrated (at once, in a new task, where none is pending).
pub fn when_hydrated(start: impl FnOnce() + 'static) {
    #[cfg(feature = "hydrate")]
    queue::when_done(Box::new(start));
    #[cfg(all(feature = "browser", not(feature = "hydrate")))]
    set_timeout(start, std::time::Duration::ZERO);
    #[cfg(not(feature = "browser"))]
    drop(start);
}

/// The parts waiting to hydrate, in the page's order, and what waits for
/// them. Parts run in tasks of their own, several to a task while the task
/// is short: a frame rendered between tasks costs the page's layout each
/// time, so one task per small part would only delay the page's start.
#[cfg(feature = "hydrate")]
mod queue {
    use std::cell::{Cell, RefCell};
    use std::collections::VecDeque;

    use leptos::prelude::set_timeout;

    type Work = Box<dyn FnOnce()>;

    /// A task takes another part while it has run for less than this (ms);
    /// a part takes 5–25 ms on a slow machine, so a task stays under 50.
    const BUDGET_MS: f64 = 20.0;

    thread_local! {
        /// Parts still to hydrate.
        static PARTS: RefCell<VecDeque<Work>> = const { RefCell::new(VecDeque::new()) };
        /// Whether a task to run them is scheduled.
        static SCHEDULED: Cell<bool> = const { Cell::new(false) };
        /// Whether a part is hydrating now.
        static IN_PART: Cell<bool> = const { Cell::new(false) };
        /// What waits for them, in the order it asked.
        static WAITING: RefCell<Vec<Work>> = const { RefCell::new(Vec::new()) };
    }

    /// Whether what renders now hydrates the server's HTML: the page's
    /// first hydration, or a part of it hydrating later.
    pub(super) fn hydrating() -> bool {
        IN_PART.get()
            || leptos::prelude::Owner::current_shared_context()
                .is_some_and(|context| context.during_hydration())
    }

    pub(super) fn push(part: Work) {
        PARTS.with_borrow_mut(|parts| parts.push_back(part));
        if !SCHEDULED.replace(true) {
            set_timeout(run, std::time::Duration::ZERO);
        }
    }

    pub(super) fn when_done(start: Work) {
        if PARTS.with_borrow(VecDeque::is_empty) {
            set_timeout(start, std::time::Duration::ZERO);
        } else {
            WAITING.with_borrow_mut(|waiting| waiting.push(start));
        }
    }

    /// Hydrates parts until they are done or the task has had its budget.
    fn run() {
        let began = now();
        loop {
            // Not borrowed while the part runs: it may push parts of its own.
            let Some(part) = PARTS.with_borrow_mut(VecDeque::pop_front) else {
                SCHEDULED.set(false);
                for start in WAITING.take() {
                    set_timeout(start, std::time::Duration::ZERO);
                }
                return;
            };
            IN_PART.set(true);
            part();
            IN_PART.set(false);
            if now() - began >= BUDGET_MS && PARTS.with_borrow(|parts| !parts.is_empty()) {
                set_timeout(run, std::time::Duration::ZERO);
                return;
            }
        }
    }

    fn now() -> f64 {
        leptos::prelude::window()
            .performance()
            .map_or(0.0, |performance| performance.now())
    }
}
