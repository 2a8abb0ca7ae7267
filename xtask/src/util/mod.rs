//! Small helpers shared by the stages: where the project and its
//! directories are, program lookup, the /dev/kvm check, shell quoting and
//! text snippets; [`lines`] runs a child and reads both its pipes.

pub mod lines;

pub use lines::{spawn_lines, Spawned, Stream};

use std::ffi::OsStr;
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
pub fn kernel_work_dir() -> PathBuf {
    match std::env::var_os("XTASK_KERNEL_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => target_dir(),
    }
}

/// A regex compiled once per process, `cell` being the caller's static: in
/// the unoptimised build `cargo xtask` runs, compiling one costs about a
/// millisecond, so a pattern used per line or per patch file is compiled once.
pub fn static_regex(
    cell: &'static std::sync::OnceLock<regex::Regex>,
    pattern: &str,
) -> &'static regex::Regex {
    cell.get_or_init(|| regex::Regex::new(pattern).expect("static regex"))
}

/// The first 12 hex digits of a commit id, as git prints them.
pub fn short_hash(id: &str) -> &str {
    &id[..12.min(id.len())]
}

/// The last `n` lines of `text`.
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Single-quote a word for sh (words made only of safe characters stay bare).
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=+:,@%".contains(c))
    {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A command line as sh would read it back.
pub fn shell_words(words: &[String]) -> String {
    words
        .iter()
        .map(|w| sh_quote(w))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Look an executable up on the PATH value `path`, like `command -v`.
pub fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// [`find_program`] on this process's PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    find_program(name, &std::env::var_os("PATH")?)
}

/// The KVM device every stage checks.
pub const DEV_KVM: &str = "/dev/kvm";

/// Whether `dev` answers KVM ioctls: opened read-write and
/// KVM_GET_API_VERSION says 12. Ok names what was found; Err says why not.
pub fn kvm_status(dev: &Path) -> Result<String, String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev)
        .map_err(|e| format!("cannot open {}: {e}", dev.display()))?;
    // KVM_GET_API_VERSION = _IO(0xAE, 0x00)
    // SAFETY: an ioctl on a file we own; KVM insists the argument is 0.
    let version = unsafe { libc::ioctl(file.as_raw_fd(), 0xAE00, 0) };
    if version == 12 {
        Ok(format!("{}: KVM API version 12", dev.display()))
    } else {
        Err(format!(
            "{}: KVM_GET_API_VERSION returned {version} ({}), expected 12",
            dev.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// SHA-256 of a file's bytes, hex.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    sha256_file_with(path, |_| {})
}

/// [`sha256_file`], read in 1 MiB pieces, calling `progress` with each
/// piece's length (a download check drives its progress bar with it).
pub fn sha256_file_with(path: &Path, mut progress: impl FnMut(u64)) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use sha2::{Digest, Sha256};
    use std::io::Read as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        progress(n as u64);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// What stands for "the kernel image" of a run on the running kernel: the
/// hash of /proc/version (release, build and compiler), which changes with
/// every kernel the host boots.
/// CPU time (user + system) used so far by this process's waited-for
/// children and their descendants. The difference across a `make` is the
/// build's CPU cost, which on a shared machine varies far less with the
/// load than its wall time does.
pub fn children_cpu_time() -> std::time::Duration {
    // SAFETY: getrusage() only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) } != 0 {
        return std::time::Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec as u64)
            + std::time::Duration::from_micros(t.tv_usec as u64)
    };
    tv(u.ru_utime) + tv(u.ru_stime)
}

pub fn host_kernel_key() -> String {
    use sha2::{Digest, Sha256};
    let v = std::fs::read_to_string("/proc/version").unwrap_or_default();
    hex::encode(Sha256::digest(v.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_hashes_and_tails_cut_without_panicking() {
        assert_eq!(short_hash("0123456789abcdef0123"), "0123456789ab");
        assert_eq!(short_hash("abc"), "abc");
        assert_eq!(tail_lines("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail_lines("a", 5), "a");
    }

    #[test]
    fn shell_words_quote_only_what_needs_it() {
        let words = ["vng".to_string(), "--exec".into(), "sh /tmp/x y".into()];
        assert_eq!(shell_words(&words), "vng --exec 'sh /tmp/x y'");
    }

    #[test]
    fn programs_are_found_only_where_path_says() {
        let dir = tempfile::tempdir().unwrap();
        assert!(find_program("sh", dir.path().as_os_str()).is_none());
        assert!(find_program("sh", OsStr::new("/bin:/usr/bin")).is_some());
    }
}
