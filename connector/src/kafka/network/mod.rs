pub mod connection;
pub mod poll;
pub mod transport;
