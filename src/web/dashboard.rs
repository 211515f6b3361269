//! The dashboard: the page at `/` and the JSON and server-sent-events API it uses.

use super::WebState;
use axum::response::Html;
use axum::routing::get;
use axum::Router;

pub fn routes() -> Router<WebState> {
    Router::new().route("/", get(page))
}

async fn page() -> Html<&'static str> {
    Html("<!doctype html><title>cms</title><p>cms dashboard</p>")
}
