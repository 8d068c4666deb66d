//! The client-side-only entry (trunk): renders the chat UI into the body of
//! `index.html`. The API it talks to is the page's origin, or the URL in the
//! page's `<meta name="rill-api-base" content="…">`.

fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(rill_app::App);
}
