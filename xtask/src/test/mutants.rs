//! `--mutant NAME` / `--all-mutants`: the unmutated series first (it must
//! pass), then each patches/mutants/NAME.patch on top of the series, built,
//! booted and judged like any run. A mutant is KILLED only by cases of a
//! suite that ran; what could not be tested is shown and not scored.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

use super::{boot_image, kernel_image, new_run_dir, run_boot, series_tag, TestArgs};
use crate::kconfig;
use crate::results::{self, MutantRow, MutantVerdict, MutantsReport, RunResult};
use crate::series::Purpose;
use crate::util;

/// The mutants to run: one name, or every patches/mutants/*.patch.
pub fn mutant_names(args: &TestArgs) -> Result<Vec<String>> {
    let dir = util::patches_dir().join("mutants");
    let mut all: Vec<String> = std::fs::read_dir(&dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".patch"))
                        .map(str::to_string)
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort();
    if let Some(name) = &args.mutant {
        if !all.contains(name) {
            bail!(
                "no mutant `{name}`: {} does not exist (available: {})",
                dir.join(format!("{name}.patch")).display(),
                if all.is_empty() {
                    "none".into()
                } else {
                    all.join(", ")
                }
            );
        }
        return Ok(vec![name.clone()]);
    }
    if !args.all_mutants {
        return Ok(Vec::new());
    }
    if all.is_empty() {
        bail!("--all-mutants: no patches in {}", dir.display());
    }
    // Listed mutants are expected to survive: `cargo xtask mutate run
    // --only NAME` checks one, the nightly campaign all of them.
    let listed = crate::mutate::equivalent::load(&crate::mutate::equivalent::default_path())?;
    let (skip, run): (Vec<String>, Vec<String>) = all
        .into_iter()
        .partition(|n| listed.reason_for_name(n).is_some());
    if !skip.is_empty() {
        println!(
            "--all-mutants: leaving out {} listed in patches/mutants/equivalent.toml ({})",
            skip.len(),
            skip.join(", ")
        );
    }
    Ok(run)
}

/// What a judged run of a mutant says about it: KILLED by its culprits,
/// SURVIVED when the run passed, ERROR when the run failed with no case to
/// blame (no boot, no KTAP, a harness error, a hang or panic outside any
/// case, a splat outside any case).
pub fn classify(r: &RunResult) -> MutantRow {
    let (verdict, killed_by, detail) = if r.outcome.is_pass() {
        (
            MutantVerdict::Survived,
            vec![],
            vec!["every case passed: a selftest is missing".to_string()],
        )
    } else if !r.culprits.is_empty() {
        (
            MutantVerdict::Killed,
            r.culprits
                .iter()
                .map(|c| format!("{} ({})", c.case, c.why))
                .collect(),
            vec![],
        )
    } else {
        (MutantVerdict::Error, vec![], vec![r.outcome.headline()])
    };
    MutantRow {
        name: r
            .series
            .as_ref()
            .and_then(|t| t.mutant.clone())
            .unwrap_or_default(),
        verdict,
        killed_by,
        detail,
        run_id: Some(r.run_id.clone()),
    }
}

fn row(name: &str, verdict: MutantVerdict, detail: String) -> MutantRow {
    MutantRow {
        name: name.to_string(),
        verdict,
        killed_by: vec![],
        detail: vec![detail],
        run_id: None,
    }
}

