//! `cargo xtask tree fetch`: a git repository whose first (only) commit is
//! a pristine upstream kernel source, tagged `v<version>`.
//!
//! Sources: Debian's orig tarball (default, checked against the .dsc), a
//! shallow clone of one ref of a git repository, or a local tarball.
//! Tarballs are imported by [`import::import_tarball`]: checked entry by
//! entry, written and packed in one pass. A repository made here carries
//! `.git/xtask-tree.toml` (version, source, tree) so a second fetch can
//! reuse it at once and a foreign directory is never overwritten.

mod bench;
pub mod debian;
pub mod import;
pub mod pack;

use std::fmt;
use std::fs;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

pub use bench::bench_import;
pub use import::{import_tarball, ImportRequest, Imported, UnsafeEntry};

#[derive(Debug, Subcommand)]
pub enum TreeCmd {
    /// Fetch (or reuse) an upstream tree and print its path.
    Fetch {
        /// Upstream version, e.g. 6.1.177 (default from Debian: the series' pinned
        /// base, series.toml's `[base].version`; without a series, the newest 6.1.y).
        #[arg(long)]
        version: Option<String>,
        /// debian | git:<url>#<ref> | tarball:<path>
        #[arg(long, default_value = "debian")]
        from: String,
        /// Where to put the repository (default: target/kernel/linux-<version>).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub fn run(cmd: TreeCmd) -> Result<ExitCode> {
    match cmd {
        TreeCmd::Fetch { version, from, dir } => {
            let source: Source = from.parse()?;
            // The newest 6.1.y in Debian's index is often not downloadable
            // yet (listed, 404); the pinned base is what the project needs.
            let version = match (version, &source) {
                (None, Source::Debian) => Some(default_version()?),
                (v, _) => v,
            };
            let fetched = fetch(&FetchRequest {
                source,
                version,
                dir,
                progress: true,
            })?;
            eprintln!(
                "{} linux {} ({})",
                if fetched.reused { "reused" } else { "imported" },
                fetched.version,
                fetched.source
            );
            eprintln!("commit {}", fetched.commit);
            eprintln!("tree {}", fetched.tree);
            let path = fetched.path.canonicalize().unwrap_or(fetched.path);
            println!("{}", path.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Where an upstream tree comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Debian,
    Git { url: String, reference: String },
    Tarball(PathBuf),
}

impl FromStr for Source {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Source> {
        let usage = "expected `debian`, `git:<url>#<ref>` or `tarball:<path>`";
        if s == "debian" {
            Ok(Source::Debian)
        } else if let Some(rest) = s.strip_prefix("git:") {
            match rest.rsplit_once('#') {
                Some((url, reference)) if !url.is_empty() && !reference.is_empty() => {
                    Ok(Source::Git { url: url.to_string(), reference: reference.to_string() })
                }
                _ => bail!("bad --from `{s}`: a git source needs a URL and a ref, as in git:https://host/linux.git#v6.1.176"),
            }
        } else if let Some(path) = s.strip_prefix("tarball:") {
            if path.is_empty() {
                bail!(
                    "bad --from `{s}`: tarball: needs a path, as in tarball:linux-6.1.176.tar.xz"
                );
            }
            Ok(Source::Tarball(PathBuf::from(path)))
        } else {
            bail!("unknown --from `{s}`: {usage}")
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Debian => write!(f, "debian"),
            Source::Git { url, reference } => write!(f, "git:{url}#{reference}"),
            Source::Tarball(path) => write!(f, "tarball:{}", path.display()),
        }
    }
}

/// Checks an upstream version string: MAJOR.MINOR or MAJOR.MINOR.PATCH.
pub fn validate_version(version: &str) -> Result<()> {
    let parts: Vec<&str> = version.split('.').collect();
    let ok = (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()));
    if !ok {
        bail!("bad version `{version}`: expected MAJOR.MINOR[.PATCH], e.g. 6.1.176");
    }
    Ok(())
}

pub struct FetchRequest {
    pub source: Source,
    pub version: Option<String>,
    /// Default: target/kernel/linux-<version>.
    pub dir: Option<PathBuf>,
    pub progress: bool,
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub path: PathBuf,
    pub version: String,
    pub source: String,
    pub commit: git2::Oid,
    pub tree: git2::Oid,
    /// True when an existing repository was reused.
    pub reused: bool,
}

/// What `tree fetch` records in `.git/xtask-tree.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    pub version: String,
    /// The `--from` value the tree came from (`debian`, `git:…`, `tarball:…`).
    pub source: String,
    /// `git rev-parse v<version>^{tree}` at import time.
    pub tree: String,
}

const META_FILE: &str = "xtask-tree.toml";

impl Meta {
    pub fn write(&self, git_dir: &Path) -> Result<()> {
        let path = git_dir.join(META_FILE);
        let text = toml::to_string(self).context("serialising tree metadata")?;
        fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn read(git_dir: &Path) -> Option<Meta> {
        toml::from_str(&fs::read_to_string(git_dir.join(META_FILE)).ok()?).ok()
    }
}

/// The tree id of tag `v<version>` in the repository at `repo`.
pub fn tag_tree(repo: &Path, version: &str) -> Result<git2::Oid> {
    let git = git2::Repository::open(repo)
        .with_context(|| format!("{} is not a git repository", repo.display()))?;
    let tag = format!("refs/tags/v{version}");
    let object = git
        .revparse_single(&tag)
        .with_context(|| format!("{} has no tag v{version}", repo.display()))?;
    let tree = object
        .peel_to_tree()
        .with_context(|| format!("tag v{version} in {} is not a commit", repo.display()))?;
    Ok(tree.id())
}

/// `target/kernel/`: downloads, apt state and imported trees.
pub fn fetch_dir() -> PathBuf {
    crate::util::kernel_work_dir().join("kernel")
}

fn default_dest(version: &str) -> PathBuf {
    fetch_dir().join(format!("linux-{version}"))
}

/// The series' pinned base: `[base].version` and `[base].trees.debian-orig`
/// of patches/guest_memfd/series.toml, when that file exists.
fn pinned_base() -> Result<Option<(String, Option<String>)>> {
    pinned(|t| Some(t.base))
}

/// The pinned upstream reference: `[reference].version` and
/// `[reference].trees.debian-orig` of patches/guest_memfd/series.toml.
pub fn pinned_reference() -> Result<Option<(String, Option<String>)>> {
    pinned(|t| t.reference)
}

/// `version` and `trees.debian-orig` of the table `pick` takes from the
/// default series' series.toml; None when there is no such file or table.
fn pinned(
    pick: fn(crate::series::SeriesToml) -> Option<crate::series::model::Base>,
) -> Result<Option<(String, Option<String>)>> {
    let dir = crate::util::patches_dir().join(crate::series::DEFAULT_SERIES);
    let path = dir.join(crate::series::model::SERIES_TOML);
    if !path.exists() {
        return Ok(None);
    }
    let toml = crate::series::SeriesToml::load(&path)?;
    let Some(pin) = pick(toml) else {
        return Ok(None);
    };
    validate_version(&pin.version).with_context(|| format!("in {}", path.display()))?;
    let tree = pin
        .trees
        .get("debian-orig")
        .filter(|t| t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .cloned();
    Ok(Some((pin.version, tree)))
}

/// The tree series.toml expects for a Debian import of `version`, if known.
fn expected_debian_tree(version: &str) -> Result<Option<String>> {
    let base = pinned_base()?.and_then(|(v, tree)| if v == version { tree } else { None });
    let reference =
        pinned_reference()?.and_then(|(v, tree)| if v == version { tree } else { None });
    Ok(base.or(reference))
}

/// Creates the parent of `dest` and returns it.
pub(crate) fn dest_parent(dest: &Path) -> Result<PathBuf> {
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    Ok(parent)
}

/// A scratch directory `.xtask-<what>-<pid>-XXXX` in `parent`, removed
/// when dropped. An import killed half-way (Ctrl-C, OOM) cannot clean up
/// after itself and leaves up to 2.6 GB behind, so this first removes the
/// scratch directories of `what` whose process is gone.
pub(crate) fn scratch_dir(parent: &Path, what: &str) -> Result<tempfile::TempDir> {
    let prefix = format!(".xtask-{what}-");
    if let Ok(entries) = fs::read_dir(parent) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
                continue;
            };
            if pid <= 0 || process_alive(pid) {
                continue;
            }
            let path = entry.path();
            eprintln!(
                "removing {} (left by an interrupted run, process {pid})",
                path.display()
            );
            fs::remove_dir_all(&path)
                .with_context(|| format!("removing the stale {}", path.display()))?;
        }
    }
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))
}

