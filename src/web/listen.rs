//! The face's address and router: it binds before the host starts (so a port in use
//! is said at once), then serves until the host ends.

use super::{dashboard, guard, login, WebState};
use crate::mcp::server::CmsServer;
use axum::Router;
use futures_util::future::BoxFuture;
use std::net::{IpAddr, SocketAddr};

/// A bound listener and the names a request's `Host` may carry.
pub struct Bound {
    pub listener: std::net::TcpListener,
    pub addr: SocketAddr,
    /// `host:port` names of this server (None: any, with `--allow-remote` on an
    /// address of every interface).
    pub authorities: Option<Vec<String>>,
}

/// Bind `addr` (`IP:PORT`; port 0 picks one). Only loopback unless `allow_remote`.
pub fn bind(addr: &str, allow_remote: bool) -> Result<Bound, String> {
    let wanted: SocketAddr = addr
        .parse()
        .map_err(|e| format!("--http {addr}: {e} (write IP:PORT, e.g. 127.0.0.1:7707)"))?;
    if !wanted.ip().is_loopback() {
        if !allow_remote {
            return Err(format!(
                "--http {addr} is not a loopback address: other machines could reach your sessions. \
                 Add --allow-remote if you mean it (and keep the token secret), or use 127.0.0.1"
            ));
        }
        tracing::warn!(
            "cms serves HTTP on {addr}, reachable from other machines: the token is all that guards \
             your sessions there, and HTTP is not encrypted (put TLS in front for other networks)"
        );
        crate::app::runtime::errln!(
            "warning: --http {addr} is reachable from other machines; the token is all that guards it, \
             and plain HTTP is not encrypted"
        );
    }
    let listener = std::net::TcpListener::bind(wanted).map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another program listens there: pick another port, or `cms host status` to see whether a host already serves it)"
        } else {
            ""
        };
        format!("cannot listen on {addr}: {e}{hint}")
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    Ok(Bound {
        listener,
        addr,
        authorities: authorities(addr),
    })
}

/// The names of a server on `addr`.
fn authorities(addr: SocketAddr) -> Option<Vec<String>> {
    let port = addr.port();
    match addr.ip() {
        ip if ip.is_unspecified() => None,
        IpAddr::V4(ip) if ip.is_loopback() => Some(with_default_port(
            vec![format!("{ip}:{port}"), format!("localhost:{port}")],
            port,
        )),
        IpAddr::V6(ip) if ip.is_loopback() => Some(with_default_port(
            vec![format!("[{ip}]:{port}"), format!("localhost:{port}")],
            port,
        )),
        ip @ IpAddr::V4(_) => Some(with_default_port(vec![format!("{ip}:{port}")], port)),
        ip @ IpAddr::V6(_) => Some(with_default_port(vec![format!("[{ip}]:{port}")], port)),
    }
}

/// On port 80 a browser's `Host` has no port: the names without it too.
fn with_default_port(mut names: Vec<String>, port: u16) -> Vec<String> {
    if port == 80 {
        let bare: Vec<String> = names
            .iter()
            .filter_map(|n| n.strip_suffix(":80").map(str::to_string))
            .collect();
        names.extend(bare);
    }
    names
}

/// Every route behind the guard.
pub fn router(state: WebState, mcp: CmsServer, authorities: Option<&[String]>) -> Router {
    Router::new()
        .nest_service("/mcp", crate::mcp::http::service(mcp, authorities))
        .merge(login::routes())
        .merge(dashboard::routes(&state))
        .method_not_allowed_fallback(|req: axum::extract::Request| async move {
            guard::refuse(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                format!("{} does not take {}", req.uri().path(), req.method()),
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            crate::mcp::http::MAX_REQUEST_BYTES,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::check,
        ))
        .with_state(state)
}

/// What serves `bound` until it is dropped.
pub fn serve(
    bound: Bound,
    state: WebState,
    mcp: CmsServer,
) -> Result<BoxFuture<'static, ()>, String> {
    let addr = bound.addr;
    let listener = tokio::net::TcpListener::from_std(bound.listener)
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let app = router(state, mcp, bound.authorities.as_deref())
        .into_make_service_with_connect_info::<SocketAddr>();
    Ok(Box::pin(async move {
        // Small writes go out at once: an answer on an event stream is several of
        // them, and Nagle's algorithm would hold one back for the client's delayed
        // ACK (40 ms a call).
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("the HTTP face on {addr} stopped: {e}");
        }
    }))
}
