//! `cargo xtask series rebase --to VERSION`: move a series onto a newer
//! point release.
//!
//! The series is replayed on the new base commit by commit, in the object
//! database only (as `apply` does): no checkout, index or HEAD of the
//! user's trees is touched. The old base lives in a repository of its own
//! (each `tree fetch` import is one); its objects are made visible to the
//! new repository as an in-memory alternate, so the old side of every patch
//! (old base plus the patches before it, whose blobs the patch's `index`
//! lines name) is at hand for a three-way merge and for the range-diff.
//!
//! Per patch, in this order:
//! 1. same stable patch-id as a commit of the new base: dropped;
//! 2. a three-way merge (ancestor: the patch's preimage on the old side,
//!    ours: the new tip, theirs: the patch's postimage) that changes nothing:
//!    its hunks are already in the new base, dropped;
//! 3. the diff applies to the new tip: "as is", or "offset" when a hunk's
//!    context was found elsewhere than its header says (how far is said);
//! 4. the three-way merge is clean: "merged three-way";
//! 5. otherwise a conflict: the patches so far go on branch
//!    `<name>/v<N+1>-rebase`, checked out in a worktree of its own with the
//!    conflict markers written, and the state is kept in the repository's
//!    git dir for `--continue` / `--abort`.
//!
//! libgit2's apply has no fuzz: a hunk whose context no longer matches is
//! left to the three-way merge, and reported as such.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use git2::{Commit, Diff, MergeFileInput, MergeFileOptions, Oid, Repository};
use regex::Regex;
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use super::apply::{self, commit_patch, ensure_no_operation, open_repo, short};
use super::mail::{self, PatchMail};
use super::model::{self, Series, SeriesToml, COVER_LETTER, SERIES_TOML};

/// File in the new tree's git dir holding a stopped rebase.
pub const STATE_FILE: &str = "xtask-rebase.json";

/// What happened to one patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// Every hunk applied at the line its header names.
    AsIs,
    /// Applied; `hunks` hunks were found `max_offset` lines (at most) away.
    Offset { hunks: usize, max_offset: i64 },
    /// The diff did not apply; the three-way merge of these files was clean.
    ThreeWay { files: Vec<String> },
    /// Dropped: the change is already in the new base.
    AlreadyApplied { why: String },
    /// Stopped here: `file`, first hunk that neither applies nor merges.
    Conflict { file: String, hunk: String },
    /// Conflict resolved by the user and committed (`--continue`).
    Resolved,
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::AsIs => "applied as is".into(),
            Outcome::Offset { hunks, max_offset } => format!(
                "applied with offset ({hunks} hunk{} moved, up to {max_offset} line{})",
                if *hunks == 1 { "" } else { "s" },
                if max_offset.abs() == 1 { "" } else { "s" }
            ),
            Outcome::ThreeWay { files } => format!("merged three-way ({})", files.join(", ")),
            Outcome::AlreadyApplied { why } => format!("dropped: already in the new base ({why})"),
            Outcome::Conflict { file, hunk } => format!("CONFLICT in {file}, hunk {hunk}"),
            Outcome::Resolved => "conflict resolved by hand".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchReport {
    pub number: usize,
    /// The patch file's name.
    #[serde(rename = "patch")]
    pub file: String,
    pub subject: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub commit: Option<String>,
}

/// A per-patch report as a table.
pub fn report_table(reports: &[PatchReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.file.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!(
        "{:<3}  {:<width$}  {:<12}  result\n",
        "#", "patch", "commit"
    );
    for r in reports {
        let commit = r.commit.as_deref().map_or("-", |c| &c[..12]);
        out.push_str(&format!(
            "{:<3}  {:<width$}  {:<12}  {}\n",
            r.number,
            r.file,
            commit,
            r.outcome.describe()
        ));
    }
    out.trim_end().to_string()
}

/// One step of the replay.
enum Step {
    Commit(Oid, Outcome),
    Dropped(Outcome),
    Conflict {
        outcome: Outcome,
        /// Path and content (with conflict markers, or merged) per touched file.
        files: Vec<(String, Vec<u8>)>,
    },
}

/// The parsed series.
struct Patches {
    mails: Vec<PatchMail>,
    diffs: Vec<Diff<'static>>,
}

fn load_patches(series: &Series) -> Result<Patches> {
    let mut mails = Vec::new();
    let mut diffs = Vec::new();
    for file in &series.patches {
        let mail = mail::parse_patch_file(file)?;
        let diff = Diff::from_buffer(&mail.diff).map_err(|err| {
            anyhow::anyhow!(
                "{}: libgit2 cannot parse the diff: {}",
                file.display(),
                err.message()
            )
        })?;
        mails.push(mail);
        diffs.push(diff);
    }
    Ok(Patches { mails, diffs })
}

/// Makes the old tree's objects readable through `repo` (in memory only).
fn add_alternate(repo: &Repository, old: &Path) -> Result<()> {
    let old_repo = open_repo(old)?;
    let objects = old_repo.path().join("objects");
    let objects = objects.to_str().context("old tree path is not UTF-8")?;
    repo.odb()?
        .add_disk_alternate(objects)
        .with_context(|| format!("reading the objects of {}", old.display()))?;
    Ok(())
}

/// libgit2 hashes every object it reads to check it against its id, which
/// git does not do; the replay reads whole kernel source files (mmu.c is
/// 200 kB) several times per patch, from trees `tree fetch` imported and
/// checked. The setting is libgit2's, for the whole process.
fn skip_hash_checks_on_read() {
    git2::opts::strict_hash_verification(false);
}

/// Objects the replay writes go to memory, not to the new tree's disk:
/// [`persist_commits`] copies there what a branch or a git command needs.
/// Reading back a file a patch just wrote then costs no inflate, and a
/// survey leaves nothing behind.
fn write_objects_in_memory(repo: &Repository) -> Result<()> {
    repo.odb()?.add_new_mempack_backend(1000)?;
    Ok(())
}

/// The commit of tag `v<version>` in `repo`.
fn tag_commit<'r>(repo: &'r Repository, version: &str, what: &Path) -> Result<Commit<'r>> {
    repo.revparse_single(&format!("refs/tags/v{version}"))
        .and_then(|o| o.peel_to_commit())
        .map_err(|_| {
            anyhow::anyhow!(
                "{} has no tag v{version}; fetch that base with `cargo xtask tree fetch --version \
                 {version}` or pass the tree it made",
                what.display()
            )
        })
}

