//! # rill-frontend
//!
//! The browser entry of rill's UI: cargo-leptos builds this crate to wasm, and the
//! server-rendered page calls `hydrate` to attach the Leptos app to it. The
//! `rill-csr` binary (feature `csr`, built by trunk) renders the whole UI in the
//! browser instead, for hosting it as static files.

/// Attaches the app to the server-rendered page, in a task of its own: the
/// page calls this in the task where the browser finishes compiling and
/// instantiating the wasm (reading its code cache, 15–20 ms on a slow
/// machine), and hydrating in the same task would make one long task of both.
#[cfg(feature = "hydrate")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::prelude::set_timeout(
        || leptos::mount::hydrate_body(rill_app::App),
        std::time::Duration::ZERO,
    );
}
