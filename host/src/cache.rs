//! Compiled components on disk: compiling with Cranelift takes seconds, loading a cached
//! artifact takes milliseconds. Loading one runs its native code unchecked, so the folder
//! must be private to this user, and the key is a SHA-256 over the component's bytes, the
//! engine's compilation settings and this host's version: a stale artifact is never
//! loaded, and nobody else can plant one.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, Metadata, OpenOptions};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::progress;

/// Keeps these keys apart from any other SHA-256 use of the same bytes.
const DOMAIN: &str = "kafka-wasm-connector compiled component v1";

/// The default cache folder: `$XDG_CACHE_HOME/kafka-wasm-connector`, else under
/// `$HOME/.cache`; none without either. Never the shared temp folder, where anyone could
/// plant an artifact.
pub fn default_dir() -> Option<PathBuf> {
    let absolute = |name| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let base = absolute("XDG_CACHE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".cache")))?;
    Some(base.join("kafka-wasm-connector"))
}

/// Loads the component at `path`, from `cache_dir` when compiled before. With an empty
/// `cache_dir` (no default folder), or one that is not private, it is compiled without
/// caching.
pub fn load(engine: &Engine, path: &Path, cache_dir: &Path) -> Result<Component> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read component {}", path.display()))?;
    compile(engine, &bytes, path, cache_dir)
}

/// `load`, for a component already read (`name` is how messages call it).
pub fn compile(engine: &Engine, bytes: &[u8], name: &Path, cache_dir: &Path) -> Result<Component> {
    let cached = match private_dir(cache_dir) {
        Ok(()) => Some(cache_dir.join(file_name(engine, bytes))),
        Err(why) => {
            warn_once(format!("warning: not caching compiled components: {why}"));
            None
        }
    };
    if let Some(c) = cached.as_deref().and_then(|c| load_cached(engine, c)) {
        return Ok(c);
    }
    let component = Component::from_binary(engine, bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile component {}", name.display()))?;
    if let Some(c) = &cached
        && let Err(e) = store(&component, c)
    {
        progress::log(&format!("warning: not caching the compiled component: {e:#}"));
    }
    Ok(component)
}

/// Creates `dir` private (0700) if missing; refuses it unless only this user can write it.
fn private_dir(dir: &Path) -> Result<(), String> {
    if dir.as_os_str().is_empty() {
        return Err("no cache folder (set --cache-dir, XDG_CACHE_HOME or HOME)".into());
    }
    let shown = dir.display();
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {shown}: {e}"))?;
    let meta = std::fs::metadata(dir).map_err(|e| format!("cannot inspect {shown}: {e}"))?;
    if !meta.is_dir() {
        return Err(format!("{shown} is not a folder"));
    }
    trusted(&meta).map_err(|why| format!("{shown} {why}"))
}

/// Why a file or folder that someone else could have written is not trusted, if so.
fn trusted(meta: &Metadata) -> Result<(), &'static str> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if meta.uid() != unsafe { libc::geteuid() } {
        return Err("is not owned by this user");
    }
    match meta.mode() {
        m if m & 0o002 != 0 => Err("is writable by others"),
        m if m & 0o020 != 0 => Err("is writable by its group"),
        _ => Ok(()),
    }
}