/// `index <a>..<b>` of each file of a diff.
fn index_lines(diff: &[u8]) -> BTreeMap<String, (String, String)> {
    static R: std::sync::OnceLock<Regex> = std::sync::OnceLock::new();
    let re = crate::util::static_regex(
        &R,
        r"(?m)^diff --git a/(\S+) b/(\S+)\n(?:(?:new|deleted) file mode \d+\n)?index ([0-9a-f]+)\.\.([0-9a-f]+)",
    );
    let text = String::from_utf8_lossy(diff);
    re.captures_iter(&text)
        .map(|c| (c[2].to_string(), (c[3].to_string(), c[4].to_string())))
        .collect()
}

fn blob_at(repo: &Repository, tree: &git2::Tree<'_>, path: &str) -> Result<Option<Vec<u8>>> {
    match tree.get_path(Path::new(path)) {
        Ok(entry) => Ok(Some(repo.find_blob(entry.id())?.content().to_vec())),
        Err(_) => Ok(None),
    }
}

/// Where each hunk of `patch` is found in `lines` (a file split after each
/// newline) against where its header says: Ok(offsets) or Err(header of
/// the first hunk not found).
fn hunk_offsets(
    patch: &git2::Patch<'_>,
    lines: &[&[u8]],
) -> Result<std::result::Result<Vec<i64>, String>> {
    let mut offsets = Vec::new();
    for h in 0..patch.num_hunks() {
        let (hunk, _) = patch.hunk(h)?;
        let mut pre: Vec<&[u8]> = Vec::new();
        for l in 0..patch.num_lines_in_hunk(h)? {
            let line = patch.line_in_hunk(h, l)?;
            if matches!(line.origin(), ' ' | '-') {
                pre.push(line.content());
            }
        }
        let expected = (hunk.old_start() as i64 - 1).max(0);
        if pre.is_empty() {
            offsets.push(0);
            continue;
        }
        match nearest_match(lines, &pre, expected as usize) {
            Some(at) => offsets.push(at as i64 - expected),
            None => {
                return Ok(Err(format!(
                    "`{}`",
                    String::from_utf8_lossy(hunk.header()).trim_end()
                )))
            }
        }
    }
    Ok(Ok(offsets))
}

/// The line index nearest to `expected` where `pre` starts in `lines`; of
/// two equally near, the earlier. Searched outwards from `expected`, as a
/// hunk is mostly found within a few lines of where its header says.
fn nearest_match(lines: &[&[u8]], pre: &[&[u8]], expected: usize) -> Option<usize> {
    if lines.len() < pre.len() {
        return None;
    }
    let last = lines.len() - pre.len();
    let matches_at = |at: usize| lines[at..at + pre.len()] == *pre;
    let reach = expected.max(last.saturating_sub(expected));
    for d in 0..=reach {
        if let Some(at) = expected.checked_sub(d).filter(|at| *at <= last) {
            if matches_at(at) {
                return Some(at);
            }
        }
        let at = expected + d;
        if d > 0 && at <= last && matches_at(at) {
            return Some(at);
        }
    }
    None
}

fn merge3(
    path: &str,
    base: Option<&[u8]>,
    ours: &[u8],
    theirs: &[u8],
    labels: (&str, &str),
) -> Result<(bool, Vec<u8>)> {
    let mut a = MergeFileInput::new();
    a.content(base.unwrap_or(b"")).path(path);
    let mut o = MergeFileInput::new();
    o.content(ours).path(path);
    let mut t = MergeFileInput::new();
    t.content(theirs).path(path);
    let mut opts = MergeFileOptions::new();
    opts.ancestor_label("old base")
        .our_label(labels.0)
        .their_label(labels.1);
    let result = git2::merge_file(&a, &o, &t, Some(&mut opts))
        .with_context(|| format!("three-way merge of {path}"))?;
    Ok((result.is_automergeable(), result.content().to_vec()))
}

/// Replays one patch on `tip`; `old_tip` is the old side before the patch.
fn step(
    repo: &Repository,
    tip: &Commit<'_>,
    old_tip: &Commit<'_>,
    mail: &PatchMail,
    diff: &Diff<'_>,
    upstream: &std::collections::HashMap<Oid, Oid>,
    to_version: &str,
) -> Result<(Step, Oid)> {
    let name = display_name(&mail.file);
    // The old side: the patch must apply where it was written.
    let old_post = commit_patch(repo, old_tip, mail, diff).with_context(|| {
        format!("{name} does not apply on the old base plus the patches before it: the series itself is broken")
    })?;
    let old_post_c = repo.find_commit(old_post)?;
    let sides = Sides {
        old_pre: old_tip.tree()?,
        old_post: old_post_c.tree()?,
        new: tip.tree()?,
    };

    if let Some(commit) = upstream.get(&diff.patchid(None)?) {
        let why = format!("same patch-id as {}", short(*commit));
        return Ok((Step::Dropped(Outcome::AlreadyApplied { why }), old_post));
    }

    let merged = merge_files(repo, &sides, mail, to_version)?;
    if merged.all_clean && merged.unchanged {
        let why = "its hunks are already applied".to_string();
        return Ok((Step::Dropped(Outcome::AlreadyApplied { why }), old_post));
    }

    // Does the diff apply, at the lines its hunks name or elsewhere?
    if let Some((applied, moved, max)) = apply_at_offsets(repo, &sides.new, diff)? {
        let oid = commit_blobs(repo, tip, &sides.new, mail, &applied)?;
        let outcome = if moved == 0 {
            Outcome::AsIs
        } else {
            Outcome::Offset {
                hunks: moved,
                max_offset: max,
            }
        };
        return Ok((Step::Commit(oid, outcome), old_post));
    }

    if merged.all_clean {
        let mut files = Vec::new();
        for (path, content) in &merged.files {
            if blob_at(repo, &sides.new, path)?.as_deref() != Some(content.as_slice()) {
                files.push(path.clone());
            }
        }
        let oid = commit_blobs(repo, tip, &sides.new, mail, &merged.files)?;
        return Ok((Step::Commit(oid, Outcome::ThreeWay { files }), old_post));
    }

    let file = merged.first_conflict.unwrap_or_default();
    let hunk = conflict_hunk(repo, &sides.new, diff, &file)?;
    Ok((
        Step::Conflict {
            outcome: Outcome::Conflict { file, hunk },
            files: merged.files,
        },
        old_post,
    ))
}

/// The trees one step works between.
struct Sides<'r> {
    /// The old base plus the patches before this one.
    old_pre: git2::Tree<'r>,
    /// The same plus this patch.
    old_post: git2::Tree<'r>,
    /// The new base plus the patches replayed so far.
    new: git2::Tree<'r>,
}

/// The three-way merge of every file a patch touches.
struct Merged {
    /// Path and content (merged, or with conflict markers) per touched file.
    files: Vec<(String, Vec<u8>)>,
    all_clean: bool,
    /// Whether every merged file equals the new side's: the patch is in.
    unchanged: bool,
    first_conflict: Option<String>,
}

