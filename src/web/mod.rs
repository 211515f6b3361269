//! The host's HTTP face (`cms serve --http ADDR`): one listener, one token, for MCP
//! over streamable HTTP at `/mcp` and the dashboard at `/`. It runs inside the host,
//! so its clients see and steer the same sessions as every other client.
//!
//! - [`guard`]: what every request passes first: `Host` and `Origin` (against DNS
//!   rebinding and cross-site pages), the token or the login cookie, the rate limit;
//! - [`login`]: the login page that takes the token once and sets a cookie;
//! - [`dashboard`]: the page and the JSON and server-sent-events API behind it;
//! - [`listen`]: the address, the router, serving until the host ends.

pub mod dashboard;
pub mod guard;
pub mod listen;
pub mod login;

use crate::app::exit;
use crate::app::runtime::errln;
use crate::cli::args::ServeArgs;
use crate::engine::{EngineConfig, Manager, Sessions};
use std::path::PathBuf;
use std::sync::Arc;

/// What every handler of the face shares.
#[derive(Clone)]
pub struct WebState {
    /// The host's own sessions (the manager, in process).
    pub sessions: Arc<dyn Sessions>,
    /// The same, for what only the host itself can tell (which live session's
    /// process tree a local client runs in).
    pub manager: Arc<Manager>,
    /// The port the face listens on.
    pub port: u16,
    pub home: PathBuf,
    /// Who may come in: the token, the login cookies, the allowed names.
    pub guard: Arc<guard::Guard>,
    /// When the last request came (the host's idle time counts it).
    pub activity: Arc<std::sync::Mutex<std::time::Instant>>,
}

/// `cms serve [--http ADDR] [--print-token]`: the host, with its HTTP face when asked.
pub fn serve(cfg: EngineConfig, a: &ServeArgs) -> i32 {
    if a.print_token {
        return match crate::host::token::get_or_make(&cfg.home) {
            Ok(t) => {
                println!("{t}");
                exit::OK
            }
            Err(e) => exit::fail(e),
        };
    }
    let Some(addr) = a.http.clone() else {
        return crate::cli::host::serve(cfg, a);
    };
    let bound = match listen::bind(&addr, a.allow_remote) {
        Ok(b) => b,
        Err(e) => return exit::fail(e),
    };
    let token = match crate::host::token::get_or_make(&cfg.home) {
        Ok(t) => t,
        Err(e) => return exit::fail(e),
    };
    let rate = a.http_rate.unwrap_or(guard::DEFAULT_RATE);
    let at = bound.addr;
    // Clients learn the address bound (port 0 picks one) from `cms host status`.
    let mut args = a.clone();
    args.http = Some(at.to_string());
    let home = cfg.home.clone();
    let face: crate::cli::host::Face = Box::new(move |b| {
        let _inside = b.handle.enter();
        let sessions: Arc<dyn Sessions> = b.manager.clone();
        let server = crate::mcp::build(b.handle.clone(), sessions.clone(), b.attached)?;
        let guard = Arc::new(guard::Guard::new(
            &home,
            token,
            bound.authorities.clone(),
            rate,
        ));
        let state = WebState {
            sessions,
            manager: b.manager.clone(),
            port: at.port(),
            home,
            guard,
            activity: b.activity.clone(),
        };
        let serving = listen::serve(bound, state, server)?;
        Ok(serving)
    });
    errln!(
        "cms host: MCP at http://{at}/mcp, the dashboard at http://{at}/ (token: `cms serve --print-token`)"
    );
    crate::cli::host::serve_with(cfg, &args, Some(face))
}
