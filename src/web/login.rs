//! The login page: it takes the token once and answers with a cookie (HttpOnly,
//! SameSite=Strict) that lets this browser in for 12 hours or until it logs out.

use super::guard::{self, COOKIE, LOGIN_LASTS};
use super::WebState;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use std::net::SocketAddr;

const PAGE: &str = include_str!("page/login.html");

pub fn routes() -> Router<WebState> {
    Router::new()
        .route("/login", get(page).post(login))
        .route("/logout", post(logout))
}

/// The login page, saying `message`; no other site may frame it.
fn page_saying(message: &str) -> Response {
    let mut r = Html(PAGE.replace("{{message}}", message)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

async fn page() -> Response {
    page_saying("")
}

#[derive(serde::Deserialize)]
struct Login {
    token: String,
}

async fn login(
    State(state): State<WebState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<Login>,
) -> Response {
    if !state.guard.is_token(form.token.trim()) {
        if state.guard.locked_out(peer.ip()) {
            return super::guard::locked_out(peer.ip());
        }
        state.guard.failed(peer.ip());
        let page = page_saying(
            "<p class=\"error\">That is not the token. <code>cms serve --print-token</code> prints it.</p>",
        );
        return (StatusCode::UNAUTHORIZED, page).into_response();
    }
    let id = state.guard.login();
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        LOGIN_LASTS.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

async fn logout(State(state): State<WebState>, headers: HeaderMap) -> Response {
    if let Some(id) = guard::cookie(&headers, COOKIE) {
        state.guard.logout(&id);
    }
    let gone = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    ([(header::SET_COOKIE, gone)], Redirect::to("/login")).into_response()
}