fn process_alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
}

/// Renames a finished temporary directory to `dest` (which must not exist,
/// or be an empty directory).
pub(crate) fn move_into_place(tmp: tempfile::TempDir, dest: &Path) -> Result<()> {
    if dest.exists() && !is_empty_dir(dest) {
        bail!(
            "{} appeared while importing; refusing to overwrite it",
            dest.display()
        );
    }
    let path = tmp.keep();
    if let Err(err) = fs::rename(&path, dest) {
        let _ = fs::remove_dir_all(&path);
        return Err(err)
            .with_context(|| format!("moving the new repository to {}", dest.display()));
    }
    Ok(())
}

fn is_empty_dir(path: &Path) -> bool {
    fs::read_dir(path)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false)
}

pub(crate) fn progress_bar(enabled: bool, total: u64, message: &str) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    if !io::stderr().is_terminal() {
        // CI logs: indicatif draws nothing there; one line per step.
        eprintln!("{message} ({} MB) ...", total >> 20);
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>18} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

pub(crate) fn spinner(message: &str) -> ProgressBar {
    if !io::stderr().is_terminal() {
        eprintln!("{message} ...");
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// An existing directory at the destination: ours (reusable) or refused.
fn check_existing(
    dest: &Path,
    version: &str,
    source: &str,
    expected_tree: Option<&str>,
) -> Result<Option<Fetched>> {
    if !dest.exists() || is_empty_dir(dest) {
        return Ok(None);
    }
    let refuse = |why: String| {
        anyhow!(
            "{} exists and {why}; refusing to touch it (remove it or pass another --dir)",
            dest.display()
        )
    };
    let repo = git2::Repository::open(dest)
        .map_err(|_| refuse("is not a repository made by `cargo xtask tree fetch`".into()))?;
    let meta = Meta::read(repo.path())
        .ok_or_else(|| refuse("is not a repository made by `cargo xtask tree fetch`".into()))?;
    if meta.version != version {
        return Err(refuse(format!(
            "holds linux {}, not {version}",
            meta.version
        )));
    }
    if meta.source != source {
        return Err(refuse(format!(
            "holds linux {version} from {}, not from {source}",
            meta.source
        )));
    }
    let tree = tag_tree(dest, version).map_err(|e| refuse(format!("is damaged ({e:#})")))?;
    if tree.to_string() != meta.tree {
        return Err(refuse(format!(
            "has tag v{version} on tree {tree}, but the import recorded {}",
            meta.tree
        )));
    }
    if let Some(expected) = expected_tree {
        if meta.tree != expected {
            return Err(refuse(format!(
                "has tree {} but series.toml expects {expected}",
                meta.tree
            )));
        }
    }
    let commit = repo
        .revparse_single(&format!("refs/tags/v{version}"))?
        .peel_to_commit()?
        .id();
    Ok(Some(Fetched {
        path: dest.to_path_buf(),
        version: version.to_string(),
        source: meta.source,
        commit,
        tree,
        reused: true,
    }))
}

/// Fetches (or reuses) the tree described by `req`.
pub fn fetch(req: &FetchRequest) -> Result<Fetched> {
    if let Some(v) = &req.version {
        validate_version(v)?;
    }
    match &req.source {
        Source::Debian => fetch_debian(req),
        Source::Tarball(path) => fetch_tarball(req, path),
        Source::Git { url, reference } => fetch_git(req, url, reference),
    }
}

fn fetch_debian(req: &FetchRequest) -> Result<Fetched> {
    let root = fetch_dir();
    let version = match &req.version {
        Some(v) => v.clone(),
        None => debian::newest_upstream(&root.join("apt"))?,
    };
    let dest = req.dir.clone().unwrap_or_else(|| default_dest(&version));
    let source = Source::Debian.to_string();
    let expected = expected_debian_tree(&version)?;
    if let Some(found) = check_existing(&dest, &version, &source, expected.as_deref())? {
        return Ok(found);
    }
    let apt_root = root.join("apt");
    let tarball = debian::ensure_tarball(&apt_root, &version, req.progress)?;
    let origin = format!(
        "Debian linux {} orig tarball {} (sha256 {})",
        tarball.debver,
        tarball
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        tarball.sha256
    );
    let imported = import_tarball(&ImportRequest {
        tarball: &tarball.path,
        dest: &dest,
        version: Some(&version),
        origin,
        source,
        compression: import_compression()?,
        progress: req.progress,
        expected_tree: expected,
    })?;
    Ok(fetched_from(imported, Source::Debian.to_string()))
}

/// zlib level of the pack written by an import. 0 (stored) keeps the
/// import within 1.5x of `tar x` on a 2-core machine (`bench import`:
/// 1.09x on tmpfs, 1.17x on ext4); the packs are then as big as the tree
/// (1.3 GB for 6.1). Level 1 makes them 4x smaller for about 8 s more
/// CPU; `git gc` later compresses them too.
pub const DEFAULT_COMPRESSION: u32 = 0;

/// The pack's zlib level: `XTASK_IMPORT_COMPRESSION` (0-9) when set, else
/// [`DEFAULT_COMPRESSION`].
pub fn import_compression() -> Result<u32> {
    match std::env::var("XTASK_IMPORT_COMPRESSION") {
        Err(_) => Ok(DEFAULT_COMPRESSION),
        Ok(v) => match v.parse::<u32>() {
            Ok(level) if level <= 9 => Ok(level),
            _ => bail!("XTASK_IMPORT_COMPRESSION must be a zlib level 0-9, not `{v}`"),
        },
    }
}

fn fetched_from(imported: Imported, source: String) -> Fetched {
    Fetched {
        path: imported.path,
        version: imported.version,
        source,
        commit: imported.commit,
        tree: imported.tree,
        reused: false,
    }
}

fn fetch_tarball(req: &FetchRequest, path: &Path) -> Result<Fetched> {
    if !path.is_file() {
        bail!(
            "tarball {} does not exist (or is not a file)",
            path.display()
        );
    }
    let version = match &req.version {
        Some(v) => v.clone(),
        None => import::peek_version(path)?,
    };
    let dest = req.dir.clone().unwrap_or_else(|| default_dest(&version));
    let canonical = path
        .canonicalize()
        .with_context(|| format!("resolving {}", path.display()))?;
    let source = Source::Tarball(canonical).to_string();
    if let Some(found) = check_existing(&dest, &version, &source, None)? {
        return Ok(found);
    }
    let imported = import_tarball(&ImportRequest {
        tarball: path,
        dest: &dest,
        version: Some(&version),
        origin: source.clone(),
        source: source.clone(),
        compression: import_compression()?,
        progress: req.progress,
        expected_tree: None,
    })?;
    Ok(fetched_from(imported, source))
}

/// `v6.1.176` or `6.1.176` as a ref name gives the version 6.1.176.
fn version_from_ref(reference: &str) -> Option<String> {
    let v = reference
        .rsplit('/')
        .next()?
        .strip_prefix('v')
        .unwrap_or(reference);
    validate_version(v).ok().map(|_| v.to_string())
}

/// VERSION.PATCHLEVEL.SUBLEVEL from a kernel Makefile.
pub fn version_from_makefile(tree: &Path) -> Result<String> {
    let path = tree.join("Makefile");
    let text = fs::read_to_string(&path)
        .with_context(|| format!("reading {} to find the version", path.display()))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|r| r.trim_start().strip_prefix('='))
            })
            .map(|v| v.trim().to_string())
    };
    match (field("VERSION"), field("PATCHLEVEL"), field("SUBLEVEL")) {
        (Some(v), Some(p), Some(s)) => {
            let version = if s.is_empty() || s == "0" {
                format!("{v}.{p}")
            } else {
                format!("{v}.{p}.{s}")
            };
            validate_version(&version).with_context(|| format!("in {}", path.display()))?;
            Ok(version)
        }
        _ => bail!(
            "{} has no VERSION/PATCHLEVEL/SUBLEVEL; pass --version",
            path.display()
        ),
    }
}

