//! Debian's upstream ("orig") tarball of Linux, fetched with apt through a
//! private sources list and private state/cache directories under
//! `target/kernel/apt/` (the system's apt configuration is only read, for
//! the archive keys, never changed), and checked against the .dsc.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

/// The suites and component we take Linux 6.1 from: bookworm's point
/// release and its security updates (which carry the newer 6.1.y).
pub const SOURCES_LIST: &str = "deb-src http://deb.debian.org/debian bookworm main\n\
     deb-src http://deb.debian.org/debian-security bookworm-security main\n";
/// Where newer kernels (the 6.12 LTS reference, 6.18) come from: trixie
/// carries 6.12.y, the backports suites carry 6.12.y for bookworm and newer
/// kernels for trixie. Kept apart from [`SOURCES_LIST`] (own lists under
/// `apt/newer/`) so that choosing the newest 6.1.y never sees them.
pub const NEWER_SOURCES_LIST: &str = "\
deb-src http://deb.debian.org/debian trixie main
deb-src http://deb.debian.org/debian bookworm-backports main
deb-src http://deb.debian.org/debian trixie-backports main
";

/// The sources list for `upstream`, and the directory (under the apt
/// root) holding its private state.
pub fn sources_for(upstream: &str) -> (&'static str, &'static str) {
    if upstream == "6.1" || upstream.starts_with("6.1.") {
        ("", SOURCES_LIST)
    } else {
        ("newer", NEWER_SOURCES_LIST)
    }
}
/// Package lists older than this are refreshed before choosing a version.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// Private apt directories under `root`.
pub struct Apt {
    root: PathBuf,
    /// The sources list was (re)written: the lists must be refreshed.
    changed: bool,
}

impl Apt {
    /// Apt state for bookworm main (Linux 6.1.y) under `root`.
    pub fn new(root: &Path) -> Result<Apt> {
        Apt::with_sources(root, SOURCES_LIST)
    }

    /// Apt state under `root` for the given sources list.
    pub fn with_sources(root: &Path, sources: &str) -> Result<Apt> {
        for dir in ["etc", "lists/partial", "cache/archives/partial"] {
            let dir = root.join(dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let list = root.join("etc/sources.list");
        let changed = fs::read_to_string(&list).ok().as_deref() != Some(sources);
        if changed {
            fs::write(&list, sources).with_context(|| format!("writing {}", list.display()))?;
        }
        Ok(Apt {
            root: root.to_path_buf(),
            changed,
        })
    }

    fn options(&self) -> Vec<String> {
        let r = &self.root;
        [
            format!(
                "Dir::Etc::sourcelist={}",
                r.join("etc/sources.list").display()
            ),
            "Dir::Etc::sourceparts=-".to_string(),
            format!("Dir::State::Lists={}", r.join("lists").display()),
            format!("Dir::Cache={}", r.join("cache").display()),
            // A mirror that stops answering fails the step, never hangs it.
            "Acquire::http::Timeout=30".to_string(),
            "Acquire::Retries=1".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    /// Runs an apt command quietly; its output is shown only on failure.
    fn run(&self, sh: &Shell, args: &[String]) -> Result<String> {
        let opts = self.options();
        let program = &args[0];
        let rest = &args[1..];
        let out = cmd!(sh, "{program} {opts...} {rest...}")
            .quiet()
            .ignore_status()
            .output()
            .with_context(|| format!("running {program} (is apt installed?)"))?;
        if !out.status.success() {
            bail!(
                "`{program} {}` failed ({}):\n{}{}",
                rest.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn lists_fresh(&self) -> bool {
        if self.changed {
            return false;
        }
        let Ok(dir) = fs::read_dir(self.root.join("lists")) else {
            return false;
        };
        dir.flatten().any(|e| {
            e.file_name().to_string_lossy().contains("Sources")
                && e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age < LISTS_MAX_AGE)
        })
    }

    /// `apt-get update` on the private lists, unless they are recent.
    pub fn update_if_stale(&self, sh: &Shell) -> Result<()> {
        if self.lists_fresh() {
            return Ok(());
        }
        let bar = super::spinner("apt-get update (Debian source lists)");
        self.run(sh, &["apt-get".into(), "update".into()])?;
        bar.finish_and_clear();
        Ok(())
    }

    /// Every Debian version of the `linux` source package the lists offer.
    pub fn source_versions(&self, sh: &Shell) -> Result<Vec<String>> {
        let out = self.run(sh, &["apt-cache".into(), "showsrc".into(), "linux".into()])?;
        Ok(parse_showsrc(&out))
    }

    /// Downloads .dsc, orig and debian tarballs of `linux=<debver>` to `dir`.
    /// A file the archive no longer (or not yet) serves is a
    /// [`NotDownloadable`] error.
    pub fn download(&self, sh: &Shell, debver: &str, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let _cd = sh.push_dir(dir);
        let bar = super::spinner(&format!(
            "downloading linux {debver} sources from deb.debian.org"
        ));
        let result = self.run(
            sh,
            &[
                "apt-get".into(),
                "source".into(),
                "--download-only".into(),
                format!("linux={debver}"),
            ],
        );
        bar.finish_and_clear();
        match result {
            Ok(_) => Ok(()),
            Err(err) => {
                let text = format!("{err:#}");
                match text.lines().find(|l| l.contains("404")) {
                    Some(line) => Err(NotDownloadable {
                        debver: debver.to_string(),
                        detail: line.trim().to_string(),
                        cached: Vec::new(),
                        listed: Vec::new(),
                    }
                    .into()),
                    None => Err(err),
                }
            }
        }
    }
}

/// `Version:` of every `Package: linux` stanza of `apt-cache showsrc`.
pub fn parse_showsrc(text: &str) -> Vec<String> {
    let mut versions = Vec::new();
    for stanza in text.split("\n\n") {
        let mut package = None;
        let mut version = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                package = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim());
            }
        }
        if let (Some("linux"), Some(v)) = (package, version) {
            if !versions.iter().any(|x| x == v) {
                versions.push(v.to_string());
            }
        }
    }
    versions
}

/// The upstream part of a Debian version: `6.1.176-1` gives `6.1.176`.
pub fn upstream_of(debver: &str) -> &str {
    let no_epoch = debver.split_once(':').map_or(debver, |(_, v)| v);
    no_epoch.rsplit_once('-').map_or(no_epoch, |(u, _)| u)
}

fn numeric_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The newest version whose upstream part is `series` (e.g. "6.1") or
/// starts with `series.`.
pub fn newest_in_series<'v>(versions: &'v [String], series: &str) -> Option<&'v String> {
    versions
        .iter()
        .filter(|v| {
            let up = upstream_of(v);
            up == series || up.starts_with(&format!("{series}."))
        })
        .max_by_key(|v| numeric_key(v))
}

/// One file listed in a .dsc's Checksums-Sha256 field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DscFile {
    pub sha256: String,
    pub size: u64,
    pub name: String,
}

