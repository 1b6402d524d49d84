//! Integration tests of the sources this crate builds from configuration: `sysfs` and
//! `system` against fixture trees (and `system` against the real host), the simulator, and
//! the `[[sources]]` config → factory path the agent uses.

mod harness;

mod config;
mod sim;
mod sysfs;
mod system;
