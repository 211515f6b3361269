//! The MCP server over streamable HTTP: rmcp's tower service around [`CmsServer`],
//! for the host's HTTP face to mount at `/mcp`. Both revisions are served:
//! 2025-11-25 clients open a session with `initialize`; 2026-07-28 clients call
//! `server/discover` and send each request on its own, and hear of tool changes
//! through `subscriptions/listen`.

use super::server::CmsServer;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use std::sync::Arc;
use std::time::Duration;

/// The largest JSON-RPC request body taken (a prompt with its context fits easily).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// The service, answering only requests whose `Host` (and `Origin`, when a browser
/// sends one) names one of `authorities` (`host:port`), as the spec asks against DNS
/// rebinding. The face in front checks them too, and the token.
/// (None: any name, for `--allow-remote` on every interface; the face then asks
/// that an `Origin` names the `Host` asked for.)
pub fn service(
    server: CmsServer,
    authorities: Option<&[String]>,
) -> StreamableHttpService<CmsServer, LocalSessionManager> {
    let mut config = StreamableHttpServerConfig::default()
        .with_max_request_body_bytes(MAX_REQUEST_BYTES)
        .with_sse_keep_alive(Some(Duration::from_secs(15)));
    config = match authorities {
        Some(names) => config
            .with_allowed_hosts(names.iter().cloned())
            .with_allowed_origins(names.iter().map(|a| format!("http://{a}")))
            .enforce_origin_validation(),
        None => config.disable_allowed_hosts().disable_allowed_origins(),
    };
    StreamableHttpService::new(
        move || Ok(server.for_new_client()),
        Arc::new(LocalSessionManager::default()),
        config,
    )
}
