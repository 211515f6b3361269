//! What every request to the HTTP face passes first, in this order:
//!
//! 1. the rate limit of its client address (a token bucket: `--http-rate` a second,
//!    bursts of twice that; and at most [`FAILURES_PER_MINUTE`] wrong tokens a minute);
//! 2. `Host` must name this server (against DNS rebinding), and an `Origin`, when a
//!    browser sends one, must be this server's own (against other sites' pages);
//! 3. who asks: `Authorization: Bearer TOKEN` everywhere, or the login cookie for the
//!    dashboard (never for `/mcp`); a request with the cookie that changes anything
//!    must carry this server's `Origin`;
//! 4. from where: a client on this machine inside a guarded session's process tree
//!    (its Bash found the token) is held to that session's guard, as on the host's
//!    socket: over MCP the tools' gates apply its guard; on the dashboard it may
//!    change nothing. The token does not make it the user.
//!
//! No CORS header is ever sent, so a browser lets no other site read an answer.

use super::WebState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Requests a second per client address when `--http-rate` is not given.
pub const DEFAULT_RATE: u32 = 200;
/// Wrong tokens a client address may send in a minute before it is refused.
pub const FAILURES_PER_MINUTE: u32 = 20;
/// The login cookie's name.
pub const COOKIE: &str = "cms_login";
/// How long a login lasts.
/// (A browser sends the cookie to every port of this host, so it is kept short.)
pub const LOGIN_LASTS: Duration = Duration::from_secs(12 * 3600);