/// The preimage of `path` for the merge: the old side's blob, or the one
/// the patch's `index` line names when that differs and the repo has it.
fn preimage(
    repo: &Repository,
    old_pre: &git2::Tree<'_>,
    index: &BTreeMap<String, (String, String)>,
    path: &str,
) -> Result<Option<Vec<u8>>> {
    let pre = blob_at(repo, old_pre, path)?;
    let Some((a, _)) = index.get(path) else {
        return Ok(pre);
    };
    let want_none = a.bytes().all(|b| b == b'0');
    let found = old_pre
        .get_path(Path::new(path))
        .ok()
        .map(|e| e.id().to_string());
    match (&found, want_none) {
        (Some(id), false) if !id.starts_with(a.as_str()) => {
            let short_id = Oid::from_str(&format!("{a:0<40}"))?;
            if let Ok(id) = repo.odb()?.exists_prefix(short_id, a.len()) {
                return Ok(Some(repo.find_blob(id)?.content().to_vec()));
            }
            Ok(pre)
        }
        _ => Ok(pre),
    }
}

fn merge_files(
    repo: &Repository,
    sides: &Sides<'_>,
    mail: &PatchMail,
    to_version: &str,
) -> Result<Merged> {
    let index = index_lines(&mail.diff);
    let mut merged = Merged {
        files: Vec::new(),
        all_clean: true,
        unchanged: true,
        first_conflict: None,
    };
    for path in &mail.files {
        let pre = preimage(repo, &sides.old_pre, &index, path)?;
        let post = blob_at(repo, &sides.old_post, path)?.unwrap_or_default();
        let Some(ours) = blob_at(repo, &sides.new, path)? else {
            // A file the patch creates (or one the new base removed).
            if pre.is_some() {
                merged.all_clean = false;
                merged.first_conflict.get_or_insert_with(|| path.clone());
            } else {
                merged.unchanged = false;
            }
            merged.files.push((path.clone(), post));
            continue;
        };
        let (clean, content) = merge3(
            path,
            pre.as_deref(),
            &ours,
            &post,
            (to_version, &mail.subject),
        )?;
        if !clean {
            merged.all_clean = false;
            merged.first_conflict.get_or_insert_with(|| path.clone());
        }
        if content != ours {
            merged.unchanged = false;
        }
        merged.files.push((path.clone(), content));
    }
    Ok(merged)
}

/// The header of the first hunk of `file` not found in the new side.
fn conflict_hunk(
    repo: &Repository,
    new: &git2::Tree<'_>,
    diff: &Diff<'_>,
    file: &str,
) -> Result<String> {
    let mut hunk = "(unknown)".to_string();
    for idx in 0..diff.deltas().len() {
        let Some(patch) = git2::Patch::from_diff(diff, idx)? else {
            continue;
        };
        if patch.delta().new_file().path().and_then(|p| p.to_str()) != Some(file) {
            continue;
        }
        let content = blob_at(repo, new, file)?.unwrap_or_default();
        let lines: Vec<&[u8]> = content.split_inclusive(|b| *b == b'\n').collect();
        if let Err(h) = hunk_offsets(&patch, &lines)? {
            hunk = h;
        }
    }
    Ok(hunk)
}

/// The commit of `mail` on `tip` with these file contents.
fn commit_blobs(
    repo: &Repository,
    tip: &Commit<'_>,
    tree: &git2::Tree<'_>,
    mail: &PatchMail,
    files: &[(String, Vec<u8>)],
) -> Result<Oid> {
    let mut update = git2::build::TreeUpdateBuilder::new();
    for (path, content) in files {
        let blob = repo.blob(content)?;
        let mode = tree
            .get_path(Path::new(path))
            .map(|e| e.filemode())
            .unwrap_or(0o100644);
        let mode = if mode == 0o100755 {
            git2::FileMode::BlobExecutable
        } else {
            git2::FileMode::Blob
        };
        update.upsert(path.as_str(), blob, mode);
    }
    let new_tree = repo.find_tree(update.create_updated(repo, tree)?)?;
    let time = git2::Time::new(mail.time, mail.offset_minutes);
    let author = git2::Signature::new(&mail.author_name, &mail.author_email, &time)
        .with_context(|| format!("{}: bad author", mail.file.display()))?;
    Ok(repo.commit(None, &author, &author, &mail.message, &new_tree, &[tip])?)
}

