//! `cargo xtask series export`: commits back to `patches/<series>/`.
//!
//! The files are written by `git format-patch` (the canonical writer, so the
//! series stays what kernel developers expect) with the style of the files
//! already there kept: index abbreviation length, signature, zero or real
//! commit ids in the `From ` line, subject prefix and numbering. User and
//! system git config is ignored so `format.*` settings cannot leak in. With
//! commits made by `apply` (committer = author), apply followed by export
//! reproduces the files byte for byte.
//!
//! Everything is written to a temporary sibling directory, checked with the
//! same parser `apply` uses, and swapped in with two renames; `series.toml`
//! and `0000-cover-letter.patch` are carried over unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use git2::{Commit, Oid, Repository};
use regex::Regex;

use super::apply::{open_repo, short};
use super::mail;
use super::model::{self, SeriesToml, COVER_LETTER, SERIES_TOML};

/// How existing files were written, so a re-export keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatchStyle {
    pub abbrev: usize,
    /// None: git's default (its version); Some("") : no signature.
    pub signature: Option<String>,
    pub zero_commit: bool,
    pub subject_prefix: String,
    /// Some(true): `[PATCH k/M]`, Some(false): `[PATCH]` even for several.
    pub numbered: Option<bool>,
}

impl Default for PatchStyle {
    fn default() -> Self {
        PatchStyle {
            abbrev: 12,
            signature: None,
            zero_commit: false,
            subject_prefix: "PATCH".into(),
            numbered: None,
        }
    }
}

/// Infer the style from existing patch files (defaults when there are none).
pub fn infer_style(files: &[PathBuf]) -> PatchStyle {
    let mut style = PatchStyle::default();
    let index_re =
        Regex::new(r"(?m)^index ([0-9a-f]{7,40})\.\.([0-9a-f]{7,40})").expect("static regex");
    let subject_re = Regex::new(r"(?m)^Subject: \[([^\]]*)\]").expect("static regex");
    let num_re = Regex::new(r"^(.*?)\s*(\d+)/(\d+)$").expect("static regex");
    let mut min_abbrev: Option<usize> = None;
    for (i, file) in files.iter().enumerate() {
        let Ok(bytes) = std::fs::read(file) else {
            continue;
        };
        let text = String::from_utf8_lossy(&bytes);
        for caps in index_re.captures_iter(&text) {
            for m in [caps.get(1), caps.get(2)].into_iter().flatten() {
                min_abbrev = Some(min_abbrev.map_or(m.len(), |a: usize| a.min(m.len())));
            }
        }
        if i == 0 {
            style.zero_commit = text.starts_with("From 0000000000000000000000000000000000000000 ");
            if let Some(caps) = subject_re.captures(&text) {
                let inner = caps[1].trim();
                if let Some(n) = num_re.captures(inner) {
                    style.subject_prefix = n[1].to_string();
                    style.numbered = Some(true);
                } else {
                    style.subject_prefix = inner.to_string();
                    style.numbered = if files.len() > 1 { Some(false) } else { None };
                }
                if style.subject_prefix.is_empty() {
                    style.subject_prefix = "PATCH".into();
                }
            }
            style.signature = Some(match text.rfind("\n-- \n") {
                Some(pos) => {
                    let tail = &text[pos + 5..];
                    tail.strip_suffix('\n')
                        .unwrap_or(tail)
                        .trim_end_matches('\n')
                        .to_string()
                }
                None => String::new(),
            });
        }
    }
    if let Some(a) = min_abbrev {
        style.abbrev = a;
    }
    style
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    New,
    Changed,
    Unchanged,
    Removed,
}

#[derive(Debug)]
pub struct ExportReport {
    pub dir: PathBuf,
    pub base: String,
    pub tip: String,
    pub files: BTreeMap<String, FileChange>,
    /// For each changed file, one line saying what changed.
    pub reasons: BTreeMap<String, String>,
}

impl fmt::Display for ExportReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, change) in &self.files {
            let what = match change {
                FileChange::New => "new",
                FileChange::Changed => "changed",
                FileChange::Unchanged => "unchanged",
                FileChange::Removed => "removed",
            };
            match self.reasons.get(name) {
                Some(why) => writeln!(f, "{what:<9}  {name}: {why}")?,
                None => writeln!(f, "{what:<9}  {name}")?,
            }
        }
        let count = |c: FileChange| self.files.values().filter(|v| **v == c).count();
        write!(
            f,
            "exported {}..{} to {}: {} new, {} changed, {} unchanged, {} removed",
            self.base,
            self.tip,
            self.dir.display(),
            count(FileChange::New),
            count(FileChange::Changed),
            count(FileChange::Unchanged),
            count(FileChange::Removed)
        )
    }
}

