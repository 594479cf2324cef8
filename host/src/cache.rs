//! Compiled components on disk: compiling with Cranelift takes seconds, loading a cached
//! artifact takes milliseconds. The key covers the component's bytes, the engine's
//! compilation settings and this host's version, so a stale artifact is never loaded.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use wasmtime::Engine;
use wasmtime::component::Component;

/// The default cache folder: `$XDG_CACHE_HOME/kafka-wasm-connector`, else under `~/.cache`.
pub fn default_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("kafka-wasm-connector")
}

/// Loads the component at `path`, from `cache_dir` when compiled before.
pub fn load(engine: &Engine, path: &Path, cache_dir: &Path) -> Result<Component> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read component {}", path.display()))?;
    let cached = cache_dir.join(format!("{:016x}.cwasm", key(engine, &bytes)));
    if cached.exists() {
        // SAFETY: the file is one this host wrote (below) for this exact engine and input.
        match unsafe { Component::deserialize_file(engine, &cached) } {
            Ok(c) => return Ok(c),
            Err(_) => {
                let _ = std::fs::remove_file(&cached);
            }
        }
    }
    let component = Component::from_binary(engine, &bytes)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot compile component {}", path.display()))?;
    if let Err(e) = store(&component, cache_dir, &cached) {
        eprintln!("warning: not caching the compiled component: {e:#}");
    }
    Ok(component)
}

fn key(engine: &Engine, bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    bytes.hash(&mut h);
    h.finish()
}

/// Writes atomically: a reader sees the whole artifact or none.
fn store(component: &Component, dir: &Path, path: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
