//! The status store: where labd writes status, events and metrics, and labctl reads them.
//! Redis, with the keys documented in the README.

pub mod lease;
mod redis_store;

pub use redis_store::{keys, RedisStore, StoreReader};