/// The artifact at `path`, if there is one and it is a regular file only we could write.
fn load_cached(engine: &Engine, path: &Path) -> Option<Component> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_file() || trusted(&meta).is_err() {
        warn_once(format!(
            "warning: ignoring {}: not a regular file private to this user",
            path.display()
        ));
        return None;
    }
    // SAFETY: a regular file of ours, not writable by others, in a folder only we can
    // write, named by a cryptographic hash of this exact component, engine and host.
    match unsafe { Component::deserialize_file(engine, path) } {
        Ok(c) => Some(c),
        Err(_) => {
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

/// `<sha256 hex>.cwasm`.
fn file_name(engine: &Engine, bytes: &[u8]) -> String {
    format!("{}.cwasm", key(engine, bytes))
}

/// SHA-256 over everything that decides the artifact, each part framed so that no two
/// inputs give the same stream; in full hex (64 characters).
fn key(engine: &Engine, bytes: &[u8]) -> String {
    let mut compat = Sha256::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut ShaHasher(&mut compat));
    let mut sha = Sha256::new();
    for part in [DOMAIN.as_bytes(), env!("CARGO_PKG_VERSION").as_bytes()] {
        sha.update((part.len() as u64).to_le_bytes());
        sha.update(part);
    }
    sha.update(compat.finalize());
    sha.update(bytes);
    sha.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Feeds a `Hash` value into SHA-256; `finish` is never called by `Hash` impls.
struct ShaHasher<'a>(&'a mut Sha256);

impl Hasher for ShaHasher<'_> {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    fn finish(&self) -> u64 {
        0
    }
}

/// Writes atomically (a reader sees the whole artifact or none) through a new private
/// file, never through one that is already there.
fn store(component: &Component, path: &Path) -> Result<()> {
    let bytes = component.serialize()?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let tmp = path.with_extension(format!("tmp{}-{nanos}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = file.write_all(&bytes).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| format!("cannot write {}", path.display()))
}

/// Logs `msg` the first time only: every component load would repeat it.
fn warn_once(msg: String) {
    static SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let first = SEEN.lock().unwrap_or_else(|e| e.into_inner()).insert(msg.clone());
    if first {
        progress::log(&msg);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// The smallest component: the preamble of a component binary.
    const EMPTY: &[u8] = b"\0asm\x0d\x00\x01\x00";

    /// A fresh folder under the temp folder, with the empty component in it.
    fn scratch(name: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("cache-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let wasm = dir.join("empty.wasm");
        std::fs::write(&wasm, EMPTY).unwrap();
        (dir, wasm)
    }

    fn cwasm_files(dir: &Path) -> Vec<PathBuf> {
        let entries = std::fs::read_dir(dir).unwrap();
        let paths = entries.map(|e| e.unwrap().path());
        paths
            .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
            .collect()
    }

    #[test]
    fn a_folder_writable_by_others_is_refused() {
        let (dir, wasm) = scratch("open");
        let cache = dir.join("cache");
        std::fs::create_dir(&cache).unwrap();
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).unwrap();
        let why = private_dir(&cache).unwrap_err();
        assert!(why.contains("cache is writable by others"), "{why}");
        load(&Engine::default(), &wasm, &cache).unwrap();
        assert!(cwasm_files(&cache).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_private_folder_is_created_and_used() {
        let (dir, wasm) = scratch("private");
        let cache = dir.join("a/cache");
        let engine = Engine::default();
        load(&engine, &wasm, &cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let files = cwasm_files(&cache);
        assert_eq!(files.len(), 1);
        assert_eq!(
            std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(load_cached(&engine, &files[0]).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_key_is_a_full_sha256_that_depends_on_the_bytes() {
        let engine = Engine::default();
        let (a, b) = (key(&engine, EMPTY), key(&engine, b"other"));
        assert_ne!(a, b);
        assert_eq!(a, key(&engine, EMPTY));
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn a_planted_symlink_is_not_loaded() {
        let (dir, wasm) = scratch("symlink");
        let engine = Engine::default();
        let cache = dir.join("cache");
        private_dir(&cache).unwrap();
        let real = dir.join("real.cwasm");
        std::fs::write(&real, engine.precompile_component(EMPTY).unwrap()).unwrap();
        let planted = cache.join(file_name(&engine, EMPTY));
        std::os::unix::fs::symlink(&real, &planted).unwrap();
        assert!(load_cached(&engine, &planted).is_none());
        load(&engine, &wasm, &cache).unwrap();
        assert!(std::fs::symlink_metadata(&planted).unwrap().file_type().is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
