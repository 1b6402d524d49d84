//! Records when this binary was built, for the clock's plausibility floor (`src/clock.rs`):
//! a wall clock reading earlier than the build cannot be right. `SOURCE_DATE_EPOCH`
//! (seconds, reproducible builds) wins when set; otherwise the time this script ran.
//!
//! The script reruns only when it or `SOURCE_DATE_EPOCH` changes, so it forces no rebuild;
//! the recorded time may then be older than the binary, which only lowers the floor.

use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    let ms = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => match s.trim().parse::<u64>() {
            Ok(secs) => secs.saturating_mul(1000),
            Err(e) => panic!("SOURCE_DATE_EPOCH={s:?} is not whole seconds since 1970: {e}"),
        },
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    // Not `KDELTA_*`: cargo also exports this variable to `cargo run`/`cargo test`
    // processes, and that prefix is agent configuration (an unknown key there).
    println!("cargo:rustc-env=BUILD_TIME_MS_OF_KDELTA={ms}");
}
