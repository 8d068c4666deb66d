//! # rill-frontend
//!
//! The browser entry of rill's UI: cargo-leptos builds this crate to wasm, and the
//! server-rendered page calls `hydrate` to attach the Leptos app to it. The
//! `rill-csr` binary (feature `csr`, built by trunk) renders the whole UI in the
//! browser instead, for hosting it as static files.

/// Attaches the app to the server-rendered page.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(rill_app::App);
}
