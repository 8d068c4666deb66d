//! Projects and their documents: the picker in the top bar (questions are
//! asked in the chosen project, whose documents answer them), and the panel
//! that uploads (button or drag-and-drop), shows each document's processing
//! and deletes.

use leptos::prelude::*;
use rill_protocol::documents::{DocumentInfo, DocumentStatus};

use crate::chat::ChatState;

/// The option that names a new project.
const NEW_PROJECT: &str = "\u{1}new";

/// Chooses the project new questions are asked in, and opens its documents.
#[component]
pub fn ProjectPicker() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let selected = move || state.project.get().unwrap_or_default();
    let choose = move |value: String| {
        let chosen = if value == NEW_PROJECT {
            let name = new_project_name();
            if name.is_none() {
                // Cancelled: the select shows the project chosen before.
                state.project.update(|_| {});
                return;
            }
            name
        } else {
            Some(value).filter(|v| !v.is_empty())
        };
        let opened = chosen.is_some();
        #[cfg(feature = "browser")]
        crate::transport::choose_project(state, chosen);
        #[cfg(not(feature = "browser"))]
        state.choose_project(chosen);
        state.documents_open.set(opened);
    };
    view! {
        <label class="project-picker">
            <span class="visually-hidden">"Project"</span>
            <select
                aria-label="Project"
                prop:value=selected
                on:change=move |ev| choose(event_target_value(&ev))
            >
                <option value="">"No project"</option>
                <For each=move || state.projects.get() key=|p| p.project_id.clone() let:project>
                    <option
                        value=project.project_id.clone()
                        selected={
                            let id = project.project_id.clone();
                            move || selected() == id
                        }
                    >
                        {format!("Project: {}", project.project_id)}
                    </option>
                </For>
                <option value=NEW_PROJECT>"New project…"</option>
            </select>
        </label>
        <Show when=move || state.project.with(Option::is_some)>
            <button
                type="button"
                class="documents-open"
                aria-expanded=move || state.documents_open.get().to_string()
                aria-controls="documents"
                on:click=move |_| state.documents_open.update(|open| *open = !*open)
            >
                {move || format!("Documents ({})", state.documents.with(Vec::len))}
            </button>
        </Show>
    }
    .into_any()
}

/// Asks for a new project's name (its id); `None` if cancelled or blank.
fn new_project_name() -> Option<String> {
    #[cfg(feature = "browser")]
    {
        let name = leptos::prelude::window()
            .prompt_with_message("Name of the new project (letters, digits, - and _):")
            .ok()
            .flatten()?;
        let name: String = name
            .trim()
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(64)
            .collect();
        (!name.is_empty()).then_some(name)
    }
    #[cfg(not(feature = "browser"))]
    None
}

/// The chosen project's documents: upload, progress, delete.
#[component]
pub fn DocumentsPanel() -> impl IntoView {
    let state = expect_context::<ChatState>();
    let input = NodeRef::<leptos::html::Input>::new();
    let dragging = RwSignal::new(false);
    let project = move || state.project.get().unwrap_or_default();
    view! {
        <section
            id="documents"
            class="documents"
            class:dragging=move || dragging.get()
            aria-label=move || format!("Documents of project {}", project())
            on:dragover=move |ev| {
                ev.prevent_default();
                dragging.set(true);
            }
            on:dragleave=move |_| dragging.set(false)
            on:drop=move |ev| {
                ev.prevent_default();
                dragging.set(false);
                #[cfg(feature = "browser")]
                if let Some(files) = ev.data_transfer().and_then(|d| d.files()) {
                    crate::transport::upload_documents(state, file_list(&files));
                }
            }
        >
            <header class="documents-head">
                <h2>{move || format!("Documents of {}", project())}</h2>
                <button type="button" class="documents-close" aria-label="Close documents" on:click=move |_| state.documents_open.set(false)>
                    "×"
                </button>
            </header>
            <p class="documents-hint">
                "Questions asked in this project are answered from its documents, with their sources. \
                 Drop Markdown, text, HTML or PDF files here, or "
                <button type="button" class="upload" on:click=move |_| {
                    if let Some(input) = input.get() {
                        input.click();
                    }
                }>"choose files"</button>
                "."
            </p>
            <input
                node_ref=input
                type="file"
                class="visually-hidden upload-input"
                aria-label="Upload documents"
                multiple
                accept=".md,.markdown,.txt,.text,.html,.htm,.pdf,text/markdown,text/plain,text/html,application/pdf"
                on:change=move |ev| {
                    #[cfg(feature = "browser")]
                    {
                        use wasm_bindgen::JsCast;
                        if let Some(field) = ev.target().and_then(|t| t.dyn_into::<web_sys::HtmlInputElement>().ok()) {
                            if let Some(files) = field.files() {
                                crate::transport::upload_documents(state, file_list(&files));
                            }
                            field.set_value("");
                        }
                    }
                    #[cfg(not(feature = "browser"))]
                    let _ = ev;
                }
            />
            <Show
                when=move || state.documents.with(|d| !d.is_empty())
                fallback=|| view! { <p class="documents-empty">"No documents yet."</p> }
            >
                <ul class="document-list">
                    <For
                        each=move || state.documents.get()
                        key=|d| (d.document_id.clone(), d.status, d.chunks)
                        let:document
                    >
                        <DocumentRow document=document/>
                    </For>
                </ul>
            </Show>
        </section>
    }
    .into_any()
}

