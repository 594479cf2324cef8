//! The protocol layer: bytes in and out, no I/O. Record batches (`batch`) and their codecs
//! (`compression`), the bytes consumer group members exchange through the coordinator
//! (`consumer`), API versions (`versions`), Kafka error codes (`errors`), broker
//! throttling (`throttle`), the client side of SASL mechanisms (`sasl`, with SCRAM in
//! `scram`) and `jitter` for spreading retries. Request and response messages are
//! kafka-protocol's.
//!
//! It must not import `kafka::network` or `kafka::client`.

pub mod batch;
pub mod compression;
pub mod consumer;
pub mod errors;
pub mod jitter;
pub mod sasl;
pub mod scram;
pub mod throttle;
pub mod versions;
