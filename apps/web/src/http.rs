//! `fetch` helpers: a GET that yields the status and the body text.

use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

/// `GET url` with the browser's `fetch`; returns the HTTP status and the body as text.
/// A network failure (server down, proxy refused) is an `Err` with the browser's words.
pub async fn get_text(url: &str) -> Result<(u16, String), String> {
    let window = web_sys::window().ok_or("no window")?;
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    // Always ask the server: a cached /health or token is worse than none.
    init.set_cache(web_sys::RequestCache::NoStore);
    let promise = window.fetch_with_str_and_init(url, &init);
    let resp = JsFuture::from(promise).await.map_err(describe)?;
    let resp: web_sys::Response = resp.dyn_into().map_err(describe)?;
    let status = resp.status();
    let text = JsFuture::from(resp.text().map_err(describe)?)
        .await
        .map_err(describe)?;
    Ok((status, text.as_string().unwrap_or_default()))
}

/// A JS error value as text.
pub fn describe(err: wasm_bindgen::JsValue) -> String {
    if let Some(e) = err.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    err.as_string().unwrap_or_else(|| format!("{err:?}"))
}
