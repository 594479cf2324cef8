pub mod batch;
pub mod compression;
pub mod errors;
pub mod versions;
