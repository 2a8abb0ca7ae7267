//! The harness's own checkouts of the series: the series (and, for a
//! mutant, one more patch) applied on a branch the harness owns, its tip
//! checked out in the tree's scratch worktree. Every stage that builds the
//! series (build-kernel, test, the mutants, the matrix) comes through here,
//! so they all share one worktree and one build directory per config, and a
//! build after another rebuilds only what changed in between.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use super::apply::{self, ApplyOptions};
use super::{load_series, AppliedPatch, DEFAULT_SERIES};

/// Why a checkout is made; it names the harness branch, which is replaced
/// on every run (the user's branches and checkout are never touched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Purpose {
    /// What `build-kernel` and `test` build without --tree: `<series>/xtask`.
    Default,
    /// `build-kernel --each-patch`: `<series>/each-patch`.
    EachPatch,
    /// The unmutated series a mutation campaign starts from:
    /// `<series>/v<N>-baseline`.
    Baseline,
    /// The series plus the mutant `patch`: `<series>/v<N>-mutant-<name>`.
    Mutant { name: String, patch: PathBuf },
}

impl Purpose {
    fn branch(&self, series: &str, version: u32) -> String {
        match self {
            Purpose::Default => format!("{series}/xtask"),
            Purpose::EachPatch => format!("{series}/each-patch"),
            Purpose::Baseline => format!("{series}/v{version}-baseline"),
            Purpose::Mutant { name, .. } => format!("{series}/v{version}-mutant-{name}"),
        }
    }

    fn extra(&self) -> Vec<PathBuf> {
        match self {
            Purpose::Mutant { patch, .. } => vec![patch.clone()],
            _ => Vec::new(),
        }
    }
}

/// What [`checkout`] made.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The scratch worktree, checked out (detached) at `tip`.
    pub worktree: PathBuf,
    /// The harness branch holding the applied series.
    pub branch: String,
    /// Commit id of the last applied patch.
    pub tip: String,
    /// Every patch of the series (and the extra one), in order; patches
    /// already in the base have no commit.
    pub commits: Vec<AppliedPatch>,
}

/// Applies the default series (plus a mutant's patch) to `tree` on the
/// purpose's branch, replacing that branch if it exists, and checks the
/// tip out in the tree's scratch worktree.
pub fn checkout(tree: &Path, purpose: &Purpose) -> Result<Checkout> {
    let tree = tree
        .canonicalize()
        .with_context(|| format!("kernel tree {} does not exist", tree.display()))?;
    let series = load_series(DEFAULT_SERIES)?;
    let branch = purpose.branch(series.name(), series.toml.version);
    let opts = ApplyOptions {
        force: true,
        ..Default::default()
    };
    let applied = apply::apply_series(&series, &tree, &purpose.extra(), Some(&branch), &opts)
        .with_context(|| {
            format!(
                "applying patches/{DEFAULT_SERIES} to {} on branch {branch}",
                tree.display()
            )
        })?;
    // Every patch already in the base leaves the base itself to build.
    let tip = applied
        .commits
        .iter()
        .rev()
        .find_map(|c| c.commit.clone())
        .unwrap_or_else(|| applied.base.clone());
    println!(
        "series: {} patches on {} (branch {branch}, tip {})",
        applied.commits.len(),
        tree.display(),
        crate::util::short_hash(&tip)
    );
    let worktree = scratch_worktree(&tree, &tip)?;
    Ok(Checkout {
        worktree,
        branch,
        tip,
        commits: applied.commits,
    })
}

/// [`checkout`] of the pinned tree (fetched or cached) for `purpose`.
pub fn checkout_default_tree(purpose: &Purpose) -> Result<Checkout> {
    let tree = crate::tree::ensure_default_tree().context(
        "no --tree given and the default tree is not available; pass --tree /path/to/linux",
    )?;
    checkout(&tree, purpose)
}

/// The detached worktree of `tree` the harness builds in,
/// `kbuild/<tree-id>/series-src`, checked out at `commit` (created the first
/// time). Reusing it keeps builds incremental.
pub fn scratch_worktree(tree: &Path, commit: &str) -> Result<PathBuf> {
    let root = crate::build::tree_build_root(tree);
    let scratch = root.join("series-src");
    let sh = Shell::new()?;
    if !scratch.join(".git").exists() {
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        sh.change_dir(tree);
        cmd!(sh, "git worktree prune").quiet().run()?;
        cmd!(sh, "git worktree add --quiet --detach {scratch} {commit}")
            .quiet()
            .run()
            .with_context(|| format!("creating the scratch worktree {}", scratch.display()))?;
    } else {
        sh.change_dir(&scratch);
        cmd!(sh, "git checkout --quiet --force --detach {commit}")
            .quiet()
            .run()
            .with_context(|| format!("checking out {commit} in {}", scratch.display()))?;
    }
    Ok(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_purpose_has_its_own_branch() {
        let mutant = Purpose::Mutant {
            name: "no-lock".into(),
            patch: "patches/mutants/no-lock.patch".into(),
        };
        let branches: Vec<String> = [
            Purpose::Default,
            Purpose::EachPatch,
            Purpose::Baseline,
            mutant.clone(),
        ]
        .iter()
        .map(|p| p.branch("guest_memfd", 2))
        .collect();
        assert_eq!(
            branches,
            [
                "guest_memfd/xtask",
                "guest_memfd/each-patch",
                "guest_memfd/v2-baseline",
                "guest_memfd/v2-mutant-no-lock"
            ]
        );
        assert_eq!(
            mutant.extra(),
            [PathBuf::from("patches/mutants/no-lock.patch")]
        );
        assert!(Purpose::Baseline.extra().is_empty());
    }
}