/// The face's gate: its token, the names it answers to, its limits and logins.
pub struct Guard {
    /// The token in force, and the token file's modification time when it was read:
    /// a token replaced in the file (after a leak) replaces it here at once.
    token: Mutex<(Option<std::time::SystemTime>, String)>,
    home: std::path::PathBuf,
    /// `host:port` names a request's `Host` may carry (None: any, with
    /// `--allow-remote` on an address of every interface).
    authorities: Option<Vec<String>>,
    rate: u32,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    logins: Mutex<HashMap<String, Instant>>,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Guard {
    pub fn new(
        home: &std::path::Path,
        token: String,
        authorities: Option<Vec<String>>,
        rate: u32,
    ) -> Guard {
        let at = modified(home);
        Guard {
            token: Mutex::new((at, token)),
            home: home.to_path_buf(),
            authorities,
            rate,
            buckets: Mutex::default(),
            failures: Mutex::default(),
            logins: Mutex::default(),
        }
    }

    /// Take one request from `ip`'s bucket (false: over its rate).
    fn admit(&self, ip: IpAddr) -> bool {
        if self.rate == 0 {
            return true;
        }
        let rate = f64::from(self.rate);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() > 10_000 {
            // Forget the full ones: they are as good as new.
            buckets.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * rate < 2.0 * rate
            });
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: 2.0 * rate,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(2.0 * rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether `ip` sent too many wrong tokens this minute.
    pub fn locked_out(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        matches!(failures.get(&ip), Some((since, n))
            if since.elapsed() < Duration::from_secs(60) && *n >= FAILURES_PER_MINUTE)
    }

    /// Count a wrong token from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= Duration::from_secs(60) {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }

    /// Whether `given` is the token (in time that does not depend on where they differ).
    pub fn is_token(&self, given: &str) -> bool {
        let mut current = self.token.lock().unwrap_or_else(|p| p.into_inner());
        let at = modified(&self.home);
        if at.is_some() && at != current.0 {
            match crate::host::token::read(&self.home) {
                Ok(Some(t)) => *current = (at, t),
                Ok(None) => {}
                Err(e) => tracing::error!("the HTTP token file: {e}; the token read before stays"),
            }
        }
        let (a, b) = (given.as_bytes(), current.1.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// Whether `host` (a `Host` header) names this server.
    fn host_ok(&self, host: &str) -> bool {
        match &self.authorities {
            None => true,
            Some(names) => names.iter().any(|n| n.eq_ignore_ascii_case(host)),
        }
    }

    /// A new login (the cookie's value).
    pub fn login(&self) -> String {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        logins.retain(|_, until| *until > Instant::now());
        logins.insert(id.clone(), Instant::now() + LOGIN_LASTS);
        id
    }

    pub fn logout(&self, id: &str) {
        self.logins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// The login cookie of `headers`, when it is a live login.
    pub fn login_of(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        self.is_login(&id).then_some(id)
    }

    /// Whether `id` is a live login (not logged out, not expired).
    pub fn is_login(&self, id: &str) -> bool {
        let logins = self.logins.lock().unwrap_or_else(|p| p.into_inner());
        logins.get(id).is_some_and(|until| *until > Instant::now())
    }
}

/// When the token file of `home` was last changed (None: there is none).
fn modified(home: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(crate::host::token::path(home))
        .and_then(|m| m.modified())
        .ok()
}

/// The value of cookie `name` in `headers`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// A refusal: its status and a message that says what to do.
pub fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() });
    let mut r = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// A refusal before the request's body was read: the connection is closed after
/// it (`Connection: close`), so a client does not send its next request on a
/// connection the server is about to drop.
fn turn_away(status: StatusCode, message: impl Into<String>) -> Response {
    let mut r = refuse(status, message);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The answer to a wrong token from an address that sent too many this minute.
pub fn locked_out(ip: IpAddr) -> Response {
    turn_away(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "more than {FAILURES_PER_MINUTE} wrong tokens from {ip} this minute: wait, then use the \
             token of `cms serve --print-token`"
        ),
    )
}

/// Pages and forms anyone may load: the login page and what it needs.
fn open_to_all(path: &str) -> bool {
    matches!(path, "/login" | "/favicon.ico")
}

/// Step 4 of the module's text, for a request whose token or login is good.
async fn from_where(
    state: &WebState,
    peer: SocketAddr,
    mcp: bool,
    mut req: Request,
    next: Next,
) -> Response {
    // A request with the token (or a login) is the host's activity.
    *state.activity.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    let (manager, port) = (state.manager.clone(), state.port);
    let ask = move || -> Result<Option<crate::engine::Guard>, String> {
        crate::host::peer::guarded_tcp_client(&manager, peer, port).map(|g| g.map(|(_, g)| g))
    };
    if mcp {
        // The tools' gates ask when a call could widen a guard.
        req.extensions_mut()
            .insert(crate::mcp::server::Asker(std::sync::Arc::new(ask)));
        return next.run(req).await;
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let (manager, port) = (state.manager.clone(), state.port);
        let found = tokio::task::spawn_blocking(move || {
            crate::host::peer::guarded_tcp_client(&manager, peer, port)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match found {
            Ok(None) => {}
            Ok(Some((inside, _))) => {
                return turn_away(
                    StatusCode::FORBIDDEN,
                    format!("cms refused: the dashboard changes nothing for a client inside guarded session '{inside}'"),
                )
            }
            Err(e) => {
                return turn_away(
                    StatusCode::FORBIDDEN,
                    format!("{e}; the dashboard changes nothing for a client it cannot place"),
                )
            }
        }
    }
    next.run(req).await
}

/// The middleware: see the module's text.
pub async fn check(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let g = &state.guard;
    let ip = peer.ip();
    if !g.admit(ip) {
        return turn_away(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "more than {} requests a second from {ip}: slow down (cms serve --http-rate sets the limit)",
                g.rate
            ),
        );
    }
    let headers = req.headers();
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return turn_away(StatusCode::BAD_REQUEST, "the request has no Host header");
    };
    if !g.host_ok(host) {
        let first = g
            .authorities
            .as_ref()
            .and_then(|a| a.first())
            .cloned()
            .unwrap_or_default();
        return turn_away(
            StatusCode::FORBIDDEN,
            format!(
                "Host {host} does not name this server (a DNS rebinding attempt?); open http://{first}/"
            ),
        );
    }
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok());
    if let Some(origin) = origin {
        if !origin.eq_ignore_ascii_case(&format!("http://{host}")) {
            return turn_away(
                StatusCode::FORBIDDEN,
                format!("requests from pages of other sites are refused (Origin {origin})"),
            );
        }
    }
    let path = req.uri().path();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").map(str::trim).unwrap_or(""));
    let mcp = path == "/mcp" || path.starts_with("/mcp/");
    // The right token always passes (an address that guessed wrong cannot lock the
    // user out); wrong guesses are limited per address.
    match bearer {
        Some(t) if g.is_token(t) => return from_where(&state, peer, mcp, req, next).await,
        Some(_) if g.locked_out(ip) => return locked_out(ip),
        Some(_) => {
            g.failed(ip);
            return turn_away(
                StatusCode::UNAUTHORIZED,
                "wrong token: send `Authorization: Bearer TOKEN` with the token of `cms serve --print-token`",
            );
        }
        None => {}
    }
    if !mcp && g.login_of(headers).is_some() {
        let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
        if changes && origin.is_none() {
            return turn_away(
                StatusCode::FORBIDDEN,
                "a change made with the login cookie must come from the dashboard's own page (no Origin header)",
            );
        }
        return from_where(&state, peer, false, req, next).await;
    }
    if open_to_all(path) {
        return next.run(req).await;
    }
    if mcp || path.starts_with("/api/") {
        return turn_away(
            StatusCode::UNAUTHORIZED,
            "no token: send `Authorization: Bearer TOKEN` with the token of `cms serve --print-token`",
        );
    }
    Redirect::to("/login").into_response()
}
