//! The HTTP API (axum), versioned under `/v1`. Placeholder until the API lands.

use crate::state::AppState;

/// Builds the router for every route of the API.
pub fn router(state: AppState) -> axum::Router {
    axum::Router::new().with_state(state)
}
