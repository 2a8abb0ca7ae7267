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