/// One mutant: apply, build, boot, judge.
pub(crate) fn test_mutant(args: &TestArgs, tree: &Path, name: &str) -> MutantRow {
    let fragments = match kconfig::fragment_list(&args.config) {
        Ok(f) => f,
        Err(e) => return row(name, MutantVerdict::Error, format!("{e:#}")),
    };
    let patch = util::patches_dir()
        .join("mutants")
        .join(format!("{name}.patch"));
    let purpose = Purpose::Mutant {
        name: name.to_string(),
        patch,
    };
    let (src, branch) = match crate::series::checkout(tree, &purpose) {
        Ok(c) => (c.worktree, c.branch),
        Err(e) => return row(name, MutantVerdict::Error, format!("{e:#}")),
    };
    println!(
        "mutant {name}: applied on branch {branch}, building {}",
        src.display()
    );
    let (image, release) = match kernel_image(args, Some(&src), &fragments) {
        Ok(k) => k,
        Err(e) => return row(name, MutantVerdict::BuildFailed, format!("{e:#}")),
    };
    match boot_image(args, &image, release, series_tag(Some(name)), &fragments) {
        Ok(r) => classify(&r),
        Err(e) => row(name, MutantVerdict::Error, format!("{e:#}")),
    }
}

pub fn run(args: &TestArgs) -> Result<ExitCode> {
    if args.host || args.kernel.is_some() {
        bail!("--mutant/--all-mutants build and boot a kernel per mutant; they cannot be combined with --host or --kernel");
    }
    if args.filter.is_some() {
        bail!("--mutant/--all-mutants run the whole suite (a mutant survives only if no case notices it); drop --filter");
    }
    let names = mutant_names(args)?;
    let Some(series) = series_tag(None) else {
        bail!("cannot read patches/guest_memfd/series.toml: the mutants are patches on top of that series");
    };
    let tree = match &args.tree {
        Some(t) => t.clone(),
        None => crate::tree::ensure_default_tree()
            .context("no --tree given and the default tree is not available")?,
    };

    println!("\n=== baseline: the unmutated series (must pass before any mutant counts)");
    let baseline: Result<RunResult> = crate::series::checkout(&tree, &Purpose::Baseline)
        .and_then(|c| run_boot(args, Some(&c.worktree), Some(series.clone())));
    let (baseline_ok, baseline_text, baseline_run_id) = match &baseline {
        Ok(r) => (
            r.outcome.is_pass(),
            r.outcome.headline(),
            Some(r.run_id.clone()),
        ),
        Err(e) => (false, format!("could not run: {e:#}"), None),
    };
    let mut rows = Vec::new();
    for name in &names {
        if !baseline_ok {
            rows.push(row(
                name,
                MutantVerdict::NotRun,
                "the unmutated series did not pass".into(),
            ));
            continue;
        }
        println!("\n=== mutant {name}");
        rows.push(test_mutant(args, &tree, name));
    }
    let report = MutantsReport {
        run_id: String::new(),
        series,
        baseline_run_id,
        baseline: baseline_text,
        rows,
    };
    print_table(&report);
    let (run_id, dir) = new_run_dir("mutants")?;
    let report = MutantsReport { run_id, ..report };
    let path = report.write(&dir)?;
    println!("files: {}", path.display());
    let (killed, scored) = report.score();
    Ok(
        if baseline_ok && killed == scored && scored == report.rows.len() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        },
    )
}

fn print_table(report: &MutantsReport) {
    println!(
        "\nbaseline (unmutated series): {} (run {})",
        report.baseline.lines().next().unwrap_or(""),
        report.baseline_run_id.as_deref().unwrap_or("none")
    );
    let w = report
        .rows
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(6)
        .max(6);
    println!("\n{:<w$}  {:<12}  killed by / detail", "mutant", "verdict");
    for r in &report.rows {
        let text = if r.killed_by.is_empty() {
            r.detail
                .iter()
                .map(|d| d.lines().next().unwrap_or(""))
                .collect::<Vec<_>>()
                .join("; ")
        } else {
            results::brief(&r.killed_by, 3)
        };
        println!("{:<w$}  {:<12}  {text}", r.name, r.verdict.label());
    }
    let (k, n) = report.score();
    println!(
        "\nmutation score: {k}/{n} ({:.0}%)",
        100.0 * k as f64 / n.max(1) as f64
    );
    let untested = report.untested();
    if !untested.is_empty() {
        println!("not scored: {untested}");
    }
}
