//! `cargo xtask apply`: `git am` semantics with git2, atomically.
//!
//! Every patch becomes a commit object (author, author date, subject and
//! message from the mail; committer = author so commit ids are reproducible,
//! which `series export` relies on for byte-identical `From <sha>` lines).
//! Commits are built from trees in the object database only: the work tree,
//! the index and HEAD are never touched, and the branch is created last. A
//! failure at patch K leaves only unreachable objects behind (`git gc` drops
//! them), no branch.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use git2::{
    BranchType, Commit, Diff, Oid, Repository, RepositoryOpenFlags, Signature, StatusOptions, Time,
};

use super::mail::{self, PatchMail};
use super::model::Series;
use super::{Applied, AppliedPatch};

/// How many commits of the base's history are searched for patches that
/// are already upstream (same stable patch-id).
pub const HISTORY_LIMIT: usize = 5000;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Replace an existing branch of the same name (never the checked-out one).
    pub force: bool,
    /// After success, check the new branch out (work tree must be clean, which
    /// `apply` verified anyway).
    pub checkout: bool,
    /// Print progress to stderr.
    pub verbose: bool,
    pub history_limit: usize,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            force: false,
            checkout: false,
            verbose: false,
            history_limit: HISTORY_LIMIT,
        }
    }
}

/// Open a kernel tree; a clear error when it is not a git repository.
pub fn open_repo(tree: &Path) -> Result<Repository> {
    if !tree.exists() {
        bail!(
            "kernel tree {} does not exist; run `cargo xtask tree fetch` or pass --tree DIR",
            tree.display()
        );
    }
    Repository::open_ext(
        tree,
        RepositoryOpenFlags::NO_SEARCH,
        std::iter::empty::<&std::ffi::OsStr>(),
    )
    .map_err(|err| {
        anyhow::anyhow!(
            "{} is not a git repository ({}); pass --tree with a kernel git tree, e.g. the one \
                 `cargo xtask tree fetch` prints",
            tree.display(),
            err.message()
        )
    })
}

/// The base commit of a series in `repo`: tag `v<version>` when present,
/// else HEAD; its tree must be one of `[base].trees`.
pub fn verify_base<'r>(repo: &'r Repository, series: &Series) -> Result<Commit<'r>> {
    let tag = format!("v{}", series.toml.base.version);
    let (commit, what) = match repo.revparse_single(&format!("refs/tags/{tag}")) {
        Ok(obj) => (
            obj.peel_to_commit()
                .with_context(|| format!("tag {tag} does not point to a commit"))?,
            format!("tag {tag}"),
        ),
        Err(_) => {
            let head = repo.head().map_err(|err| {
                anyhow::anyhow!(
                    "{}: no HEAD commit ({}); is the tree empty?",
                    workdir_name(repo),
                    err.message()
                )
            })?;
            (
                head.peel_to_commit().context("HEAD is not a commit")?,
                "HEAD".to_string(),
            )
        }
    };
    let found = commit.tree_id().to_string();
    if !series.toml.base.trees.values().any(|t| *t == found) {
        let expected: Vec<String> = series
            .toml
            .base
            .trees
            .iter()
            .map(|(src, t)| format!("{t} ({src})"))
            .collect();
        bail!(
            "wrong base in {}: series {} expects Linux {} with tree {}, but {what} (commit {}) has \
             tree {found}; check out the right base or fetch it with `cargo xtask tree fetch`",
            workdir_name(repo),
            series.name(),
            series.toml.base.version,
            expected.join(" or "),
            short(commit.id()),
        );
    }
    Ok(commit)
}

fn workdir_name(repo: &Repository) -> String {
    repo.workdir()
        .unwrap_or_else(|| repo.path())
        .display()
        .to_string()
}

pub fn short(id: Oid) -> String {
    crate::util::short_hash(&id.to_string()).to_string()
}