/// Parses the Checksums-Sha256 field of a .dsc (signed or not).
pub fn dsc_sha256(text: &str) -> Vec<DscFile> {
    let mut files = Vec::new();
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with("Checksums-Sha256:") {
            inside = true;
            continue;
        }
        if inside {
            if !line.starts_with(' ') {
                break;
            }
            let mut parts = line.split_whitespace();
            if let (Some(sum), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
            {
                if let Ok(size) = size.parse() {
                    files.push(DscFile {
                        sha256: sum.to_ascii_lowercase(),
                        size,
                        name: name.to_string(),
                    });
                }
            }
        }
    }
    files
}

/// The orig tarball named by a .dsc.
pub fn orig_of(dsc: &Path) -> Result<DscFile> {
    let text = fs::read_to_string(dsc).with_context(|| format!("reading {}", dsc.display()))?;
    dsc_sha256(&text)
        .into_iter()
        .find(|f| f.name.contains(".orig.tar."))
        .with_context(|| format!("{} lists no .orig.tar.* in Checksums-Sha256", dsc.display()))
}

/// Checks `file` (in the .dsc's directory, named as in the .dsc) against
/// the .dsc's Checksums-Sha256.
pub fn verify_against_dsc(dsc: &Path, file: &Path, progress: bool) -> Result<()> {
    let text = fs::read_to_string(dsc).with_context(|| format!("reading {}", dsc.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(entry) = dsc_sha256(&text).into_iter().find(|f| f.name == name) else {
        bail!(
            "{} has no Checksums-Sha256 entry for `{name}`",
            dsc.display()
        );
    };
    let size = fs::metadata(file)
        .with_context(|| format!("reading {}", file.display()))?
        .len();
    let bar = super::progress_bar(progress, size, "verify sha256");
    let found = crate::util::sha256_file_with(file, |n| bar.inc(n))?;
    bar.finish_and_clear();
    if found != entry.sha256 {
        return Err(ChecksumMismatch {
            file: name,
            expected: entry.sha256,
            found,
        }
        .into());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
#[error("checksum mismatch for `{file}`: the .dsc says sha256 {expected}, the file has {found}; delete it to download it again")]
pub struct ChecksumMismatch {
    pub file: String,
    pub expected: String,
    pub found: String,
}

/// The index lists a version whose files the archive does not serve.
#[derive(Debug, thiserror::Error)]
#[error(
    "linux {debver} is listed by Debian's index but cannot be downloaded ({detail}). \
     Versions that can: {} (already downloaded here); the index also lists {} \
     (newer entries may 404 the same way). Pick one with --version, or use \
     --from git:<url>#<ref> or --from tarball:<path>",
    or_none(cached),
    or_none(listed)
)]
pub struct NotDownloadable {
    pub debver: String,
    pub detail: String,
    pub cached: Vec<String>,
    pub listed: Vec<String>,
}

fn or_none(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// Upstream versions whose verified-looking orig tarball and .dsc are in
/// `dir`, oldest first.
pub fn cached_versions(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    let debver = name.strip_prefix("linux_")?.strip_suffix(".dsc")?;
                    let orig = orig_of(&e.path()).ok()?;
                    dir.join(orig.name)
                        .is_file()
                        .then(|| upstream_of(debver).to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort_by_key(|x| numeric_key(x));
    v.dedup();
    v
}

/// A verified orig tarball in the download cache.
pub struct Tarball {
    pub path: PathBuf,
    pub debver: String,
    pub sha256: String,
}

/// The downloaded .dsc of `upstream` already in `dir`, if any (newest
/// Debian revision first).
fn cached_dsc(dir: &Path, upstream: &str) -> Option<(PathBuf, String)> {
    let prefix = format!("linux_{upstream}-");
    let mut found: Vec<(PathBuf, String)> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let debver = name
                .strip_prefix("linux_")?
                .strip_suffix(".dsc")?
                .to_string();
            name.starts_with(&prefix).then(|| (e.path(), debver))
        })
        .collect();
    found.sort_by_key(|(_, v)| numeric_key(v));
    found.pop()
}

/// The verified orig tarball of `upstream` (e.g. 6.1.176): from the
/// download cache under `root/downloads`, else downloaded with apt from the
/// suites [`sources_for`] names.
pub fn ensure_tarball(root: &Path, upstream: &str, progress: bool) -> Result<Tarball> {
    let downloads = root.join("downloads");
    let sh = Shell::new()?;
    let (dsc, debver) = match cached_dsc(&downloads, upstream) {
        Some(found)
            if orig_of(&found.0)
                .map(|o| downloads.join(o.name).is_file())
                .unwrap_or(false) =>
        {
            found
        }
        _ => {
            let (sub, sources) = sources_for(upstream);
            let apt = Apt::with_sources(&root.join(sub), sources)?;
            apt.update_if_stale(&sh)?;
            let versions = apt.source_versions(&sh)?;
            let suites: Vec<&str> = sources
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace().skip(2);
                    w.next()
                })
                .collect();
            let Some(debver) = versions
                .iter()
                .filter(|v| upstream_of(v) == upstream)
                .max_by_key(|v| numeric_key(v))
            else {
                bail!(
                    "Debian ({}) does not offer linux {upstream} (it offers {}); \
                     use --from git:<url>#<ref> or --from tarball:<path>",
                    suites.join(", "),
                    if versions.is_empty() {
                        "none".to_string()
                    } else {
                        versions.join(", ")
                    }
                );
            };
            if let Err(err) = apt.download(&sh, debver, &downloads) {
                return Err(match err.downcast::<NotDownloadable>() {
                    Ok(mut nd) => {
                        nd.cached = cached_versions(&downloads);
                        let mut listed: Vec<String> = versions
                            .iter()
                            .map(|v| upstream_of(v).to_string())
                            .collect();
                        listed.sort_by_key(|x| numeric_key(x));
                        listed.dedup();
                        let series = |v: &str| v.split('.').take(2).collect::<Vec<_>>().join(".");
                        listed.retain(|v| {
                            v != upstream && !nd.cached.contains(v) && series(v) == series(upstream)
                        });
                        nd.listed = listed;
                        nd.into()
                    }
                    Err(other) => other,
                });
            }
            cached_dsc(&downloads, upstream).with_context(|| {
                format!(
                    "apt-get source did not leave a linux_{upstream}-*.dsc in {}",
                    downloads.display()
                )
            })?
        }
    };
    let orig = orig_of(&dsc)?;
    let path = downloads.join(&orig.name);
    verify_against_dsc(&dsc, &path, progress)?;
    Ok(Tarball {
        path,
        debver,
        sha256: orig.sha256,
    })
}

/// The newest 6.1.y that Debian bookworm main offers (refreshing the
/// private package lists when older than a day).
pub fn newest_upstream(root: &Path) -> Result<String> {
    let sh = Shell::new()?;
    let apt = Apt::new(root)?;
    apt.update_if_stale(&sh)?;
    let versions = apt.source_versions(&sh)?;
    let newest = newest_in_series(&versions, "6.1").with_context(|| {
        format!(
            "Debian bookworm main offers no linux 6.1.y (found: {})",
            versions.join(", ")
        )
    })?;
    Ok(upstream_of(newest).to_string())
}