/// Applies each hunk where its preimage is found nearest to the line its
/// header names (as `patch` does without fuzz). None when a hunk is not
/// found, hunks overlap, or a file ends without a newline (left to the
/// three-way merge). Returns the new contents, how many hunks moved and
/// the largest move.
#[allow(clippy::type_complexity)]
fn apply_at_offsets(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    diff: &Diff<'_>,
) -> Result<Option<(Vec<(String, Vec<u8>)>, usize, i64)>> {
    let mut out = Vec::new();
    let (mut moved, mut max) = (0usize, 0i64);
    for idx in 0..diff.deltas().len() {
        let Some(patch) = git2::Patch::from_diff(diff, idx)? else {
            return Ok(None);
        };
        let Some(path) = patch
            .delta()
            .new_file()
            .path()
            .and_then(|p| p.to_str())
            .map(str::to_string)
        else {
            return Ok(None);
        };
        let content = blob_at(repo, tree, &path)?;
        if content.is_none() && patch.delta().status() != git2::Delta::Added {
            return Ok(None);
        }
        let content = content.unwrap_or_default();
        let lines: Vec<&[u8]> = content.split_inclusive(|b| *b == b'\n').collect();
        let Ok(offsets) = hunk_offsets(&patch, &lines)? else {
            return Ok(None);
        };
        let mut result: Vec<u8> = Vec::new();
        let mut at = 0usize;
        for (h, off) in offsets.iter().enumerate() {
            let (hunk, _) = patch.hunk(h)?;
            let mut pre = 0usize;
            let mut post: Vec<u8> = Vec::new();
            for l in 0..patch.num_lines_in_hunk(h)? {
                let line = patch.line_in_hunk(h, l)?;
                match line.origin() {
                    ' ' => {
                        pre += 1;
                        post.extend_from_slice(line.content());
                    }
                    '-' => pre += 1,
                    '+' => post.extend_from_slice(line.content()),
                    _ => return Ok(None),
                }
            }
            let start = ((hunk.old_start() as i64 - 1).max(0) + off) as usize;
            if pre == 0 && hunk.old_start() > 0 && start < lines.len() {
                // A pure addition after line old_start.
                return Ok(None);
            }
            if start < at || start + pre > lines.len() {
                return Ok(None);
            }
            for l in &lines[at..start] {
                result.extend_from_slice(l);
            }
            result.extend_from_slice(&post);
            at = start + pre;
            if *off != 0 {
                moved += 1;
                if off.abs() > max.abs() {
                    max = *off;
                }
            }
        }
        for l in &lines[at..] {
            result.extend_from_slice(l);
        }
        out.push((path, result));
    }
    Ok(Some((out, moved, max)))
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Result of replaying patches `from..` of a series.
pub struct Replay {
    pub reports: Vec<PatchReport>,
    pub tip: Oid,
    /// The old side after the last patch replayed.
    pub old_tip: Oid,
    /// Set when the replay stopped at a conflict.
    pub conflict: Option<Vec<(String, Vec<u8>)>>,
}

#[allow(clippy::too_many_arguments)]
fn replay(
    repo: &Repository,
    patches: &Patches,
    from: usize,
    tip: Oid,
    old_tip: Oid,
    new_base: &Commit<'_>,
    to_version: &str,
    progress: bool,
) -> Result<Replay> {
    let files: std::collections::BTreeSet<String> = patches
        .mails
        .iter()
        .flat_map(|m| m.files.iter().cloned())
        .collect();
    let upstream = apply::history_patch_ids(repo, new_base, &files, apply::HISTORY_LIMIT)?;
    let mut tip = repo.find_commit(tip)?;
    let mut old_tip = repo.find_commit(old_tip)?;
    let mut reports = Vec::new();
    let total = patches.mails.len();
    for k in from..total {
        let mail = &patches.mails[k];
        let (step, old_post) = step(
            repo,
            &tip,
            &old_tip,
            mail,
            &patches.diffs[k],
            &upstream,
            to_version,
        )?;
        old_tip = repo.find_commit(old_post)?;
        let mut report = PatchReport {
            number: k + 1,
            file: display_name(&mail.file),
            subject: mail.subject.clone(),
            outcome: Outcome::AsIs,
            commit: None,
        };
        let stop = match step {
            Step::Commit(oid, outcome) => {
                tip = repo.find_commit(oid)?;
                report.outcome = outcome;
                report.commit = Some(oid.to_string());
                None
            }
            Step::Dropped(outcome) => {
                report.outcome = outcome;
                None
            }
            Step::Conflict { outcome, files } => {
                report.outcome = outcome;
                Some(files)
            }
        };
        if progress {
            eprintln!(
                "  [{}/{total}] {}: {}",
                k + 1,
                report.file,
                report.outcome.describe()
            );
        }
        reports.push(report);
        if let Some(files) = stop {
            return Ok(Replay {
                reports,
                tip: tip.id(),
                old_tip: old_tip.id(),
                conflict: Some(files),
            });
        }
    }
    Ok(Replay {
        reports,
        tip: tip.id(),
        old_tip: old_tip.id(),
        conflict: None,
    })
}

/// A dry run: where the series stands on `new_tree` (tag `v<to>`), nothing written.
pub fn survey(
    series: &Series,
    old_tree: &Path,
    new_tree: &Path,
    to: &str,
) -> Result<Vec<PatchReport>> {
    let repo = open_repo(new_tree)?;
    skip_hash_checks_on_read();
    add_alternate(&repo, old_tree)?;
    write_objects_in_memory(&repo)?;
    let old_repo = open_repo(old_tree)?;
    let old_base = apply::verify_base(&old_repo, series)?.id();
    let new_base = tag_commit(&repo, to, new_tree)?;
    let patches = load_patches(series)?;
    Ok(replay(
        &repo,
        &patches,
        0,
        new_base.id(),
        old_base,
        &new_base,
        to,
        false,
    )?
    .reports)
}

/// What a rebase works on: the series, the two trees and where its output
/// goes. Part of the request and of the state a stopped rebase keeps.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RebaseJob {
    pub series_dir: PathBuf,
    /// Repository holding the series' current base (tag v<base.version>).
    pub old_tree: PathBuf,
    /// Repository holding the new base, tagged v<to>.
    pub new_tree: PathBuf,
    pub to: String,
    /// Where the rebased series is written (may be `series_dir` itself).
    pub out: PathBuf,
    /// Where the range-diff against the previous version is written.
    pub range_diff: PathBuf,
}

/// What `series rebase` is asked to do.
#[derive(Debug, Clone)]
pub struct RebaseRequest {
    pub job: RebaseJob,
    /// Worktree for a conflict (default: beside the new tree).
    pub worktree: Option<PathBuf>,
    pub progress: bool,
}

/// A rebase stopped at a conflict (also the `--continue` state).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    #[serde(flatten)]
    pub job: RebaseJob,
    pub branch: String,
    pub worktree: PathBuf,
    /// 0-based index of the patch that conflicted.
    pub stopped_at: usize,
    pub stop_tip: String,
    pub reports: Vec<PatchReport>,
}

#[derive(Debug)]
pub enum RebaseResult {
    Done(Done),
    Stopped(Box<State>),
}

#[derive(Debug)]
pub struct Done {
    pub branch: String,
    pub reports: Vec<PatchReport>,
    pub version: u32,
    pub out: PathBuf,
    pub export: String,
    pub range_diff: PathBuf,
}

fn state_path(repo: &Repository) -> PathBuf {
    repo.path().join(STATE_FILE)
}

fn read_state(new_tree: &Path) -> Result<(Repository, State)> {
    let repo = open_repo(new_tree)?;
    let path = state_path(&repo);
    let text = std::fs::read_to_string(&path).map_err(|_| {
        anyhow::anyhow!(
            "no series rebase is in progress in {} (no {})",
            new_tree.display(),
            path.display()
        )
    })?;
    let state: State =
        serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?;
    Ok((repo, state))
}