/// Refuse a work tree with modified or staged tracked files.
pub fn ensure_clean(repo: &Repository) -> Result<()> {
    if repo.is_bare() {
        return Ok(());
    }
    let mut opts = StatusOptions::new();
    opts.include_untracked(false)
        .include_ignored(false)
        .exclude_submodules(true);
    let statuses = repo
        .statuses(Some(&mut opts))
        .context("reading the status of the work tree")?;
    let dirty: Vec<String> = statuses
        .iter()
        .filter(|s| !s.status().is_ignored() && s.status() != git2::Status::CURRENT)
        .map(|s| s.path().unwrap_or("?").to_string())
        .collect();
    let conflicted: Vec<String> = statuses
        .iter()
        .filter(|s| s.status().is_conflicted())
        .map(|s| s.path().unwrap_or("?").to_string())
        .collect();
    if !conflicted.is_empty() {
        bail!(
            "the index of {} has unresolved conflicts ({}); resolve them and commit, or drop \
             them (`git -C {} reset --merge`), then run again",
            workdir_name(repo),
            conflicted.join(", "),
            workdir_name(repo)
        );
    }
    if !dirty.is_empty() {
        let shown: Vec<&str> = dirty.iter().take(10).map(String::as_str).collect();
        let more = if dirty.len() > 10 {
            format!(" and {} more", dirty.len() - 10)
        } else {
            String::new()
        };
        bail!(
            "the work tree of {} has uncommitted changes ({}{more}); commit or stash them first \
             (`git -C {} stash`)",
            workdir_name(repo),
            shown.join(", "),
            workdir_name(repo)
        );
    }
    Ok(())
}

/// Patch-ids of the commits reachable from `base` (newest first, at most
/// `limit`) that touch any of `files`.
pub(crate) fn history_patch_ids(
    repo: &Repository,
    base: &Commit<'_>,
    files: &BTreeSet<String>,
    limit: usize,
) -> Result<HashMap<Oid, Oid>> {
    let mut ids = HashMap::new();
    let mut walk = repo.revwalk()?;
    walk.push(base.id())?;
    walk.set_sorting(git2::Sort::TIME)?;
    for (n, oid) in walk.enumerate() {
        if n >= limit {
            break;
        }
        let commit = repo.find_commit(oid?)?;
        if commit.parent_count() != 1 {
            continue;
        }
        let parent_tree = commit.parent(0)?.tree()?;
        let diff = repo.diff_tree_to_tree(Some(&parent_tree), Some(&commit.tree()?), None)?;
        let touches = diff.deltas().any(|d| {
            d.new_file()
                .path()
                .and_then(|p| p.to_str())
                .is_some_and(|p| files.contains(p))
        });
        if touches {
            ids.insert(diff.patchid(None)?, commit.id());
        }
    }
    Ok(ids)
}

