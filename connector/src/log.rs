//! Log lines: to the host's log sink inside the component, to stderr natively.

#[derive(Debug, Clone, Copy)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

pub fn info(msg: &str) {
    emit(Level::Info, msg)
}

pub fn warn(msg: &str) {
    emit(Level::Warn, msg)
}

#[cfg(target_family = "wasm")]
fn emit(level: Level, msg: &str) {
    crate::glue::log(level, msg)
}

#[cfg(not(target_family = "wasm"))]
fn emit(level: Level, msg: &str) {
    eprintln!("{level:?}: {msg}")
}
