//! The HS256 secret: from the environment, a file, or the development secret generated once
//! beside the database.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::{
    Check, DEV_SECRET_FILE, Env, MIN_SECRET_BYTES, SECRET_ENV, SECRET_FILE_ENV, SecretMode,
    SecretSource, given,
};
use crate::auth::Secret;
use crate::cli::Settings;

pub(super) fn resolve_secret(
    c: &mut Check,
    s: &Settings,
    env: &Env,
    prod: bool,
    db_path: &Path,
    mode: SecretMode,
) -> Option<(Secret, SecretSource)> {
    let from_env = env.get(SECRET_ENV);
    let file = given(s.jwt_secret_file.as_ref());
    let (bytes, source, name) = match (from_env, file) {
        (Some(_), Some(_)) => {
            c.error(
                SECRET_ENV,
                "set either TETHER_JWT_SECRET or TETHER_JWT_SECRET_FILE (--jwt-secret-file), not both",
            );
            return None;
        }
        (Some(v), None) => (v.as_bytes().to_vec(), SecretSource::Env, SECRET_ENV),
        (None, Some(path)) => match std::fs::read(path) {
            Ok(mut bytes) => {
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                (bytes, SecretSource::File(path.into()), SECRET_FILE_ENV)
            }
            Err(e) => {
                c.error(SECRET_FILE_ENV, format!("cannot read {path:?}: {e}"));
                return None;
            }
        },
        (None, None) if prod => {
            c.error(
                SECRET_ENV,
                "required in production (set TETHER_JWT_SECRET or TETHER_JWT_SECRET_FILE, at least 32 bytes)",
            );
            return None;
        }
        (None, None) => {
            if !c.errors.is_empty() {
                // Do not create files for a configuration that will be refused anyway.
                return None;
            }
            return dev_secret(c, db_path, mode);
        }
    };
    if bytes.is_empty() {
        c.error(name, "empty secret");
        return None;
    }
    if bytes.len() < MIN_SECRET_BYTES {
        let msg = format!(
            "secret too short ({} bytes; at least {MIN_SECRET_BYTES})",
            bytes.len()
        );
        if prod {
            c.error(name, msg);
            return None;
        }
        c.warn(name, msg);
    }
    Some((Secret::new(bytes), source))
}

fn dev_secret(c: &mut Check, db_path: &Path, mode: SecretMode) -> Option<(Secret, SecretSource)> {
    let dir = match db_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let path = dir.join(DEV_SECRET_FILE);
    let read = |path: &Path| -> std::io::Result<Vec<u8>> {
        let mut bytes = std::fs::read(path)?;
        while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
            bytes.pop();
        }
        Ok(bytes)
    };
    match read(&path) {
        Ok(bytes) if bytes.len() >= MIN_SECRET_BYTES => {
            c.warn(
                SECRET_ENV,
                format!(
                    "not set: using the development secret kept in {} (never in production)",
                    path.display()
                ),
            );
            return Some((
                Secret::new(bytes),
                SecretSource::DevFile {
                    path,
                    created: false,
                },
            ));
        }
        Ok(_) => {
            c.error(
                SECRET_FILE_ENV,
                format!(
                    "the development secret {} is shorter than {MIN_SECRET_BYTES} bytes; delete it to regenerate",
                    path.display()
                ),
            );
            return None;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            c.error(
                SECRET_FILE_ENV,
                format!("cannot read the development secret {}: {e}", path.display()),
            );
            return None;
        }
    }
    let fresh = generate_secret();
    if mode == SecretMode::ReadOnly {
        c.warn(
            SECRET_ENV,
            format!(
                "not set: serve would generate a development secret into {}",
                path.display()
            ),
        );
        return Some((
            Secret::new(fresh.into_bytes()),
            SecretSource::DevPending(path),
        ));
    }
    match write_new_secret(&dir, &path, &fresh) {
        Ok(true) => {
            c.warn(
                SECRET_ENV,
                format!(
                    "not set: generated a development secret into {} (never in production)",
                    path.display()
                ),
            );
            Some((
                Secret::new(fresh.into_bytes()),
                SecretSource::DevFile {
                    path,
                    created: true,
                },
            ))
        }
        // Another process (`tether token` next to a starting server) won the race: use its secret.
        Ok(false) => match read(&path) {
            Ok(bytes) if bytes.len() >= MIN_SECRET_BYTES => Some((
                Secret::new(bytes),
                SecretSource::DevFile {
                    path,
                    created: false,
                },
            )),
            _ => {
                c.error(
                    SECRET_FILE_ENV,
                    format!("cannot read the development secret {}", path.display()),
                );
                None
            }
        },
        Err(e) => {
            c.error(
                SECRET_FILE_ENV,
                format!(
                    "cannot create the development secret {}: {e}",
                    path.display()
                ),
            );
            None
        }
    }
}

/// 32 random bytes as 64 hex characters (the key is the text).
fn generate_secret() -> String {
    use rand::RngCore as _;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Creates `path` exclusively with mode 0600; `Ok(false)` when it already exists.
fn write_new_secret(dir: &Path, path: &Path, secret: &str) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut f) => {
            f.write_all(secret.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}
