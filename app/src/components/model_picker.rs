//! The model picker: shown when the server offers more than one model.

use leptos::prelude::*;

use crate::chat::ChatState;

/// Chooses the model for new questions.
#[component]
pub fn ModelPicker() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let selected = move || state.model.get().unwrap_or_default();
    view! {
        <Show when=move || state.models.with(|m| m.len() > 1)>
            <label class="model-picker">
                <span class="visually-hidden">"Model"</span>
                <select
                    aria-label="Model"
                    prop:value=selected
                    on:change=move |ev| state.model.set(Some(event_target_value(&ev)))
                >
                    <For each=move || state.models.get() key=|id| id.clone() let:id>
                        <option value=id.clone() selected=move || selected() == id>{id.clone()}</option>
                    </For>
                </select>
            </label>
        </Show>
    }
    .into_any()
}