fn write_state(repo: &Repository, state: &State) -> Result<()> {
    let path = state_path(repo);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(state)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Start a rebase.
pub fn rebase(req: &RebaseRequest) -> Result<RebaseResult> {
    let series = Series::load(&req.job.series_dir)?;
    if series.toml.base.version == req.job.to {
        bail!(
            "series {} is already based on {}; nothing to rebase",
            series.name(),
            req.job.to
        );
    }
    let repo = open_repo(&req.job.new_tree)?;
    ensure_no_operation(&repo)?;
    if state_path(&repo).exists() {
        bail!(
            "a series rebase is already in progress in {}; finish it with `cargo xtask series rebase \
             --continue` or drop it with `--abort`",
            req.job.new_tree.display()
        );
    }
    skip_hash_checks_on_read();
    add_alternate(&repo, &req.job.old_tree)?;
    write_objects_in_memory(&repo)?;
    let old_repo = open_repo(&req.job.old_tree)?;
    let old_base = apply::verify_base(&old_repo, &series)?.id();
    let new_base = tag_commit(&repo, &req.job.to, &req.job.new_tree)?;
    let version = series.toml.version + 1;
    let branch = format!("{}/v{version}", series.name());
    let conflict_branch = format!("{branch}-rebase");
    for b in [&branch, &conflict_branch] {
        if repo.find_branch(b, git2::BranchType::Local).is_ok() {
            bail!(
                "branch {b} already exists in {}; delete it (`git -C {} branch -D {b}`) and run again",
                req.job.new_tree.display(),
                req.job.new_tree.display()
            );
        }
    }
    let worktree = req
        .worktree
        .clone()
        .unwrap_or_else(|| default_worktree(&req.job.new_tree, series.name()));
    if worktree.exists() {
        bail!(
            "{} exists; move it away or pass --worktree DIR",
            worktree.display()
        );
    }
    let patches = load_patches(&series)?;
    if req.progress {
        eprintln!(
            "rebasing {} v{} ({} patches) from {} onto {}",
            series.name(),
            series.toml.version,
            patches.mails.len(),
            series.toml.base.version,
            req.job.to
        );
    }
    let r = replay(
        &repo,
        &patches,
        0,
        new_base.id(),
        old_base,
        &new_base,
        &req.job.to,
        req.progress,
    )?;
    let state = State {
        job: req.job.clone(),
        branch: conflict_branch,
        worktree,
        stopped_at: r.reports.len().saturating_sub(1),
        stop_tip: r.tip.to_string(),
        reports: r.reports.clone(),
    };
    match r.conflict {
        Some(files) => stop(&repo, state, &files),
        None => finish(&repo, &series, &state, r.reports, r.tip, r.old_tip),
    }
}

fn default_worktree(new_tree: &Path, name: &str) -> PathBuf {
    let tree_name = new_tree
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    new_tree.with_file_name(format!("{tree_name}-rebase-{name}"))
}

/// Copies into the new tree's own object database what the commits of
/// each `base..tip` (first parents) need and it lacks, as one pack. The
/// replay wrote them to memory ([`write_objects_in_memory`]); and `repo`
/// reads the old tree's objects through an in-memory alternate, and libgit2
/// does not write an object the alternate already has (a patched file
/// identical to one the old tree holds, or a commit rebuilt exactly as it
/// was there), so a branch could name objects only the old tree has. The
/// pack's entries are stored, not compressed, as `tree fetch` writes its
/// own: a few megabytes, written in a fraction of zlib's time.
fn persist_commits(repo: &Repository, new_tree: &Path, ranges: &[(Oid, Oid)]) -> Result<()> {
    let own = open_repo(new_tree)?;
    let (src, dst) = (repo.odb()?, own.odb()?);
    let mut wanted = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for (base, tip) in ranges {
        commit_objects(repo, *base, *tip, &mut seen, &mut wanted)?;
    }
    let mut pack = crate::tree::pack::PackWriter::create(own.path(), 0)?;
    for oid in wanted {
        // No refresh of the pack list on a miss: nothing else writes here meanwhile.
        if dst.exists_ext(oid, git2::OdbLookupFlags::NO_REFRESH) {
            continue;
        }
        let obj = src
            .read(oid)
            .with_context(|| format!("reading object {oid}"))?;
        let kind = match obj.kind() {
            git2::ObjectType::Commit => crate::tree::pack::Kind::Commit,
            git2::ObjectType::Tree => crate::tree::pack::Kind::Tree,
            git2::ObjectType::Blob => crate::tree::pack::Kind::Blob,
            other => bail!("object {oid} is a {other}, not part of a commit"),
        };
        if pack.add(kind, obj.data())? != *oid.as_bytes() {
            bail!("object {oid} does not hash to its id");
        }
    }
    pack.finish()?;
    Ok(())
}

/// The commits `base..tip` (first parents) and every tree and blob of
/// theirs that differs from the base's at its path, each once (`seen`).
fn commit_objects(
    repo: &Repository,
    base: Oid,
    tip: Oid,
    seen: &mut std::collections::HashSet<Oid>,
    out: &mut Vec<Oid>,
) -> Result<()> {
    let mut at = repo.find_commit(tip)?;
    let base_tree = repo.find_commit(base)?.tree_id();
    while at.id() != base {
        tree_objects(repo, at.tree_id(), Some(base_tree), seen, out)?;
        out.push(at.id());
        at = at
            .parent(0)
            .with_context(|| format!("commit {} does not lead to {base}", at.id()))?;
    }
    Ok(())
}

/// `tree` and what it holds that `base` (the same path's tree) does not.
fn tree_objects(
    repo: &Repository,
    tree: Oid,
    base: Option<Oid>,
    seen: &mut std::collections::HashSet<Oid>,
    out: &mut Vec<Oid>,
) -> Result<()> {
    if Some(tree) == base || !seen.insert(tree) {
        return Ok(());
    }
    let t = repo.find_tree(tree)?;
    let b = base.map(|b| repo.find_tree(b)).transpose()?;
    for e in t.iter() {
        let in_base = b
            .as_ref()
            .and_then(|b| b.get_name_bytes(e.name_bytes()))
            .map(|x| x.id());
        if in_base == Some(e.id()) {
            continue;
        }
        match e.kind() {
            Some(git2::ObjectType::Tree) => tree_objects(repo, e.id(), in_base, seen, out)?,
            Some(git2::ObjectType::Blob) if seen.insert(e.id()) => out.push(e.id()),
            // A blob listed already, or a gitlink (a commit of another repository).
            _ => {}
        }
    }
    out.push(tree);
    Ok(())
}

/// Leave the conflict branch, its worktree with the markers, and the state.
fn stop(repo: &Repository, state: State, files: &[(String, Vec<u8>)]) -> Result<RebaseResult> {
    let tip = repo.find_commit(Oid::from_str(&state.stop_tip)?)?;
    let base = tag_commit(repo, &state.job.to, &state.job.new_tree)?.id();
    persist_commits(repo, &state.job.new_tree, &[(base, tip.id())])?;
    repo.branch(&state.branch, &tip, false)
        .with_context(|| format!("creating branch {}", state.branch))?;
    let sh = Shell::new()?;
    let (tree, wt, branch) = (&state.job.new_tree, &state.worktree, &state.branch);
    let out = cmd!(sh, "git -C {tree} worktree add --quiet {wt} {branch}")
        .quiet()
        .ignore_status()
        .output()?;
    if !out.status.success() {
        let _ = repo
            .find_branch(branch, git2::BranchType::Local)
            .map(|mut b| b.delete());
        bail!(
            "git worktree add {} failed: {}",
            wt.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    for (path, content) in files {
        let target = wt.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, content)
            .with_context(|| format!("writing {}", target.display()))?;
    }
    write_state(repo, &state)?;
    Ok(RebaseResult::Stopped(Box::new(state)))
}

/// How to go on from a stopped rebase, for the user.
pub fn stopped_message(state: &State) -> String {
    let r = state.reports.last();
    let (file, hunk) = match r.map(|r| &r.outcome) {
        Some(Outcome::Conflict { file, hunk }) => (file.clone(), hunk.clone()),
        _ => (String::new(), String::new()),
    };
    let before = match state.stopped_at {
        0 => "no patch".to_string(),
        1 => "the 1 patch".to_string(),
        n => format!("the {n} patches"),
    };
    format!(
        "stopped at patch {} ({}): conflict in {file}, hunk {hunk}.\n\
         Branch {} holds {before} before it; the worktree {} has the conflict markers \
         (your checkout of {} is unchanged).\n\
         Fix the file(s) there and commit (`git -C {} commit -a`), then run \
         `cargo xtask series rebase --continue --tree {}`; or `--abort` to drop the branch and the worktree.",
        state.stopped_at + 1,
        r.map(|r| r.file.as_str()).unwrap_or(""),
        state.branch,
        state.worktree.display(),
        state.job.new_tree.display(),
        state.worktree.display(),
        state.job.new_tree.display(),
    )
}

/// `git worktree remove [--force] WT` in `new_tree`, its error text kept.
fn remove_worktree(new_tree: &Path, wt: &Path, force: bool) -> Result<()> {
    let sh = Shell::new()?;
    let force = force.then_some("--force");
    let out = cmd!(sh, "git -C {new_tree} worktree remove {force...} {wt}")
        .quiet()
        .ignore_status()
        .output()?;
    if !out.status.success() {
        bail!(
            "git worktree remove {} failed: {}",
            wt.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// `--abort`: remove the worktree, the conflict branch and the state.
pub fn abort(new_tree: &Path) -> Result<String> {
    let (repo, state) = read_state(new_tree)?;
    let sh = Shell::new()?;
    if state.worktree.exists() {
        remove_worktree(new_tree, &state.worktree, true)?;
    }
    let _ = cmd!(sh, "git -C {new_tree} worktree prune")
        .quiet()
        .ignore_status()
        .output();
    if let Ok(mut b) = repo.find_branch(&state.branch, git2::BranchType::Local) {
        b.delete()
            .with_context(|| format!("deleting branch {}", state.branch))?;
    }
    std::fs::remove_file(state_path(&repo))?;
    Ok(format!(
        "rebase onto {} aborted: removed worktree {} and branch {}; nothing else was changed",
        state.job.to,
        state.worktree.display(),
        state.branch
    ))
}

/// `--continue`: take the worktree's committed fix as the stopped patch, go on.
pub fn resume(new_tree: &Path, progress: bool) -> Result<RebaseResult> {
    let (repo, mut state) = read_state(new_tree)?;
    skip_hash_checks_on_read();
    add_alternate(&repo, &state.job.old_tree)?;
    write_objects_in_memory(&repo)?;
    let series = Series::load(&state.job.series_dir)?;
    let patches = load_patches(&series)?;
    let wt_repo = open_repo(&state.worktree)?;
    ensure_no_operation(&wt_repo)?;
    apply::ensure_clean(&wt_repo)
        .map_err(|e| e.context("commit your fix in the rebase worktree first"))?;
    let head = wt_repo.head()?.peel_to_commit()?;
    let stop_tip = Oid::from_str(&state.stop_tip)?;
    if head.id() == stop_tip {
        bail!(
            "nothing committed in {} since the rebase stopped; fix the conflict, `git -C {} commit -a`, then --continue",
            state.worktree.display(),
            state.worktree.display()
        );
    }
    if !repo.graph_descendant_of(head.id(), stop_tip)? {
        bail!(
            "the worktree's HEAD {} does not build on {}; commit your fix on top of it",
            short(head.id()),
            short(stop_tip)
        );
    }
    let mail = &patches.mails[state.stopped_at];
    let tree = repo.find_tree(head.tree_id())?;
    for path in &mail.files {
        if let Some(content) = blob_at(&repo, &tree, path)? {
            if content
                .split(|b| *b == b'\n')
                .any(|l| l.starts_with(b"<<<<<<< ") || l.starts_with(b">>>>>>> "))
            {
                bail!("{path} still has conflict markers in your commit; fix it, amend, then --continue");
            }
        }
    }
    let time = git2::Time::new(mail.time, mail.offset_minutes);
    let author = git2::Signature::new(&mail.author_name, &mail.author_email, &time)?;
    let parent = repo.find_commit(stop_tip)?;
    let resolved = repo.commit(None, &author, &author, &mail.message, &tree, &[&parent])?;
    let last = state.reports.last_mut().context("empty rebase state")?;
    last.outcome = Outcome::Resolved;
    last.commit = Some(resolved.to_string());

    // The old side up to and including the stopped patch.
    let old_repo = open_repo(&state.job.old_tree)?;
    let mut old_tip = repo.find_commit(apply::verify_base(&old_repo, &series)?.id())?;
    for k in 0..=state.stopped_at {
        let oid = commit_patch(&repo, &old_tip, &patches.mails[k], &patches.diffs[k])?;
        old_tip = repo.find_commit(oid)?;
    }
    let new_base = tag_commit(&repo, &state.job.to, new_tree)?;
    let r = replay(
        &repo,
        &patches,
        state.stopped_at + 1,
        resolved,
        old_tip.id(),
        &new_base,
        &state.job.to,
        progress,
    )?;
    let mut reports = state.reports.clone();
    reports.extend(r.reports);
    // The worktree's branch moves to what has been replayed; the user's commit stays in its reflog.
    let resolved_c = repo.find_commit(r.tip)?;
    match r.conflict {
        Some(files) => {
            persist_commits(&repo, new_tree, &[(new_base.id(), r.tip)])?;
            let sh = Shell::new()?;
            let wt = &state.worktree;
            let tip = r.tip.to_string();
            cmd!(sh, "git -C {wt} reset --quiet --hard {tip}")
                .quiet()
                .run()?;
            for (path, content) in &files {
                std::fs::write(wt.join(path), content)?;
            }
            state.stopped_at = reports.len() - 1;
            state.stop_tip = r.tip.to_string();
            state.reports = reports;
            write_state(&repo, &state)?;
            Ok(RebaseResult::Stopped(Box::new(state)))
        }
        None => {
            remove_worktree(new_tree, &state.worktree, false)?;
            if let Ok(mut b) = repo.find_branch(&state.branch, git2::BranchType::Local) {
                b.delete()?;
            }
            std::fs::remove_file(state_path(&repo))?;
            finish(&repo, &series, &state, reports, resolved_c.id(), r.old_tip)
        }
    }
}

/// On success: branch `<name>/v<N+1>`, the series written for the new base, the range-diff.
fn finish(
    repo: &Repository,
    series: &Series,
    state: &State,
    reports: Vec<PatchReport>,
    tip: Oid,
    old_tip: Oid,
) -> Result<RebaseResult> {
    let version = series.toml.version + 1;
    let branch = format!("{}/v{version}", series.name());
    let new_base = tag_commit(repo, &state.job.to, &state.job.new_tree)?;
    let tip_c = repo.find_commit(tip)?;
    if tip == new_base.id() {
        bail!(
            "every patch of the series is already in {}: nothing left to write",
            state.job.to
        );
    }
    // Everything that can fail comes before anything the user sees changes:
    // the range-diff (its old side is built from the series files as they are
    // now, before the swap replaces them), the staged export, then the swap,
    // the branch and the range-diff file.
    // The branch, and the range-diff's old side: the previous version on the old base.
    let old_base = apply::verify_base(&open_repo(&state.job.old_tree)?, series)?.id();
    persist_commits(
        repo,
        &state.job.new_tree,
        &[(new_base.id(), tip), (old_base, old_tip)],
    )?;
    let tip_hex = tip.to_string();
    let mut range_diff = Some(spawn_range_diff(state, &new_base, old_base, old_tip, tip)?);
    // Whatever stops the export stops the range-diff with it.
    struct KillOnDrop<'a>(&'a mut Option<std::process::Child>);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            if let Some(mut c) = self.0.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let guard = KillOnDrop(&mut range_diff);

    let toml_text = std::fs::read_to_string(series.dir.join(SERIES_TOML))?;
    let source_key = tree_source_key(repo);
    let changes = changelog(&state.job.to, &reports);
    let new_toml = bump_toml(
        &toml_text,
        &series.toml,
        version,
        &state.job.to,
        &source_key,
        &new_base.tree_id().to_string(),
        &changes,
    )?;

    // Stage a complete series directory, export into it, then move it in.
    let parent = crate::tree::dest_parent(&state.job.out)?;
    let stage_root = tempfile::Builder::new()
        .prefix(".xtask-rebase-")
        .tempdir_in(&parent)?;
    let staged = stage_root.path().join(series.name());
    std::fs::create_dir(&staged)?;
    std::fs::write(staged.join(SERIES_TOML), &new_toml)?;
    if let Some(cover) = &series.cover {
        std::fs::copy(cover, staged.join(COVER_LETTER))?;
    }
    for p in &series.patches {
        std::fs::copy(
            p,
            staged.join(p.file_name().context("patch without a name")?),
        )?;
    }
    let range = format!("v{}..{tip_hex}", state.job.to);
    let report = super::export::export(&staged, &state.job.new_tree, Some(&range))
        .with_context(|| format!("exporting the rebased commits {range}"))?;
    let range_diff = range_diff_text(guard.0.take().context("range-diff already collected")?)?;
    drop(guard);
    // Check the staged series loads before it replaces anything.
    Series::load(&staged)?;
    super::export::swap_dir(&staged, &state.job.out)?;
    repo.branch(&branch, &tip_c, false)
        .with_context(|| format!("creating branch {branch}"))?;
    crate::tree::dest_parent(&state.job.range_diff)?;
    std::fs::write(&state.job.range_diff, range_diff + "\n")
        .with_context(|| format!("writing {}", state.job.range_diff.display()))?;
    Ok(RebaseResult::Done(Done {
        branch,
        reports,
        version,
        out: state.job.out.clone(),
        export: report.to_string(),
        range_diff: state.job.range_diff.clone(),
    }))
}

/// Starts `git range-diff` of the previous version (`old_tip`, the series
/// files as they were, on the old base) against the rebased commits ending
/// at `tip`; it runs while the export does, [`range_diff_text`] collects it.
fn spawn_range_diff(
    state: &State,
    new_base: &Commit<'_>,
    old_base: Oid,
    old_tip: Oid,
    tip: Oid,
) -> Result<std::process::Child> {
    let old_repo = open_repo(&state.job.old_tree)?;
    std::process::Command::new("git")
        .arg("-C")
        .arg(&state.job.new_tree)
        .args(["range-diff", "--no-color"])
        .arg(format!("{old_base}..{old_tip}"))
        .arg(format!("{}..{tip}", new_base.id()))
        .env(
            "GIT_ALTERNATE_OBJECT_DIRECTORIES",
            old_repo.path().join("objects"),
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("running git range-diff against the previous version")
}

fn range_diff_text(child: std::process::Child) -> Result<String> {
    let out = child
        .wait_with_output()
        .context("git range-diff against the previous version")?;
    if !out.status.success() {
        bail!(
            "git range-diff against the previous version failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim_end().to_string())
}

fn tree_source_key(repo: &Repository) -> String {
    let meta = std::fs::read_to_string(repo.path().join("xtask-tree.toml")).unwrap_or_default();
    let source = toml::from_str::<toml::Value>(&meta)
        .ok()
        .and_then(|v| v.get("source").and_then(|s| s.as_str()).map(str::to_string));
    match source.as_deref() {
        None | Some("debian") => "debian-orig".into(),
        Some(s) if s.starts_with("git:") => "git".into(),
        Some(_) => "tarball".into(),
    }
}

/// The changelog entry of the rebased version.
pub fn changelog(to: &str, reports: &[PatchReport]) -> Vec<String> {
    let mut changes = vec![format!("Rebased onto {to}.")];
    for r in reports {
        let what = match &r.outcome {
            Outcome::AlreadyApplied { why } => {
                format!("Dropped \"{}\": already in {to} ({why}).", r.subject)
            }
            Outcome::ThreeWay { files } => format!(
                "\"{}\": merged three-way with {to} ({}).",
                r.subject,
                files.join(", ")
            ),
            Outcome::Resolved => format!("\"{}\": conflict with {to} resolved by hand.", r.subject),
            _ => continue,
        };
        changes.push(what);
    }
    changes
}

/// series.toml with the next version, the new base and a changelog entry;
/// everything else (comments, order) kept as written.
fn bump_toml(
    text: &str,
    old: &SeriesToml,
    version: u32,
    to: &str,
    key: &str,
    tree: &str,
    changes: &[String],
) -> Result<String> {
    let mut out = String::new();
    let mut section = String::new();
    let (mut did_version, mut did_base, mut did_trees) = (false, false, false);
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
        }
        if section.is_empty() && t.starts_with("version") && t.contains('=') && !did_version {
            out.push_str(&format!("version = {version}\n"));
            did_version = true;
        } else if section == "[base]" && t.starts_with("version") && t.contains('=') {
            out.push_str(&format!("version = \"{to}\"\n"));
            did_base = true;
        } else if section == "[base]" && t.starts_with("trees") && t.contains('=') {
            out.push_str(&format!("trees = {{ {key} = \"{tree}\" }}\n"));
            did_trees = true;
        } else {
            out.push_str(line);
        }
    }
    if !(did_version && did_base && did_trees) {
        bail!("series.toml: could not find `version`, `[base] version` and `[base] trees` one per line to update; edit it to that shape");
    }
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let list: Vec<String> = changes
        .iter()
        .map(|c| toml::Value::String(c.clone()).to_string())
        .collect();
    out.push_str(&format!(
        "\n[[changelog]]\nversion = {version}\nchanges = [\n    {},\n]\n",
        list.join(",\n    ")
    ));
    let parsed = SeriesToml::parse(&out, Path::new(SERIES_TOML))?;
    let mut expect = old.clone();
    expect.version = version;
    expect.base.version = to.to_string();
    expect.base.trees = BTreeMap::from([(key.to_string(), tree.to_string())]);
    expect.changelog.push(model::ChangelogEntry {
        version,
        changes: changes.to_vec(),
    });
    if parsed != expect {
        bail!("series.toml: the rewritten file does not say what was meant (is [base] split over several lines?)");
    }
    Ok(out)
}

#[derive(Debug, clap::Args)]
pub struct RebaseArgs {
    /// Series name or path to a series directory.
    #[arg(long, default_value = super::DEFAULT_SERIES)]
    pub series: String,
    /// The new base, e.g. 6.1.177 (fetched as `tree fetch` does).
    #[arg(long, required_unless_present_any = ["cont", "abort"])]
    pub to: Option<String>,
    /// Where the new base comes from: debian | git:<url>#<ref> | tarball:<path>.
    #[arg(long, default_value = "debian")]
    pub from: String,
    /// Repository of the new base (default: fetched under target/kernel/), and
    /// the tree `--continue`/`--abort` work on.
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Repository of the current base (default: the fetched pinned base).
    #[arg(long)]
    pub old_tree: Option<PathBuf>,
    /// Where the rebased series is written (default: the series directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Worktree for a conflict (default: beside the new tree).
    #[arg(long)]
    pub worktree: Option<PathBuf>,
    /// Go on after fixing the conflict and committing in the worktree.
    #[arg(long = "continue", conflicts_with = "abort")]
    pub cont: bool,
    /// Drop a stopped rebase: its branch, worktree and state.
    #[arg(long)]
    pub abort: bool,
}

fn print_result(result: RebaseResult) -> Result<std::process::ExitCode> {
    match result {
        RebaseResult::Done(done) => {
            println!("{}", report_table(&done.reports));
            println!("{}", done.export);
            println!(
                "branch {} holds v{}; series written to {}; range-diff against the previous \
                 version in {} (for the cover letter: `series format --compare-to`)",
                done.branch,
                done.version,
                done.out.display(),
                done.range_diff.display()
            );
            Ok(std::process::ExitCode::SUCCESS)
        }
        RebaseResult::Stopped(state) => {
            println!("{}", report_table(&state.reports));
            println!("{}", stopped_message(&state));
            Ok(std::process::ExitCode::from(1))
        }
    }
}

/// Fetch (or reuse) the tree of `version`; a missing tarball says so.
pub fn fetch_base(from: &str, version: &str, dir: Option<PathBuf>) -> Result<PathBuf> {
    let source: crate::tree::Source = from.parse()?;
    let fetched = crate::tree::fetch(&crate::tree::FetchRequest {
        source,
        version: Some(version.to_string()),
        dir,
        progress: true,
    })
    .map_err(|e| {
        e.context(format!(
            "linux {version} cannot be downloaded; nothing was changed"
        ))
    })?;
    Ok(fetched.path)
}

pub fn run(args: RebaseArgs) -> Result<std::process::ExitCode> {
    if args.cont || args.abort {
        let tree = match args.tree {
            Some(t) => t,
            None => bail!(
                "--continue and --abort need --tree: the new base's tree the rebase stopped in"
            ),
        };
        if args.abort {
            println!("{}", abort(&tree)?);
            return Ok(std::process::ExitCode::SUCCESS);
        }
        return print_result(resume(&tree, true)?);
    }
    let to = args.to.context("--to VERSION is required")?;
    crate::tree::validate_version(&to)?;
    let dir = model::resolve_series_dir(&args.series, &crate::util::patches_dir())?;
    let series = Series::load(&dir)?;
    let old_tree = match args.old_tree {
        Some(t) => t,
        None => fetch_base("debian", &series.toml.base.version, None)?,
    };
    let new_tree = match args.tree {
        Some(t) => t,
        None => fetch_base(&args.from, &to, None)?,
    };
    let range_diff = crate::util::target_dir().join("series").join(format!(
        "{}-v{}.range-diff",
        series.name(),
        series.toml.version + 1
    ));
    let req = RebaseRequest {
        job: RebaseJob {
            series_dir: dir.clone(),
            old_tree,
            new_tree,
            to,
            out: args.out.unwrap_or(dir),
            range_diff,
        },
        worktree: args.worktree,
        progress: true,
    };
    print_result(rebase(&req)?)
}

#[cfg(test)]
mod tests {
    use super::nearest_match;

    #[test]
    fn a_hunk_is_found_nearest_to_its_line_and_the_earlier_of_two_as_near() {
        let file: Vec<&[u8]> = vec![b"a\n", b"b\n", b"x\n", b"c\n", b"x\n", b"d\n", b"x\n"];
        let x: &[&[u8]] = &[b"x\n"];
        // At the line named, or the nearest; of 2 and 6 from 4, the earlier.
        assert_eq!(nearest_match(&file, x, 4), Some(4));
        assert_eq!(nearest_match(&file, x, 3), Some(2));
        assert_eq!(nearest_match(&file, x, 5), Some(4));
        assert_eq!(nearest_match(&file, x, 0), Some(2));
        // A header past the end of the file still finds the last match.
        assert_eq!(nearest_match(&file, x, 40), Some(6));
        let run: &[&[u8]] = &[b"c\n", b"x\n", b"d\n"];
        assert_eq!(nearest_match(&file, run, 0), Some(3));
        let run: &[&[u8]] = &[b"d\n", b"x\n", b"a\n"];
        assert_eq!(nearest_match(&file, run, 3), None);
        let run: &[&[u8]] = &[b"x\n", b"d\n", b"x\n"];
        assert_eq!(nearest_match(&file, run, 0), Some(4));
        assert_eq!(nearest_match(&file[..2], run, 0), None);
    }
}