/// One document: its name and size, where it is (a progress bar while it is
/// processed, why it failed), and its delete button.
#[component]
fn DocumentRow(document: DocumentInfo) -> impl IntoView {
    let state = expect_context::<ChatState>();
    let id = document.document_id.clone();
    let progress = {
        let id = id.clone();
        move || state.progress.with(|p| p.get(&id).copied().unwrap_or(0))
    };
    let status_text = match document.status {
        DocumentStatus::Processing => "Indexing…".to_owned(),
        DocumentStatus::Completed => format!(
            "Indexed · {} passage{}{}",
            document.chunks,
            if document.chunks == 1 { "" } else { "s" },
            document
                .pages
                .map(|p| format!(" · {p} page{}", if p == 1 { "" } else { "s" }))
                .unwrap_or_default()
        ),
        DocumentStatus::Failed => "Failed".to_owned(),
    };
    let name = document.filename.clone();
    let delete = {
        let (id, name) = (id.clone(), name.clone());
        move |_| {
            #[cfg(feature = "browser")]
            {
                let sure = leptos::prelude::window()
                    .confirm_with_message(&format!(
                        "Delete {name}? Questions will no longer be answered from it."
                    ))
                    .unwrap_or(false);
                if sure {
                    crate::transport::delete_document(state, id.clone());
                }
            }
            #[cfg(not(feature = "browser"))]
            let _ = (&id, &name, state);
        }
    };
    view! {
        <li class="document" data-status=document.status.as_str() data-document=id.clone()>
            <span class="document-name">{name.clone()}</span>
            <span class="document-size">{size(document.size)}</span>
            <span class="document-status">{status_text}</span>
            {(document.status == DocumentStatus::Processing).then(|| {
                let label = format!("Indexing {name}");
                view! { <progress max="100" value=progress aria-label=label></progress> }
            })}
            {document.error.map(|error| view! { <span class="document-error" role="alert">{error}</span> })}
            <button type="button" class="document-delete" aria-label=format!("Delete {name}") on:click=delete>
                "Delete"
            </button>
        </li>
    }
    .into_any()
}

/// A file size for people: "812 B", "14.2 KB", "3.1 MB".
fn size(bytes: u64) -> String {
    match bytes {
        0..1_000 => format!("{bytes} B"),
        1_000..1_000_000 => format!("{:.1} KB", bytes as f64 / 1e3),
        _ => format!("{:.1} MB", bytes as f64 / 1e6),
    }
}

/// The files of a file list.
#[cfg(feature = "browser")]
fn file_list(files: &web_sys::FileList) -> Vec<web_sys::File> {
    (0..files.length()).filter_map(|i| files.get(i)).collect()
}

#[cfg(test)]
mod tests {
    use super::size;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(size(812), "812 B");
        assert_eq!(size(14_200), "14.2 KB");
        assert_eq!(size(3_100_000), "3.1 MB");
    }
}
