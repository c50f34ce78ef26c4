//! Browser storage (`localStorage`): what survives a reload.
//!
//! | key | what |
//! |---|---|
//! | `tether.sub` | the publisher identity, generated once (exactly-once needs the same `sub`) |
//! | `tether.session` | the resilience session's queue and positions (`Session::persist`) |
//! | `tether.token` | the last token and when it expires, so a reload while the server is down keeps it |
//! | `tether.view` | the last known data: messages, health, the channel shown |
//!
//! Storage can be missing or full (private mode, quota); then the app works without it.

/// The storage keys.
pub mod keys {
    /// The publisher identity.
    pub const SUB: &str = "tether.sub";
    /// `Session::persist`.
    pub const SESSION: &str = "tether.session";
    /// The token and its expiry.
    pub const TOKEN: &str = "tether.token";
    /// The last known data.
    pub const VIEW: &str = "tether.view";
}

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

/// The stored value of `key`, if any.
pub fn get(key: &str) -> Option<String> {
    storage()?.get_item(key).ok().flatten()
}

/// Stores `value` under `key`; returns whether it was stored.
pub fn set(key: &str, value: &str) -> bool {
    storage().is_some_and(|s| s.set_item(key, value).is_ok())
}

/// Removes `key`.
pub fn remove(key: &str) {
    if let Some(s) = storage() {
        // Nothing to do if the storage refuses: the value simply stays.
        let _ = s.remove_item(key);
    }
}

/// A random identifier of `len` lowercase hex digits, from `crypto.getRandomValues` when
/// available, else `Math.random`.
pub fn random_hex(len: usize) -> String {
    let mut out = String::with_capacity(len);
    let crypto = web_sys::window().and_then(|w| w.crypto().ok());
    let mut bytes = vec![0u8; len.div_ceil(2)];
    let filled = crypto.is_some_and(|c| c.get_random_values_with_u8_array(&mut bytes).is_ok());
    if !filled {
        for b in &mut bytes {
            *b = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out.truncate(len);
    out
}

/// A random `u64` (the jitter seed of the resilience session).
pub fn random_u64() -> u64 {
    u64::from_str_radix(&random_hex(16), 16).unwrap_or(0x5eed)
}

/// The publisher identity: generated once and kept, so a reload publishes as the same `sub`.
pub fn sub() -> String {
    if let Some(sub) = get(keys::SUB).filter(|s| !s.is_empty()) {
        return sub;
    }
    let sub = format!("web-{}", random_hex(12));
    set(keys::SUB, &sub);
    sub
}
