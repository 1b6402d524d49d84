//! Prometheus metrics of the agent. Placeholder until the API lands.

/// All metrics of the agent.
#[derive(Debug, Default)]
pub struct Metrics {}
