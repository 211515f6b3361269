//! The host: one long-lived process (`cms serve`) that owns every live session of a
//! home, and the client every other cms process uses to reach it.
//!
//! - [`protocol`]: the JSON-lines requests, replies and events on its socket
//!   (`docs/HOST-PROTOCOL.md`);
//! - [`endpoint`]: where a home's socket, lock, info file and log are;
//! - [`server`]: the host itself; `peer`: what a client inside a guarded session may ask;
//! - [`connection`]: one connection, requests matched to answers by id;
//! - [`client`]: [`HostClient`], the engine's [`crate::engine::Sessions`] over the socket;
//! - [`start`]: finding the host, or starting one in the background;
//! - [`token`]: the bearer token of its HTTP face.

pub mod client;
pub mod connection;
pub mod endpoint;
pub mod peer;
pub mod protocol;
pub mod server;
pub mod start;
pub mod token;

pub use client::{connect, connect_lazily, HostClient};
pub use endpoint::Endpoint;
pub use protocol::HostInfo;
pub use server::{serve, ServeOptions};
pub use start::{probe, stop, Started};

/// This cms's version as the host protocol compares it: the package version and
/// the build (the executable's modification time, read once at start), so a host
/// left running by an older build of the same version is noticed too.
pub fn version() -> String {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION
        .get_or_init(|| {
            let built = std::env::current_exe()
                .and_then(std::fs::metadata)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| format!("+{:x}", d.as_secs()))
                .unwrap_or_default();
            format!("{}{built}", env!("CARGO_PKG_VERSION"))
        })
        .clone()
}
