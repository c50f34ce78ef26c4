//! Tether's web dashboard: a Leptos CSR app started from `start()` by the generated JS glue.
use leptos::prelude::*;
use wasm_bindgen::prelude::wasm_bindgen;

/// Entry point called by the wasm-bindgen glue once the module is instantiated.
#[wasm_bindgen(start)]
pub fn start() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(|| view! { <p id="hello">"Tether"</p> });
}
