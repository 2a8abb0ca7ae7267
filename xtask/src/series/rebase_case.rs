//! Which version of the series and which pair of bases `bench rebase`
//! measures.
//!
//! Only a clean rebase can be timed against `git rebase`: at a conflict
//! both stop, and what each had done by then is not the same work. The
//! series in `patches/` is pinned to the newest release that downloads,
//! and every other downloadable release may conflict with it; the earlier
//! versions of the series, read from the project's git history into a
//! scratch directory (never into `patches/`), were pinned to other
//! releases. So the default case is the newest version that rebases
//! cleanly onto the base of another version; `--to` asks for one target,
//! which must rebase cleanly.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use super::model::{Series, SeriesToml, SERIES_TOML};
use super::rebase::{self, Outcome, PatchReport};

/// One version of the series and where its files are.
#[derive(Debug, Clone)]
pub struct SeriesVersion {
    pub version: u32,
    /// `[base] version` of that series.toml.
    pub base: String,
    /// The project commit it was read from; None: the series directory as it is now.
    pub commit: Option<String>,
    pub dir: PathBuf,
}

impl SeriesVersion {
    /// E.g. "v3 (on 6.1.177, from commit 3388369e)".
    pub fn describe(&self) -> String {
        let from = match &self.commit {
            Some(c) => format!("from commit {}", &c[..c.len().min(12)]),
            None => "as in the series directory".to_string(),
        };
        format!("v{} (on {}, {from})", self.version, self.base)
    }
}

/// The series as it is in `series_dir` now.
pub fn current(series_dir: &Path) -> Result<SeriesVersion> {
    let toml = SeriesToml::load(&series_dir.join(SERIES_TOML))?;
    Ok(SeriesVersion {
        version: toml.version,
        base: toml.base.version,
        commit: None,
        dir: series_dir.to_path_buf(),
    })
}

/// Every version of the series, newest first: the one in `series_dir` now,
/// and each other version as the last commit of `project`'s history that
/// has it, its files copied into `scratch/v<N>/<name>/`.
pub fn versions(project: &Path, series_dir: &Path, scratch: &Path) -> Result<Vec<SeriesVersion>> {
    let now = current(series_dir)?;
    let rel = series_dir
        .canonicalize()?
        .strip_prefix(project.canonicalize()?)
        .map(Path::to_path_buf)
        .with_context(|| {
            format!(
                "{} is not inside the project {}, so its history cannot be read",
                series_dir.display(),
                project.display()
            )
        })?;
    let mut found = vec![now];
    for (commit, toml) in committed_versions(project, &rel)? {
        if found.iter().any(|v| v.version == toml.version) {
            continue;
        }
        let dir = scratch.join(format!("v{}", toml.version)).join(&toml.name);
        copy_committed_dir(project, &commit, &rel, &dir)?;
        found.push(SeriesVersion {
            version: toml.version,
            base: toml.base.version,
            commit: Some(commit),
            dir,
        });
    }
    found.sort_by_key(|v| std::cmp::Reverse(v.version));
    Ok(found)
}

/// Each commit that changed `rel/series.toml`, newest first, with that file.
fn committed_versions(project: &Path, rel: &Path) -> Result<Vec<(String, SeriesToml)>> {
    let sh = Shell::new()?;
    let file = rel.join(SERIES_TOML);
    let log = cmd!(sh, "git -C {project} log --format=%H -- {file}")
        .quiet()
        .ignore_stderr()
        .read()
        .with_context(|| {
            format!(
                "reading the earlier versions of the series needs the project's git history \
                 (`git log -- {}` in {} failed); pass --to VERSION to bench the series as it is",
                file.display(),
                project.display()
            )
        })?;
    let mut out = Vec::new();
    for commit in log.lines() {
        let spec = format!("{commit}:{}", file.display());
        // A commit that deleted or broke the file holds no version to bench.
        let Ok(text) = cmd!(sh, "git -C {project} show {spec}")
            .quiet()
            .ignore_stderr()
            .read()
        else {
            continue;
        };
        if let Ok(toml) = SeriesToml::parse(&text, &file) {
            out.push((commit.to_string(), toml));
        }
    }
    Ok(out)
}