/// Apply one parsed patch on top of `parent`; returns the new commit id.
///
/// libgit2's `apply_to_tree` loads the whole tree into an index, which costs
/// ~80 ms per patch on a kernel tree. So the diff is applied to a small tree
/// holding only the files it touches, and the resulting blobs are spliced
/// into the full tree with a `TreeUpdateBuilder` (only the subtrees on the
/// touched paths are rewritten).
pub fn commit_patch(
    repo: &Repository,
    parent: &Commit<'_>,
    patch: &PatchMail,
    diff: &Diff<'_>,
) -> Result<Oid> {
    let full = parent.tree()?;
    let p = patch.file.display();
    let mut small = git2::Index::new()?;
    let mut created = Vec::new();
    for path in &patch.files {
        match full.get_path(Path::new(path)) {
            Ok(entry) => {
                if entry.kind() != Some(git2::ObjectType::Blob) {
                    bail!("{p} does not apply: {path} is a directory or submodule in the base, not a file");
                }
                small.add(&index_entry(path, entry.id(), entry.filemode() as u32))?;
            }
            Err(_) => created.push(path.clone()),
        }
    }
    let small_tree = repo.find_tree(small.write_tree_to(repo)?)?;
    let last_file = RefCell::new(String::new());
    let last_hunk = RefCell::new(String::new());
    let result = {
        let mut opts = git2::ApplyOptions::new();
        opts.delta_callback(|delta| {
            if let Some(delta) = delta {
                *last_file.borrow_mut() = delta
                    .new_file()
                    .path()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                last_hunk.borrow_mut().clear();
            }
            true
        });
        opts.hunk_callback(|hunk| {
            if let Some(hunk) = hunk {
                *last_hunk.borrow_mut() = String::from_utf8_lossy(hunk.header())
                    .trim_end()
                    .to_string();
            }
            true
        });
        repo.apply_to_tree(&small_tree, diff, Some(&mut opts))
    };
    let index = match result {
        Ok(index) => index,
        Err(err) => {
            let file = last_file.borrow();
            let hunk = last_hunk.borrow();
            let file = if file.is_empty() {
                patch.files.first().cloned().unwrap_or_default()
            } else {
                file.clone()
            };
            let hunk = if hunk.is_empty() {
                "(before the first hunk)".to_string()
            } else {
                format!("`{hunk}`")
            };
            let why = if created.contains(&file) && !err.message().contains("exist") {
                format!("{} ({file} does not exist in the tree)", err.message())
            } else {
                err.message().to_string()
            };
            bail!("{p} does not apply: file {file}, hunk {hunk}: {why}");
        }
    };
    let mut update = git2::build::TreeUpdateBuilder::new();
    for path in &patch.files {
        let Some(entry) = index.get_path(Path::new(path), 0) else {
            bail!("{p}: applying left no {path} (deleting files is not supported)");
        };
        let mode = match entry.mode {
            0o100755 => git2::FileMode::BlobExecutable,
            0o120000 => git2::FileMode::Link,
            _ => git2::FileMode::Blob,
        };
        update.upsert(path.as_str(), entry.id, mode);
    }
    let new_tree = repo.find_tree(update.create_updated(repo, &full)?)?;
    let time = Time::new(patch.time, patch.offset_minutes);
    let author = Signature::new(&patch.author_name, &patch.author_email, &time)
        .with_context(|| format!("{}: bad author", patch.file.display()))?;
    Ok(repo.commit(None, &author, &author, &patch.message, &new_tree, &[parent])?)
}

fn index_entry(path: &str, id: Oid, mode: u32) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode,
        uid: 0,
        gid: 0,
        file_size: 0,
        id,
        flags: path.len().min(0xfff) as u16,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// Each patch (true for an extra one) and, in the same order, its diff.
