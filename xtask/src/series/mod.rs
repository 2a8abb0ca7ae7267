//! Patch series: `patches/<series>/series.toml` plus format-patch files;
//! `apply`, `series export` and `series format`.
//!
//! Submodules: [`model`] (series.toml and the directory layout), [`mail`]
//! (format-patch parsing and diff checks), [`apply`] (git am with git2),
//! [`export`] (commits back to files), [`format`] (mailing-list series),
//! [`checkpatch`] (scripts/checkpatch.pl per patch), [`rebase`] (onto a
//! newer point release), [`bases`] (which point releases it applies to),
//! [`bench`], [`rebase_bench`] and [`rebase_case`] (`bench rebase` and what
//! it measures).

pub mod apply;
pub mod bases;
pub mod bench;
pub mod checkout;
pub mod checkpatch;
pub mod export;
pub mod format;
pub mod identity;
pub mod mail;
pub mod model;
pub mod outdir;
pub mod rebase;
pub mod rebase_bench;
pub mod rebase_case;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

/// The series `patches/` holds today; every command defaults to it.
pub const DEFAULT_SERIES: &str = "guest_memfd";

pub use checkout::{checkout, checkout_default_tree, Checkout, Purpose};
pub use model::{Series, SeriesToml};

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Series name (a directory under patches/) or a path to a series directory.
    #[arg(long, default_value = DEFAULT_SERIES)]
    pub series: String,
    /// Kernel tree (default: the fetched tree under target/kernel/).
    #[arg(long)]
    pub tree: Option<PathBuf>,
    /// Branch to create (default `<series>/v<N>`).
    #[arg(long)]
    pub branch: Option<String>,
    /// Extra patches applied after the series (e.g. patches/mutants/NAME.patch).
    #[arg(long = "extra", value_name = "PATCH")]
    pub extra: Vec<PathBuf>,
    /// Replace the branch if it already exists (never the checked-out branch).
    #[arg(long)]
    pub force: bool,
    /// Check the new branch out after a successful apply (default: the
    /// checkout is left as it was).
    #[arg(long)]
    pub checkout: bool,
}

#[derive(Debug, Subcommand)]
pub enum SeriesCmd {
    /// Regenerate patches/<series>/ from the commits of a branch.
    Export {
        /// Kernel tree holding the commits.
        #[arg(long)]
        tree: PathBuf,
        /// BASE..BRANCH (default: from the series base to branch <series>/v<N>).
        #[arg(long)]
        range: Option<String>,
        /// Series name or path to a series directory.
        #[arg(long, default_value = DEFAULT_SERIES)]
        series: String,
    },
    /// Write a mailing-list-ready series (nothing is sent).
    Format {
        /// Series name or path to a series directory.
        #[arg(long, default_value = DEFAULT_SERIES)]
        series: String,
        /// Version N of `[PATCH vN k/M]` (default: `version` of series.toml).
        #[arg(long)]
        reroll: Option<u32>,
        /// Extra recipients, added to `to` of series.toml.
        #[arg(long)]
        to: Vec<String>,
        /// Extra copies, added to `cc` of series.toml.
        #[arg(long)]
        cc: Vec<String>,
        /// Output directory (default: target/series/<series>-v<N>/).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Kernel tree (default: the fetched tree under target/kernel/).
        #[arg(long)]
        tree: Option<PathBuf>,
        /// Previous version for the range-diff: a git ref/range or a series
        /// directory (default: branch <series>/v<N-1> when it exists).
        #[arg(long)]
        compare_to: Option<String>,
        /// Skip scripts/checkpatch.pl.
        #[arg(long)]
        no_checkpatch: bool,
        /// Sender, "Name <email>": From: of every mail, and author of the
        /// patches by series.toml's placeholder-author (default: git config
        /// user.name/user.email of the tree, else of this project).
        #[arg(long)]
        from: Option<String>,
        /// Add the sender's Signed-off-by to every patch.
        #[arg(long)]
        signoff: bool,
        /// Cc each patch to what the tree's scripts/get_maintainer.pl names
        /// for it (and the cover letter to all of them).
        #[arg(long)]
        auto_cc: bool,
    },
    /// Move the series onto a newer point release (per-patch report).
    Rebase(rebase::RebaseArgs),
    /// Which point releases the series applies to, as a table and JSON.
    Bases(bases::BasesArgs),
}

fn default_tree(tree: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match tree {
        Some(tree) => Ok(tree),
        None => crate::tree::ensure_default_tree(),
    }
}

