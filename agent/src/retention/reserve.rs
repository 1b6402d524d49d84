//! The disk reserve (`[retention] reserve`): gives the embedded store its reserve file in
//! the data directory (`kdelta_sync::Reserve`: created at start when there is room, released
//! when the disk fills up so that pruning and admin commands have room, held again before
//! writes resume) and says how a full disk is recovered from, for the log and `/readyz`.

use std::path::Path;

use kdelta_sync::{Reserve, Store};

use super::RetentionConfig;

/// The reserve's file in the data directory.
pub const RESERVE_FILE: &str = "reserve";

/// Gives `store` its reserve in `data_dir`, sized by `config` on that file system (logged;
/// a file system that cannot be measured gets no reserve, with a warning).
pub async fn attach_reserve(store: &Store, data_dir: &Path, config: &RetentionConfig) {
    let total = match kdelta_sensors::system::disk_usage(data_dir) {
        Ok(u) => u.total,
        Err(e) => {
            tracing::warn!(error = %e, "cannot measure the data directory's file system: no disk reserve");
            return;
        }
    };
    let bytes = config.reserve_bytes(total);
    let free = Box::new(|dir: &Path| {
        kdelta_sensors::system::disk_usage(dir)
            .map(|u| u.available)
            .map_err(std::io::Error::other)
    });
    store
        .attach_reserve(Reserve::new(data_dir.join(RESERVE_FILE), bytes, free))
        .await;
}

/// What a full disk comes to with this configuration, for the log and `/readyz`.
pub fn full_disk_remedy(config_has_budget: bool) -> &'static str {
    if config_has_budget {
        "the disk budget is pruning the oldest readings to make room (the released reserve gives the deletes room); writes resume by themselves"
    } else {
        "no disk budget is configured, so nothing is pruned to make room (everything is kept as configured): free space, or set [retention] max_disk / min_free"
    }
}