/// Writes the files of directory `rel` at `commit` into `dest`.
fn copy_committed_dir(project: &Path, commit: &str, rel: &Path, dest: &Path) -> Result<()> {
    let repo = git2::Repository::open(project)?;
    let tree = repo
        .find_commit(git2::Oid::from_str(commit)?)?
        .tree()?
        .get_path(rel)?
        .to_object(&repo)?
        .peel_to_tree()?;
    std::fs::create_dir_all(dest)?;
    for entry in tree.iter() {
        if entry.kind() != Some(git2::ObjectType::Blob) {
            continue;
        }
        let name = entry.name().context("a file name that is not UTF-8")?;
        let blob = repo.find_blob(entry.id())?;
        std::fs::write(dest.join(name), blob.content())
            .with_context(|| format!("writing {}", dest.join(name).display()))?;
    }
    Ok(())
}

/// The targets worth trying for `v`: the bases of the other versions, newest release first.
pub fn targets(versions: &[SeriesVersion], v: &SeriesVersion) -> Vec<String> {
    let mut out: Vec<String> = versions
        .iter()
        .map(|o| o.base.clone())
        .filter(|b| *b != v.base)
        .collect();
    out.sort_by_key(|b| std::cmp::Reverse(release_key(b)));
    out.dedup();
    out
}

/// "6.1.177" as numbers, to order releases.
fn release_key(version: &str) -> Vec<u64> {
    version.split('.').map(|p| p.parse().unwrap_or(0)).collect()
}

/// A bare clone of `tree` holding only tag `v<to>`'s history: scratch room
/// for a rebase, so the imported tree gets no objects or branches.
pub fn bare_copy(tree: &Path, to: &str, dest: &Path) -> Result<()> {
    let sh = Shell::new()?;
    let commit = git2::Repository::open(tree)?
        .revparse_single(&format!("refs/tags/v{to}"))
        .and_then(|o| o.peel_to_commit())
        .map_err(|_| anyhow::anyhow!("{} has no tag v{to}", tree.display()))?
        .id()
        .to_string();
    cmd!(
        sh,
        "git clone -q --local --bare --no-tags --single-branch {tree} {dest}"
    )
    .quiet()
    .run()?;
    cmd!(sh, "git -C {dest} tag v{to} {commit}").quiet().run()?;
    Ok(())
}

/// Where the series would stop on `to`: None when every patch applies
/// (as is, with offsets, three-way, or dropped), else which patch
/// conflicts where. Replayed in a scratch copy under `scratch`.
pub fn first_conflict(
    series: &Series,
    old: &Path,
    new: &Path,
    to: &str,
    scratch: &Path,
) -> Result<Option<String>> {
    let copy = tempfile::Builder::new()
        .prefix("survey-")
        .tempdir_in(scratch)?;
    let dir = copy.path().join("tree");
    bare_copy(new, to, &dir)?;
    let reports = rebase::survey(series, old, &dir, to)?;
    Ok(describe_conflict(&reports))
}

/// "patch 2 (FILE) conflicts in PATH, hunk `@@ ...`", for the first conflict.
pub fn describe_conflict(reports: &[PatchReport]) -> Option<String> {
    reports.iter().find_map(|r| match &r.outcome {
        Outcome::Conflict { file, hunk } => Some(format!(
            "patch {} ({}) conflicts in {file}, hunk {hunk}",
            r.number, r.file
        )),
        _ => None,
    })
}

/// A series version and a base it rebases onto cleanly.
#[derive(Debug)]
pub struct Case {
    pub series: SeriesVersion,
    pub to: String,
    /// The imported trees of the series' base and of `to`.
    pub old: PathBuf,
    pub new: PathBuf,
    /// The pairs tried before this one and why each was passed over.
    pub passed_over: Vec<String>,
}

