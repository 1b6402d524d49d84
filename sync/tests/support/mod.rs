//! Helpers shared by the sync integration tests (`mod support;` in each test file).

pub mod session;
