pub mod connection;
pub mod poll;
