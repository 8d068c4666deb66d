//! A modal dialog over a backdrop: the frame the search, share and shortcuts
//! dialogs share. A click on the backdrop or Esc inside the dialog closes it.

use leptos::prelude::*;

/// A modal dialog named by its title (`labelled_by`, the id of an element
/// among `children`); `on_close` closes it.
#[component]
pub fn Modal(
    /// The backdrop's class.
    backdrop: &'static str,
    /// The dialog's class.
    class: &'static str,
    /// The id of the dialog's title.
    labelled_by: &'static str,
    /// What closing does.
    #[prop(into)]
    on_close: Callback<()>,
    children: Children,
) -> impl IntoView {
    view! {
        <div class=backdrop on:click=move |_| on_close.run(())>
            <div
                class=class
                role="dialog"
                aria-modal="true"
                aria-labelledby=labelled_by
                on:click=|ev| ev.stop_propagation()
                on:keydown=move |ev| {
                    if ev.key() == "Escape" {
                        ev.stop_propagation();
                        on_close.run(());
                    }
                }
            >
                {children()}
            </div>
        </div>
    }
    .into_any()
}
