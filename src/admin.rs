//! The admin HTTP API (SPEC §4): health, readiness, fleet status, rendered
//! config and metrics. It reads state; it never changes configuration.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, State as AxState};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::render;
use crate::state::State;
use crate::xds::fleet::timestamp;

/// The admin routes.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/api/status", get(status))
        .route("/api/config", get(config))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn readyz(AxState(state): AxState<Arc<State>>) -> Response {
    if state.current().is_some() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no valid config loaded yet\n").into_response()
    }
}

/// The `/api/status` document.
#[must_use]
pub fn status_json(state: &State) -> serde_json::Value {
    let reload = state
        .last_reload()
        .map(|r| json!({ "ok": r.ok, "at": timestamp(r.at), "errors": r.errors, "warnings": r.warnings }));
    json!({
        "version": state.current().map(|s| s.version().to_owned()),
        "last_reload": reload,
        "nodes": state.fleet.list(),
        "routes": state.routes(),
    })
}

async fn page(AxState(state): AxState<Arc<State>>) -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], crate::status::html(&status_json(&state))).into_response()
}

async fn status(AxState(state): AxState<Arc<State>>) -> Json<serde_json::Value> {
    Json(status_json(&state))
}

async fn config(AxState(state): AxState<Arc<State>>, Query(q): Query<HashMap<String, String>>) -> Response {
    let Some(snapshot) = state.current() else {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "no valid config loaded yet" })))
            .into_response();
    };
    let body = match q.get("node_cluster") {
        Some(cluster) => render::view_json(&snapshot.view(cluster)),
        None => render::view_json(snapshot.all()),
    };
    Json(body).into_response()
}

async fn metrics(AxState(state): AxState<Arc<State>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], state.metrics.render())
        .into_response()
}
