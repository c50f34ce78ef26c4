//! Network settings: allowed browser origins and trusted-proxy networks.

use std::fmt;
use std::net::IpAddr;

use super::{Check, given};

/// Which requests are allowed to come from browsers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// `*` (development only).
    Any,
    /// Exact origins, normalised (`scheme://host[:port]`, default ports dropped, lowercase).
    List(Vec<String>),
}

impl AllowedOrigins {
    /// Is this `Origin` header value allowed? Compares normalised origins, so
    /// `http://LOCALHOST:3000` matches `http://localhost:3000`.
    #[must_use]
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Self::Any => true,
            Self::List(list) => normalise_origin(origin).is_some_and(|o| list.contains(&o)),
        }
    }
}

/// An IP network (`10.0.0.0/8`, `::1/128`; a bare address is a /32 or /128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("not an IP network {s:?} (use ADDR/PREFIX, e.g. 10.0.0.0/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.trim().parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("bad prefix length in {s:?} (0..={max})")),
            },
        };
        Ok(Self { addr, prefix })
    }

    /// Does the network contain `ip`? IPv4-mapped IPv6 addresses count as IPv4.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Normalises an origin: `scheme://host[:port]`, lowercase, default port dropped. `None` when
/// it is not an http(s) origin with no path, query or credentials.
#[must_use]
pub fn normalise_origin(origin: &str) -> Option<String> {
    let url = url::Url::parse(origin.trim()).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none()
        || url.path() != "/"
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    Some(url.origin().ascii_serialization())
}

pub(super) fn parse_origins(c: &mut Check, raw: Option<&String>, prod: bool) -> AllowedOrigins {
    let Some(list) = given(raw) else {
        if prod {
            c.warn(
                "TETHER_ALLOWED_ORIGINS",
                "not set in production: browsers (any request with an Origin header) are refused",
            );
            return AllowedOrigins::List(Vec::new());
        }
        return AllowedOrigins::List(vec![
            "http://localhost:3000".into(),
            "http://127.0.0.1:3000".into(),
        ]);
    };
    let mut out = Vec::new();
    let mut any = false;
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if item == "*" {
            if prod {
                c.error(
                    "TETHER_ALLOWED_ORIGINS",
                    "\"*\" is not allowed in production (list exact origins)",
                );
            } else {
                c.warn(
                    "TETHER_ALLOWED_ORIGINS",
                    "\"*\" allows every origin (development only)",
                );
            }
            any = true;
            continue;
        }
        match normalise_origin(item) {
            Some(o) => out.push(o),
            None => c.error(
                "TETHER_ALLOWED_ORIGINS",
                format!("not an origin {item:?} (use scheme://host[:port], e.g. https://app.example.com)"),
            ),
        }
    }
    if any {
        AllowedOrigins::Any
    } else {
        AllowedOrigins::List(out)
    }
}

/// `TETHER_TRUSTED_PROXIES`: a comma-separated list of networks; each bad item is named.
pub(super) fn parse_proxies(c: &mut Check, raw: Option<&String>) -> Vec<Cidr> {
    let mut trusted_proxies = Vec::new();
    if let Some(list) = given(raw) {
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match Cidr::parse(item) {
                Ok(cidr) => trusted_proxies.push(cidr),
                Err(msg) => c.error("TETHER_TRUSTED_PROXIES", msg),
            }
        }
    }
    trusted_proxies
}
