//! Signaling sessions over `/api/connect`.

use std::sync::Arc;

use axum::Router;

use crate::state::AppState;

/// Routes of the signaling endpoint.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
}
