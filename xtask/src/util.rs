//! Small helpers shared by the stages: where the project and its target
//! directory are.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level Cargo.toml).
pub fn project_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// `target/` of the workspace, honouring CARGO_TARGET_DIR.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => project_root().join("target"),
    }
}

/// `patches/` of the workspace.
pub fn patches_dir() -> PathBuf {
    project_root().join("patches")
}

/// `kconfigs/` of the workspace.
pub fn kconfigs_dir() -> PathBuf {
    project_root().join("kconfigs")
}

/// Where fetched kernel trees (`kernel/`) and kernel build directories
/// (`kbuild/`) live: `$XTASK_KERNEL_DIR` when set, so that several clones of
/// this project (CI runs a fresh one each time) share one fetched tree and
/// incremental builds; otherwise `target/`.
pub fn kernel_dir() -> PathBuf {
    match std::env::var_os("XTASK_KERNEL_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir(),
    }
}