type ParsedPatches = (Vec<(PatchMail, bool)>, Vec<Diff<'static>>);

/// The series' patches, then the `extra` ones, parsed, each with its diff
/// as libgit2 reads it.
fn parse_patches(series: &Series, extra: &[PathBuf]) -> Result<ParsedPatches> {
    let mut patches = Vec::new();
    for file in &series.patches {
        patches.push((mail::parse_patch_file(file)?, false));
    }
    for file in extra {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        patches.push((
            mail::parse_patch_or_diff(file, &format!("mutant: {stem}"))?,
            true,
        ));
    }
    let diffs = patches
        .iter()
        .map(|(p, _)| {
            Diff::from_buffer(&p.diff).map_err(|err| {
                anyhow::anyhow!(
                    "{}: libgit2 cannot parse the diff: {}",
                    p.file.display(),
                    err.message()
                )
            })
        })
        .collect::<Result<_>>()?;
    Ok((patches, diffs))
}

/// The whole `apply`: parse, verify, build commits, create the branch.
pub fn apply_series(
    series: &Series,
    tree: &Path,
    extra: &[PathBuf],
    branch: Option<&str>,
    opts: &ApplyOptions,
) -> Result<Applied> {
    let repo = open_repo(tree)?;
    if opts.checkout && repo.is_bare() {
        bail!(
            "{} is a bare repository: it has no work tree to check a branch out in; drop \
             --checkout (the branch is created all the same)",
            workdir_name(&repo)
        );
    }
    ensure_no_operation(&repo)?;
    let (patches, diffs) = parse_patches(series, extra)?;

    let base = verify_base(&repo, series)?;
    let branch = branch
        .map(str::to_string)
        .unwrap_or_else(|| series.toml.branch_name());
    if !git2::Branch::name_is_valid(&branch)? {
        bail!("{branch:?} is not a valid branch name");
    }
    if let Ok(existing) = repo.find_branch(&branch, BranchType::Local) {
        let at = existing.get().target().map(short).unwrap_or_default();
        if !opts.force {
            bail!(
                "branch {branch} already exists in {} (at {at}); delete it with `git -C {} branch -D {branch}` \
                 or pass --force to replace it",
                workdir_name(&repo),
                workdir_name(&repo)
            );
        }
        if let Some((how, worktree)) = branch_in_use(&repo, &branch)? {
            bail!(
                "branch {branch} is {how} in {}; --force never replaces such a branch: switch \
                 that work tree to another branch first, or pass --branch NAME",
                worktree.display()
            );
        }
    }

    ensure_clean(&repo)?;

    let series_files: BTreeSet<String> = patches
        .iter()
        .filter(|(_, extra)| !extra)
        .flat_map(|(p, _)| p.files.iter().cloned())
        .collect();
    let upstream = history_patch_ids(&repo, &base, &series_files, opts.history_limit)?;

    let mut tip = base.clone();
    let mut applied = Vec::new();
    let total = patches.len();
    for (k, ((patch, is_extra), diff)) in patches.iter().zip(&diffs).enumerate() {
        if !is_extra {
            let id = diff.patchid(None)?;
            if let Some(upstream_commit) = upstream.get(&id) {
                if opts.verbose {
                    eprintln!(
                        "  [{}/{total}] skip  {}: already in the base as {} (same patch-id)",
                        k + 1,
                        display_name(&patch.file),
                        short(*upstream_commit)
                    );
                }
                applied.push(AppliedPatch {
                    file: patch.file.clone(),
                    subject: patch.subject.clone(),
                    commit: None,
                });
                continue;
            }
        }
        let oid = commit_patch(&repo, &tip, patch, diff)?;
        if opts.verbose {
            eprintln!("  [{}/{total}] {}  {}", k + 1, short(oid), patch.subject);
        }
        tip = repo.find_commit(oid)?;
        applied.push(AppliedPatch {
            file: patch.file.clone(),
            subject: patch.subject.clone(),
            commit: Some(oid.to_string()),
        });
    }

    if opts.checkout {
        // Before the branch exists, so a refused checkout leaves nothing.
        check_checkout(&repo, &tip.tree()?, &branch)?;
    }
    repo.branch(&branch, &tip, opts.force)
        .with_context(|| format!("creating branch {branch} at {}", short(tip.id())))?;
    if opts.checkout {
        checkout_branch(&repo, &branch)?;
    }
    Ok(Applied {
        branch,
        base: base.id().to_string(),
        commits: applied,
        bare: repo.is_bare(),
    })
}

fn display_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Check out `branch` (safe checkout: refuses to overwrite local changes
/// or untracked files, naming them).
pub fn checkout_branch(repo: &Repository, branch: &str) -> Result<()> {
    if repo.is_bare() {
        bail!(
            "{} is a bare repository: nothing can be checked out",
            workdir_name(repo)
        );
    }
    let refname = format!("refs/heads/{branch}");
    let obj = repo.revparse_single(&refname)?;
    check_checkout(repo, &obj.peel_to_tree()?, branch)?;
    let mut co = git2::build::CheckoutBuilder::new();
    co.safe();
    repo.checkout_tree(&obj, Some(&mut co)).with_context(|| {
        format!("checking out {branch} (the branch exists; check it out by hand)")
    })?;
    repo.set_head(&refname)?;
    Ok(())
}

/// Refuses, naming the files, a checkout of `tree` that would overwrite
/// an untracked file: one at a path `tree` adds (or in the way of its
/// directories). Tracked files are known clean ([`ensure_clean`]).
fn check_checkout(repo: &Repository, tree: &git2::Tree<'_>, branch: &str) -> Result<()> {
    let Some(workdir) = repo.workdir() else {
        return Ok(());
    };
    let head = repo.head().ok().and_then(|h| h.peel_to_tree().ok());
    let diff = repo.diff_tree_to_tree(head.as_ref(), Some(tree), None)?;
    let mut in_the_way = Vec::new();
    for delta in diff.deltas() {
        if delta.status() != git2::Delta::Added {
            continue;
        }
        let Some(path) = delta.new_file().path() else {
            continue;
        };
        let target = workdir.join(path);
        let blocked = target.symlink_metadata().is_ok()
            || path.ancestors().skip(1).any(|a| {
                !a.as_os_str().is_empty()
                    && workdir
                        .join(a)
                        .symlink_metadata()
                        .is_ok_and(|m| !m.is_dir())
            });
        if blocked {
            in_the_way.push(path.display().to_string());
        }
    }
    if !in_the_way.is_empty() {
        bail!(
            "checking out {branch} would overwrite untracked {} in {}: {}; move {} away and run \
             again (nothing was changed)",
            if in_the_way.len() == 1 {
                "file"
            } else {
                "files"
            },
            workdir_name(repo),
            in_the_way.join(", "),
            if in_the_way.len() == 1 { "it" } else { "them" }
        );
    }
    Ok(())
}

/// Refuse a repository in the middle of a rebase, am, merge, cherry-pick,
/// revert or bisect: a new HEAD would be taken over by that operation.
pub fn ensure_no_operation(repo: &Repository) -> Result<()> {
    use git2::RepositoryState as S;
    let dir = workdir_name(repo);
    let (what, finish) = match repo.state() {
        S::Clean => return Ok(()),
        S::Rebase | S::RebaseInteractive | S::RebaseMerge => (
            "a rebase",
            format!("`git -C {dir} rebase --continue` or `git -C {dir} rebase --abort`"),
        ),
        S::ApplyMailbox => (
            "a git am",
            format!("`git -C {dir} am --continue` or `git -C {dir} am --abort`"),
        ),
        S::ApplyMailboxOrRebase => (
            "a git am or rebase",
            format!("`git -C {dir} am --abort` or `git -C {dir} rebase --abort`"),
        ),
        S::Merge => (
            "a merge",
            format!("`git -C {dir} merge --continue` or `git -C {dir} merge --abort`"),
        ),
        S::CherryPick | S::CherryPickSequence => (
            "a cherry-pick",
            format!("`git -C {dir} cherry-pick --continue` or `git -C {dir} cherry-pick --abort`"),
        ),
        S::Revert | S::RevertSequence => (
            "a revert",
            format!("`git -C {dir} revert --continue` or `git -C {dir} revert --abort`"),
        ),
        S::Bisect => ("a bisect", format!("`git -C {dir} bisect reset`")),
    };
    bail!("{what} is in progress in {dir}; finish it or abort it first ({finish}), then run again")
}

/// Where `branch` is in use: checked out, being rebased or bisected in the
/// main work tree or any linked worktree of the repository.
pub fn branch_in_use(repo: &Repository, branch: &str) -> Result<Option<(&'static str, PathBuf)>> {
    let refname = format!("refs/heads/{branch}");
    let main = if repo.is_worktree() {
        Repository::open(repo.commondir()).context("opening the main repository")?
    } else {
        Repository::open(repo.path()).context("reopening the repository")?
    };
    let mut trees: Vec<(PathBuf, PathBuf)> = vec![(
        main.workdir().unwrap_or(main.path()).to_path_buf(),
        main.path().to_path_buf(),
    )];
    for name in main.worktrees()?.iter().flatten().flatten() {
        let Ok(wt) = main.find_worktree(name) else {
            continue;
        };
        if let Ok(wt_repo) = Repository::open_from_worktree(&wt) {
            trees.push((wt.path().to_path_buf(), wt_repo.path().to_path_buf()));
        }
    }
    let read = |path: PathBuf| std::fs::read_to_string(path).unwrap_or_default();
    for (worktree, gitdir) in trees {
        if read(gitdir.join("HEAD")).trim() == format!("ref: {refname}") {
            return Ok(Some(("checked out", worktree)));
        }
        for state in ["rebase-merge", "rebase-apply"] {
            if read(gitdir.join(state).join("head-name")).trim() == refname {
                return Ok(Some(("being rebased", worktree)));
            }
        }
        let bisect = read(gitdir.join("BISECT_START"));
        if bisect.trim() == branch || bisect.trim() == refname {
            return Ok(Some(("being bisected", worktree)));
        }
    }
    Ok(None)
}
