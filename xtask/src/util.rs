//! Small helpers shared by the stages: where the project and its target
//! directory are.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

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

/// SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// What stands for "the kernel image" of a run on the running kernel: the
/// hash of /proc/version (release, build and compiler), which changes with
/// every kernel the host boots.
pub fn host_kernel_key() -> String {
    use sha2::{Digest, Sha256};
    let v = std::fs::read_to_string("/proc/version").unwrap_or_default();
    hex::encode(Sha256::digest(v.as_bytes()))
}
