//! The protocol layer: bytes in and out, no I/O. Record batches (`batch`) and their codecs
//! (`compression`), the bytes consumer group members exchange through the coordinator
//! (`consumer`), API versions (`versions`), Kafka error codes (`errors`) and broker
//! throttling (`throttle`). Request and response messages are kafka-protocol's.
//!
//! It must not import `kafka::network` or `kafka::client`.

pub mod batch;
pub mod compression;
pub mod consumer;
pub mod errors;
pub mod throttle;
pub mod versions;
