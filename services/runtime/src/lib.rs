//! Pieces every sohoa service shares: configuration loading, the storage root, and
//! logging. Each is here because more than one service needs it, not to be general.

pub mod config;
pub mod http;
pub mod kafka_tls;
pub mod storage;
pub mod telemetry;

pub use config::{Config, ConfigError};
pub use storage::{Storage, StorageError};