fn fetch_git(req: &FetchRequest, url: &str, reference: &str) -> Result<Fetched> {
    let source = Source::Git {
        url: url.to_string(),
        reference: reference.to_string(),
    }
    .to_string();
    let known = req.version.clone().or_else(|| version_from_ref(reference));
    if let Some(version) = &known {
        let dest = req.dir.clone().unwrap_or_else(|| default_dest(version));
        if let Some(found) = check_existing(&dest, version, &source, None)? {
            return Ok(found);
        }
    }
    // Clone next to where the repository will end up.
    let parent_of = match (&req.dir, &known) {
        (Some(dir), _) => dest_parent(dir)?,
        (None, Some(v)) => dest_parent(&default_dest(v))?,
        (None, None) => {
            let k = fetch_dir();
            fs::create_dir_all(&k).with_context(|| format!("creating {}", k.display()))?;
            k
        }
    };
    let tmp = scratch_dir(&parent_of, "clone")?;
    let work = tmp.path().join("repo");
    let sh = Shell::new()?;
    let bar = if req.progress {
        spinner(&format!("git clone --depth 1 {url} ({reference})"))
    } else {
        ProgressBar::hidden()
    };
    let out = cmd!(
        sh,
        "git clone --quiet --depth 1 --branch {reference} {url} {work}"
    )
    .quiet()
    .ignore_status()
    .output()
    .context("running git clone (is git installed?)")?;
    bar.finish_and_clear();
    if !out.status.success() {
        bail!(
            "git clone of `{reference}` from {url} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    let version = match known {
        Some(v) => v,
        None => version_from_makefile(&work)?,
    };
    let dest = req.dir.clone().unwrap_or_else(|| default_dest(&version));
    if let Some(found) = check_existing(&dest, &version, &source, None)? {
        return Ok(found);
    }
    let repo = git2::Repository::open(&work)
        .with_context(|| format!("opening the clone in {}", work.display()))?;
    let head = repo.head()?.peel_to_commit()?;
    let tag = format!("refs/tags/v{version}");
    match repo.revparse_single(&tag) {
        Ok(object) => {
            let tagged = object.peel_to_commit()?.id();
            if tagged != head.id() {
                bail!("the clone's tag v{version} is commit {tagged}, but `{reference}` is {}; pass the tag as the ref", head.id());
            }
        }
        Err(_) => {
            repo.reference(&tag, head.id(), false, "xtask tree fetch")?;
        }
    }
    let tree = head.tree_id();
    let commit = head.id();
    Meta {
        version: version.clone(),
        source: source.clone(),
        tree: tree.to_string(),
    }
    .write(repo.path())?;
    drop(head);
    drop(repo);
    if dest.exists() && !is_empty_dir(&dest) {
        bail!(
            "{} appeared while cloning; refusing to overwrite it",
            dest.display()
        );
    }
    fs::rename(&work, &dest).with_context(|| format!("moving the clone to {}", dest.display()))?;
    Ok(Fetched {
        path: dest,
        version,
        source,
        commit,
        tree,
        reused: false,
    })
}

/// The version `ensure_default_tree` uses: series.toml's `[base].version`,
/// else the newest 6.1.y Debian offers.
pub fn default_version() -> Result<String> {
    match pinned_base()? {
        Some((version, _)) => Ok(version),
        None => debian::newest_upstream(&fetch_dir().join("apt")),
    }
}

/// The tree `apply`/`build-kernel`/`test` use when none is given: the
/// pinned version fetched (from cache when present) under target/kernel/.
pub fn ensure_default_tree() -> Result<PathBuf> {
    let version = default_version()?;
    let fetched = fetch(&FetchRequest {
        source: Source::Debian,
        version: Some(version),
        dir: None,
        progress: true,
    })?;
    Ok(fetched.path)
}