/// Resolve `BASE..BRANCH`, or by default branch `<name>/v<N>` and, walking
/// back from it, the first commit whose tree is a known base tree.
pub fn resolve_range<'r>(
    repo: &'r Repository,
    toml: &SeriesToml,
    range: Option<&str>,
) -> Result<(Commit<'r>, Commit<'r>)> {
    let find = |spec: &str| -> Result<Commit<'r>> {
        repo.revparse_single(spec)
            .and_then(|o| o.peel_to_commit())
            .map_err(|err| {
                anyhow::anyhow!("cannot resolve {spec:?} in the tree: {}", err.message())
            })
    };
    if let Some(range) = range {
        let Some((a, b)) = range.split_once("..") else {
            bail!("--range {range:?} is not of the form BASE..BRANCH");
        };
        if a.is_empty() || b.is_empty() || b.starts_with('.') {
            bail!("--range {range:?} is not of the form BASE..BRANCH");
        }
        return Ok((find(a)?, find(b)?));
    }
    let branch = toml.branch_name();
    let tip = find(&format!("refs/heads/{branch}")).with_context(|| {
        format!("no branch {branch} (run `cargo xtask apply` first or pass --range BASE..BRANCH)")
    })?;
    match base_below(repo, toml, tip.id())? {
        Some(id) if id == tip.id() => bail!("branch {branch} is the base itself: nothing to export"),
        Some(id) => Ok((repo.find_commit(id)?, tip)),
        None => bail!(
            "no commit below {branch} has a base tree listed in series.toml ([base].trees); pass --range BASE..{branch}"
        ),
    }
}

/// The nearest first-parent ancestor of `tip` (`tip` included) whose tree is
/// one of series.toml's base trees, if any.
pub(crate) fn base_below(
    repo: &Repository,
    toml: &super::SeriesToml,
    tip: Oid,
) -> Result<Option<Oid>> {
    let mut commit = repo.find_commit(tip)?;
    for _ in 0..10_000 {
        let tree = commit.tree_id().to_string();
        if toml.base.trees.values().any(|t| *t == tree) {
            return Ok(Some(commit.id()));
        }
        if commit.parent_count() == 0 {
            break;
        }
        commit = commit.parent(0)?;
    }
    Ok(None)
}

/// Commits of `base..tip`, oldest first; refuses merges.
pub fn range_commits(repo: &Repository, base: Oid, tip: Oid) -> Result<Vec<Oid>> {
    let mut walk = repo.revwalk()?;
    walk.push(tip)?;
    walk.hide(base)?;
    walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::REVERSE)?;
    let mut out = Vec::new();
    for oid in walk {
        let oid = oid?;
        let commit = repo.find_commit(oid)?;
        if commit.parent_count() != 1 {
            bail!("commit {} is a merge; a series must be linear", short(oid));
        }
        out.push(oid);
    }
    Ok(out)
}

/// `git -C <tree>` with user and system config ignored (no `format.*` or
/// `diff.*` settings leaking into generated files).
pub fn git<'a>(sh: &'a xshell::Shell, tree: &Path) -> xshell::Cmd<'a> {
    xshell::cmd!(sh, "git -C {tree}")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C")
}

/// Run `git format-patch` for `base..tip` into `out` with `style`.
/// `ident` (name, email) is the committer identity git uses for the cover
/// letter's From: (user and system config are not read).
pub fn format_patch(
    tree: &Path,
    base: Oid,
    tip: Oid,
    out: &Path,
    style: &PatchStyle,
    extra: &[String],
    ident: Option<(&str, &str)>,
) -> Result<()> {
    let sh = xshell::Shell::new()?;
    let mut args: Vec<String> = vec![
        "format-patch".into(),
        "--no-renames".into(),
        format!("--abbrev={}", style.abbrev),
        format!("--subject-prefix={}", style.subject_prefix),
    ];
    match style.numbered {
        Some(true) => args.push("--numbered".into()),
        Some(false) => args.push("--no-numbered".into()),
        None => {}
    }
    match &style.signature {
        Some(sig) if sig.is_empty() => args.push("--no-signature".into()),
        Some(sig) => args.push(format!("--signature={sig}")),
        None => {}
    }
    if style.zero_commit {
        args.push("--zero-commit".into());
    }
    args.extend(extra.iter().cloned());
    args.push("-o".into());
    args.push(out.display().to_string());
    args.push(format!("{base}..{tip}"));
    let mut cmd = git(&sh, tree).args(&args);
    if let Some((name, email)) = ident {
        cmd = cmd
            .env("GIT_COMMITTER_NAME", name)
            .env("GIT_COMMITTER_EMAIL", email);
    }
    cmd.quiet()
        .ignore_stdout()
        .run()
        .with_context(|| format!("git format-patch in {}", tree.display()))?;
    Ok(())
}

/// Replace `target` by `staged` with two renames; on failure `target` is restored.
pub fn swap_dir(staged: &Path, target: &Path) -> Result<()> {
    let parent = target.parent().context("target has no parent directory")?;
    let name = target
        .file_name()
        .context("target has no name")?
        .to_string_lossy()
        .into_owned();
    let old = if target.exists() {
        let old = tempfile::Builder::new()
            .prefix(&format!(".{name}.old-"))
            .tempdir_in(parent)
            .with_context(|| format!("creating a temporary directory in {}", parent.display()))?
            .keep();
        std::fs::remove_dir(&old)?;
        std::fs::rename(target, &old)
            .with_context(|| format!("moving {} aside", target.display()))?;
        Some(old)
    } else {
        None
    };
    if let Err(err) = std::fs::rename(staged, target) {
        if let Some(old) = &old {
            let _ = std::fs::rename(old, target);
        }
        return Err(err).with_context(|| format!("moving the new files into {}", target.display()));
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("removing the old copy {}", old.display()))?;
    }
    Ok(())
}