/// Fetches (or finds already imported) the tree of a release.
pub type Fetch<'a> = &'a dyn Fn(&str) -> Result<PathBuf>;

/// The newest version (or only `only`) with a target it rebases onto
/// cleanly, trying its targets newest first.
pub fn pick(
    versions: &[SeriesVersion],
    only: Option<u32>,
    fetch: Fetch<'_>,
    scratch: &Path,
) -> Result<Case> {
    let mut passed_over = Vec::new();
    for v in versions
        .iter()
        .filter(|v| only.is_none_or(|n| v.version == n))
    {
        for to in targets(versions, v) {
            match try_pair(v, &to, fetch, scratch)? {
                Ok((old, new)) => {
                    return Ok(Case {
                        series: v.clone(),
                        to,
                        old,
                        new,
                        passed_over,
                    })
                }
                Err(why) => passed_over.push(format!("v{} -> {to}: {why}", v.version)),
            }
        }
    }
    let which = match only {
        Some(n) if !versions.iter().any(|v| v.version == n) => {
            let known: Vec<String> = versions.iter().map(|v| format!("v{}", v.version)).collect();
            bail!(
                "the series has no version {n} (the project's history has {})",
                known.join(", ")
            );
        }
        Some(n) => format!("version {n} of the series rebases"),
        None => "no version of the series rebases".to_string(),
    };
    bail!(
        "{which} cleanly onto the base of another version, so there is no clean rebase to time \
         ({}); pass --to VERSION with a release it applies to (`cargo xtask series bases A..B` \
         lists them)",
        if passed_over.is_empty() {
            "no other version to take a base from".to_string()
        } else {
            passed_over.join("; ")
        }
    )
}

/// Both trees of `v` onto `to` when it rebases cleanly; Err(why) when it
/// conflicts or a tree cannot be had. An error of the replay itself is an error.
#[allow(clippy::type_complexity)]
fn try_pair(
    v: &SeriesVersion,
    to: &str,
    fetch: Fetch<'_>,
    scratch: &Path,
) -> Result<std::result::Result<(PathBuf, PathBuf), String>> {
    let (old, new) = match (fetch(&v.base), fetch(to)) {
        (Ok(old), Ok(new)) => (old, new),
        (Err(e), _) | (_, Err(e)) => return Ok(Err(format!("{:#}", e.root_cause()))),
    };
    let series = Series::load(&v.dir)?;
    Ok(match first_conflict(&series, &old, &new, to, scratch)? {
        None => Ok((old, new)),
        Some(why) => Err(why),
    })
}

/// The case `--to` asks for: `v` onto `to`, which must rebase cleanly; the
/// error says where it stops and, when `suggest` finds one, a pair that works.
pub fn exact(
    v: &SeriesVersion,
    to: &str,
    fetch: Fetch<'_>,
    scratch: &Path,
    suggest: impl FnOnce() -> Option<Case>,
) -> Result<Case> {
    if v.base == to {
        bail!(
            "v{} of the series is based on {to} already: there is nothing to rebase",
            v.version
        );
    }
    let old = fetch(&v.base)?;
    let new = fetch(to)?;
    let series = Series::load(&v.dir)?;
    let Some(why) = first_conflict(&series, &old, &new, to, scratch)? else {
        return Ok(Case {
            series: v.clone(),
            to: to.to_string(),
            old,
            new,
            passed_over: vec![],
        });
    };
    let hint = match suggest() {
        Some(c) => format!(
            "; a pair that rebases cleanly: v{} (on {}) -> {} (`cargo xtask bench rebase \
             --series-version {} --to {}`)",
            c.series.version, c.series.base, c.to, c.series.version, c.to
        ),
        None => String::new(),
    };
    bail!(
        "{} does not rebase cleanly onto {to}: {why}; the benchmark times a clean rebase only, \
         nothing was timed{hint}",
        v.describe()
    )
}