/// Resolve `--series` (name under patches/ or a path) and load it.
pub fn load_series(series: &str) -> anyhow::Result<Series> {
    let dir = model::resolve_series_dir(series, &crate::util::patches_dir())?;
    Series::load(&dir)
}

pub fn run_apply(args: ApplyArgs) -> anyhow::Result<ExitCode> {
    let tree = default_tree(args.tree)?;
    let series = load_series(&args.series)?;
    let opts = apply::ApplyOptions {
        force: args.force,
        checkout: args.checkout,
        verbose: true,
        ..Default::default()
    };
    eprintln!(
        "applying {} v{} ({} patches{}) to {}",
        series.name(),
        series.toml.version,
        series.patches.len(),
        if args.extra.is_empty() {
            String::new()
        } else {
            format!(" + {} extra", args.extra.len())
        },
        tree.display()
    );
    let applied = apply::apply_series(&series, &tree, &args.extra, args.branch.as_deref(), &opts)?;
    println!("{}", applied_table(&applied));
    let skipped = applied
        .commits
        .iter()
        .filter(|c| c.commit.is_none())
        .count();
    println!(
        "branch {} created from base {} with {} commits{}; {}",
        applied.branch,
        crate::util::short_hash(&applied.base),
        applied.commits.len() - skipped,
        if skipped > 0 {
            format!(" ({skipped} patches already in the base, skipped)")
        } else {
            String::new()
        },
        if args.checkout {
            "checked out".to_string()
        } else if applied.bare {
            "a bare repository: no checkout".to_string()
        } else {
            format!(
                "your checkout is unchanged (git -C {} switch {})",
                tree.display(),
                applied.branch
            )
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// `apply` output as a table: patch file, commit (or "skipped"), subject.
pub fn applied_table(applied: &Applied) -> String {
    let width = applied
        .commits
        .iter()
        .map(|c| c.file.file_name().map_or(0, |n| n.to_string_lossy().len()))
        .max()
        .unwrap_or(4)
        .max(5);
    let mut out = format!("{:<width$}  {:<12}  subject\n", "patch", "commit");
    for c in &applied.commits {
        let name = c
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let commit = c
            .commit
            .as_deref()
            .map_or("skipped", crate::util::short_hash);
        out.push_str(&format!("{name:<width$}  {commit:<12}  {}\n", c.subject));
    }
    out.trim_end().to_string()
}

pub fn run(cmd: SeriesCmd) -> anyhow::Result<ExitCode> {
    match cmd {
        SeriesCmd::Rebase(args) => rebase::run(args),
        SeriesCmd::Bases(args) => bases::run(args),
        SeriesCmd::Export {
            tree,
            range,
            series,
        } => {
            let dir = model::resolve_series_dir(&series, &crate::util::patches_dir())?;
            let report = export::export(&dir, &tree, range.as_deref())?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
        SeriesCmd::Format {
            series,
            reroll,
            to,
            cc,
            out,
            tree,
            compare_to,
            no_checkpatch,
            from,
            signoff,
            auto_cc,
        } => {
            // Refuse a bad --out before fetching a tree or anything else.
            if let Some(out) = &out {
                outdir::OutDir::check(out)?;
            }
            let tree = default_tree(tree)?;
            let series = load_series(&series)?;
            let project = crate::util::project_root();
            let from = from.or_else(|| {
                identity::from_git_config(&[&tree, &project]).map(|who| who.to_string())
            });
            let req = format::FormatRequest {
                reroll,
                to,
                cc,
                out,
                compare_to,
                checkpatch: !no_checkpatch,
                from,
                signoff,
                message_id_time: None,
                results_dir: Some(crate::util::target_dir().join("results")),
                auto_cc,
            };
            let report = format::format_series(&series, &tree, &req)?;
            println!("{report}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `bench rebase`: series rebase against git rebase of the same commits.
pub fn bench_rebase(req: &rebase_bench::BenchRequest) -> anyhow::Result<ExitCode> {
    rebase_bench::run(req)
}

pub fn bench_apply() -> anyhow::Result<ExitCode> {
    bench::run()
}

/// What `apply` did.
#[derive(Debug, Clone)]
pub struct Applied {
    pub branch: String,
    /// Commit id of the base and of each applied patch, in order.
    pub base: String,
    pub commits: Vec<AppliedPatch>,
    /// The repository is bare (the branch exists, nothing is checked out).
    pub bare: bool,
}

#[derive(Debug, Clone)]
pub struct AppliedPatch {
    pub file: PathBuf,
    pub subject: String,
    /// None when the patch was already contained in the base and skipped.
    pub commit: Option<String>,
}