/// The whole `series export`.
pub fn export(series_dir: &Path, tree: &Path, range: Option<&str>) -> Result<ExportReport> {
    let toml = SeriesToml::load(&series_dir.join(SERIES_TOML))?;
    model::check_name(series_dir, &toml)?;
    let (cover, existing) = model::list_patch_files(series_dir)?;
    let style = infer_style(&existing);
    let repo = open_repo(tree)?;
    let (base, tip) = resolve_range(&repo, &toml, range)?;
    let commits = range_commits(&repo, base.id(), tip.id())?;
    if commits.is_empty() {
        bail!(
            "{}..{} holds no commits: nothing to export",
            short(base.id()),
            short(tip.id())
        );
    }
    let parent = series_dir
        .parent()
        .context("series directory has no parent")?;
    let staged = tempfile::Builder::new()
        .prefix(&format!(".{}.export-", toml.name))
        .tempdir_in(parent)
        .with_context(|| format!("creating a temporary directory in {}", parent.display()))?;
    format_patch(tree, base.id(), tip.id(), staged.path(), &style, &[], None)?;
    let (_, written) = model::list_patch_files(staged.path())?;
    if written.len() != commits.len() {
        bail!(
            "git format-patch wrote {} files for {} commits",
            written.len(),
            commits.len()
        );
    }
    for file in &written {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let bytes = std::fs::read(file)?;
        mail::parse_patch(Path::new(&name), &bytes).with_context(|| {
            format!("the commit exported as {name} cannot be applied back by `apply`; fix the commit and export again")
        })?;
    }
    std::fs::copy(
        series_dir.join(SERIES_TOML),
        staged.path().join(SERIES_TOML),
    )?;
    if let Some(cover) = &cover {
        std::fs::copy(cover, staged.path().join(COVER_LETTER))?;
    }
    let mut files = BTreeMap::new();
    let mut reasons = BTreeMap::new();
    for file in &written {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let old = series_dir.join(&name);
        let new_bytes = std::fs::read(file)?;
        let change = match std::fs::read(&old) {
            Ok(bytes) if bytes == new_bytes => FileChange::Unchanged,
            Ok(bytes) => {
                reasons.insert(name.clone(), why_changed(&name, &bytes, &new_bytes));
                FileChange::Changed
            }
            Err(_) => FileChange::New,
        };
        files.insert(name, change);
    }
    for file in &existing {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        files.entry(name).or_insert(FileChange::Removed);
    }
    let staged = staged.keep();
    if let Err(err) = swap_dir(&staged, series_dir) {
        let _ = std::fs::remove_dir_all(&staged);
        return Err(err);
    }
    Ok(ExportReport {
        dir: series_dir.to_path_buf(),
        base: short(base.id()),
        tip: short(tip.id()),
        files,
        reasons,
    })
}

/// One line on what differs between the old and the new file of a patch:
/// the parts of the commit, or, when the commit is the same, the headers
/// git format-patch wrote differently (it writes UTF-8, so an author that
/// came in another charset is re-encoded).
fn why_changed(name: &str, old: &[u8], new: &[u8]) -> String {
    let path = Path::new(name);
    let (Ok(a), Ok(b)) = (mail::parse_patch(path, old), mail::parse_patch(path, new)) else {
        return "the old file does not parse as a patch".into();
    };
    let mut parts = Vec::new();
    if (&a.author_name, &a.author_email) != (&b.author_name, &b.author_email) {
        parts.push("author");
    }
    if (a.time, a.offset_minutes) != (b.time, b.offset_minutes) {
        parts.push("date");
    }
    if a.message != b.message {
        parts.push("message");
    }
    if a.diff != b.diff {
        parts.push("diff");
    }
    if !parts.is_empty() {
        return format!("the commit's {} changed", parts.join(", "));
    }
    let headers = |bytes: &[u8]| -> Vec<String> {
        let text = String::from_utf8_lossy(bytes);
        let head = text.split("\n\n").next().unwrap_or("").replace("\n ", " ");
        head.lines().map(str::to_string).collect()
    };
    let (ha, hb) = (headers(old), headers(new));
    let mut differing: Vec<String> = ha
        .iter()
        .filter(|l| !hb.contains(l))
        .chain(hb.iter().filter(|l| !ha.contains(l)))
        .filter_map(|l| l.split_once(':').map(|(k, _)| format!("{k}:")))
        .filter(|k| !k.starts_with("From "))
        .collect();
    differing.dedup();
    if differing.is_empty() {
        "same commit, written differently (signature, diffstat or layout)".into()
    } else {
        format!(
            "same commit; only how {} is written differs (git format-patch encodes non-ASCII text as UTF-8)",
            differing.join(", ")
        )
    }
}
