pub mod batch;
pub mod compression;
pub mod consumer;
pub mod errors;
pub mod throttle;
pub mod versions;
