//! The persona picker: who answers the next question — one persona, several
//! side by side, or Auto (the server chooses and says how sure it is).

use leptos::prelude::*;
use rill_protocol::AUTO_PERSONA;

use crate::chat::ChatState;

/// Toggle buttons above the composer, one per persona the server offers.
#[component]
pub fn PersonaPicker() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let pressed = move |id: &str| state.chosen.with(|chosen| chosen.iter().any(|p| p == id));
    let chip = move |id: String, name: String, description: String| {
        let toggled = id.clone();
        let watched = id.clone();
        view! {
            <button
                type="button"
                class="persona-chip"
                data-persona=id
                title=description
                aria-pressed=move || if pressed(&watched) { "true" } else { "false" }
                on:click=move |_| state.toggle_persona(&toggled)
            >
                {name}
            </button>
        }
    };
    view! {
        <Show when=move || state.personas.with(|p| p.len() > 1)>
            <div class="persona-picker" role="group" aria-label="Who answers">
                <span class="persona-label" aria-hidden="true">"Ask"</span>
                {chip(
                    AUTO_PERSONA.to_owned(),
                    "Auto".to_owned(),
                    "Let rill choose the persona for each question".to_owned(),
                )}
                <For
                    each=move || state.personas.get()
                    key=|persona| persona.id.clone()
                    let:persona
                >
                    {chip(persona.id.clone(), persona.name.clone(), persona.description.clone())}
                </For>
                <Show when=move || state.chosen.with(|c| c.len() > 1)>
                    <span class="persona-hint">"side by side"</span>
                </Show>
            </div>
        </Show>
    }
    .into_any()
}
