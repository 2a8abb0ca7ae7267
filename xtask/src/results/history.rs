//! Results across runs: which series a run tested, the mutant table, the
//! Markdown summary CI posts, and the cover letter's "Tested:" section built
//! from the newest results for a series version (compared with the previous
//! version's when they exist).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{RunResult, Status};

/// The series a kernel was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesTag {
    pub name: String,
    pub version: u32,
    /// Upstream version of the base, e.g. 6.1.176.
    pub base: String,
    /// The mutant applied on top, if any.
    #[serde(default)]
    pub mutant: Option<String>,
}

/// What became of one mutant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MutantVerdict {
    /// The suite ran and a case failed, splatted, or was running when the
    /// kernel hung or panicked: those cases are `killed_by`.
    Killed,
    /// The suite ran and the run passed: no case notices the mutation.
    Survived,
    /// The mutant could not be tested: it did not apply, the kernel never
    /// reached the suite, the harness failed, or the run failed with no
    /// case to blame. Not in the score.
    Error,
    /// The mutated kernel did not build. Not in the score.
    BuildFailed,
    /// Not tried: the unmutated series did not pass first.
    NotRun,
}

impl MutantVerdict {
    pub fn label(self) -> &'static str {
        match self {
            MutantVerdict::Killed => "KILLED",
            MutantVerdict::Survived => "SURVIVED",
            MutantVerdict::Error => "ERROR",
            MutantVerdict::BuildFailed => "BUILD-FAILED",
            MutantVerdict::NotRun => "NOT-RUN",
        }
    }
}

/// One line of the mutant table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantRow {
    pub name: String,
    pub verdict: MutantVerdict,
    /// The cases that killed it (with how: failed, splat, hang, panic).
    #[serde(default)]
    pub killed_by: Vec<String>,
    /// Why it is not killed: the error, the build failure, the outcome.
    #[serde(default)]
    pub detail: Vec<String>,
    /// run_id of the boot that tested it, when it got that far.
    #[serde(default)]
    pub run_id: Option<String>,
}

/// `mutants.json`: what `cargo xtask test --mutant/--all-mutants` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantsReport {
    pub run_id: String,
    pub series: SeriesTag,
    /// The unmutated series' run in the same campaign; it must pass for
    /// any mutant to be tried.
    pub baseline_run_id: Option<String>,
    /// The baseline's outcome (`PASSED`, or why not).
    pub baseline: String,
    pub rows: Vec<MutantRow>,
}

impl MutantsReport {
    pub fn killed(&self) -> usize {
        self.count(MutantVerdict::Killed)
    }

    pub fn count(&self, v: MutantVerdict) -> usize {
        self.rows.iter().filter(|r| r.verdict == v).count()
    }

    /// (killed, killed + survived): mutants that could not be tested are
    /// shown but not scored.
    pub fn score(&self) -> (usize, usize) {
        let k = self.killed();
        (k, k + self.count(MutantVerdict::Survived))
    }

    /// Mutants that were not tested, as "N error, N build-failed, N not-run".
    pub fn untested(&self) -> String {
        [
            MutantVerdict::Error,
            MutantVerdict::BuildFailed,
            MutantVerdict::NotRun,
        ]
        .iter()
        .filter(|v| self.count(**v) > 0)
        .map(|v| format!("{} {}", self.count(*v), v.label().to_lowercase()))
        .collect::<Vec<_>>()
        .join(", ")
    }

    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("mutants.json");
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::write(dir.join("summary.md"), self.summary_markdown())
            .with_context(|| format!("writing {}", dir.join("summary.md").display()))?;
        Ok(path)
    }

    pub fn summary_markdown(&self) -> String {
        let mut out = format!(
            "### Mutants of {} v{} on {}\n\nbaseline (unmutated series): {} (run {})\n\n| mutant | verdict | killed by / detail |\n| --- | --- | --- |\n",
            self.series.name,
            self.series.version,
            self.series.base,
            md_cell(&self.baseline),
            self.baseline_run_id.as_deref().unwrap_or("none")
        );
        for r in &self.rows {
            let text = if r.killed_by.is_empty() {
                r.detail.join(", ")
            } else {
                r.killed_by.join(", ")
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                r.name,
                r.verdict.label(),
                md_cell(&text)
            );
        }
        let (k, n) = self.score();
        let _ = writeln!(out, "\nmutation score: {k}/{n}");
        let untested = self.untested();
        if !untested.is_empty() {
            let _ = writeln!(out, "not scored: {untested}");
        }
        out
    }
}

/// The first `n` entries of a list, and how many more there are (the full
/// list stays in mutants.json).
pub fn brief(list: &[String], n: usize) -> String {
    let mut text = list.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if list.len() > n {
        text.push_str(&format!(" (+{} more)", list.len() - n));
    }
    text
}

/// The first line of `text`, for one-line summaries.
fn one_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

impl RunResult {
    /// The summary as Markdown (CI appends it to the job summary).
    pub fn summary_markdown(&self) -> String {
        let m = self.ktap.count().3;
        let (p, f, s) = (self.tally.passed, self.tally.failed, self.tally.skipped);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### gmem-selftests: {}\n",
            md_cell(&self.outcome.headline())
        );
        let _ = writeln!(out, "| | |\n| --- | --- |");
        let _ = writeln!(
            out,
            "| kernel | {} |",
            self.kernel.as_deref().unwrap_or("(unknown)")
        );
        let _ = writeln!(out, "| config | {} |", md_cell(&self.config));
        let _ = writeln!(
            out,
            "| accel | {} ({}) |",
            self.accel_name(),
            md_cell(&self.accel_reason)
        );
        if let Some(t) = &self.series {
            let mutant = t
                .mutant
                .as_deref()
                .map(|m| format!(" + mutant {m}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| series | {} v{} on {}{mutant} |",
                t.name, t.version, t.base
            );
        }
        let _ = writeln!(
            out,
            "| counts | {p} passed, {f} failed, {s} skipped ({m} without result) |"
        );
        let _ = writeln!(out, "| splats | {} |", self.splats.len());
        let _ = writeln!(
            out,
            "\n| case | status | ms | detail |\n| --- | --- | --- | --- |"
        );
        for c in &self.ktap.cases {
            let culprit = self.culprits.iter().find(|k| k.case == c.name);
            let (status, detail) = match (&c.status, culprit) {
                (Status::Pass, None) => ("PASS", String::new()),
                (Status::Pass, Some(k)) => ("SPLAT", k.why.clone()),
                (Status::Fail, _) => ("FAIL", c.diagnostics.last().cloned().unwrap_or_default()),
                (Status::Skip(r), None) => ("SKIP", r.clone()),
                (Status::Skip(r), Some(k)) => ("BAD SKIP", format!("{}: {r}", k.why)),
                (Status::Missing(r), _) => ("NO RESULT", r.clone()),
            };
            let ms = c
                .duration_ms
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into());
            let _ = writeln!(
                out,
                "| {} | {status} | {ms} | {} |",
                c.name,
                md_cell(&detail)
            );
        }
        for sp in &self.splats {
            let where_ = sp.test.clone().unwrap_or_else(|| sp.phase.clone());
            let _ = writeln!(
                out,
                "\nsplat in {}: `{}`",
                md_cell(&where_),
                sp.title.replace('`', "'")
            );
        }
        out
    }
}

/// Every readable `results.json` and `mutants.json` under `root`
/// (`target/results/`), keyed by run id, which sorts by time.
fn load_all(root: &Path) -> (Vec<RunResult>, Vec<MutantsReport>) {
    let mut runs = Vec::new();
    let mut mutants = Vec::new();
    let Ok(entries) = std::fs::read_dir(root) else {
        return (runs, mutants);
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        // `latest` is a symlink to one of the others.
        if entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
            continue;
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("results.json")) {
            if let Ok(r) = serde_json::from_str::<RunResult>(&text) {
                runs.push(r);
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.join("mutants.json")) {
            if let Ok(r) = serde_json::from_str::<MutantsReport>(&text) {
                mutants.push(r);
            }
        }
    }
    runs.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    mutants.sort_by(|a, b| a.run_id.cmp(&b.run_id));
    (runs, mutants)
}

/// The newest booted run of `name` v`version` on `base` per config set.
fn newest_per_config<'a>(
    runs: &'a [RunResult],
    name: &str,
    version: u32,
    base: &str,
) -> BTreeMap<&'a str, &'a RunResult> {
    let mut out = BTreeMap::new();
    for r in runs {
        let Some(t) = &r.series else { continue };
        // A --filter run tests only part of the suite.
        if r.mode == "vng"
            && r.filter.is_none()
            && t.name == name
            && t.version == version
            && t.base == base
            && t.mutant.is_none()
        {
            out.insert(r.config.as_str(), r); // sorted by run id: the last one wins
        }
    }
    out
}

fn counts(r: &RunResult) -> (usize, usize, usize) {
    (r.tally.passed, r.tally.failed, r.tally.skipped)
}

/// The cover letter's "Tested:" section for `name` v`version` on `base`,
/// from the results under `root`; None when no booted run of that version
/// exists (the cover letter then says nothing it cannot back up).
pub fn tested_section(root: &Path, name: &str, version: u32, base: &str) -> Option<String> {
    let (runs, mutants) = load_all(root);
    let current = newest_per_config(&runs, name, version, base);
    if current.is_empty() {
        return None;
    }
    let previous = if version > 1 {
        newest_per_config(&runs, name, version - 1, base)
    } else {
        BTreeMap::new()
    };
    let mut out = String::from("Tested:\n");
    for (config, r) in &current {
        let (p, f, s) = counts(r);
        let _ = writeln!(
            out,
            "- {} (config {config}), gmem-selftests in a virtme-ng guest, accel {}: {p} passed, {f} failed, {s} skipped; {} kernel splat(s); taint {} (run {})",
            r.kernel.as_deref().unwrap_or("kernel of unknown version"),
            r.accel_name(),
            r.splats.len(),
            match (r.taint_before, r.taint_after) {
                (Some(b), Some(a)) if a == b => format!("unchanged ({a})"),
                (Some(b), Some(a)) => format!("{b} -> {a}"),
                _ => "not read".to_string(),
            },
            r.run_id
        );
        if !r.outcome.is_pass() {
            let _ = writeln!(out, "  outcome: {}", one_line(&r.outcome.headline()));
        }
        if let Some(prev) = previous.get(config) {
            let (pp, pf, ps) = counts(prev);
            let _ = writeln!(
                out,
                "  against v{}: passed {pp} -> {p}, failed {pf} -> {f}, skipped {ps} -> {s}",
                version - 1
            );
        }
    }
    if let Some(line) = root.parent().and_then(|t| {
        matrix_tested_line(&t.join("matrix").join("matrix.json"), name, version, base)
    }) {
        out.push_str(&line);
    }
    let newest_mutants = mutants
        .iter()
        .rev()
        .find(|m| m.series.name == name && m.series.version == version && m.series.base == base);
    if let Some(m) = newest_mutants {
        let (k, n) = m.score();
        let untested = m.untested();
        let _ = writeln!(
            out,
            "- mutants killed: {k}/{n} (run {}, after the unmutated series: {}){}",
            m.run_id,
            one_line(&m.baseline),
            if untested.is_empty() {
                String::new()
            } else {
                format!("; not scored: {untested}")
            }
        );
        for r in &m.rows {
            let list = if r.killed_by.is_empty() {
                &r.detail
            } else {
                &r.killed_by
            };
            let _ = writeln!(
                out,
                "  {}: {} {}",
                r.name,
                r.verdict.label().to_lowercase(),
                brief(list, 2)
            );
        }
    }
    if let Some(line) =
        crate::mutate::report::newest_tested_line(root, &format!("{name} v{version}"), base)
    {
        let _ = writeln!(out, "{line}");
    }
    Some(out.trim_end().to_string())
}

/// The Tested: lines on the upstream reference lane, from a matrix.json
/// (`cargo xtask matrix`) whose series lane built `name` v`version` on
/// `base`; None when there is no such matrix.
pub fn matrix_tested_line(path: &Path, name: &str, version: u32, base: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let m: crate::matrix::Matrix = serde_json::from_str(&text).ok()?;
    let t = m.series.as_ref()?;
    if t.name != name || t.version != version || t.base != base {
        return None;
    }
    let lane = m
        .lanes
        .iter()
        .find(|l| l.id == crate::matrix::REFERENCE_LANE)?;
    let c = lane.counts;
    let mut out = format!(
        "- upstream reference {} (no series, same config and selftests binary){}: {} passed, {} failed, {} skipped; {} kernel splat(s)\n",
        lane.kernel.as_deref().unwrap_or("kernel of unknown version"),
        lane.run_id
            .as_deref()
            .map(|r| format!(" (run {r})"))
            .unwrap_or_default(),
        c.pass,
        c.fail + c.no_result,
        c.skip,
        lane.splats.len()
    );
    let _ = writeln!(
        out,
        "  divergences from the reference: {} unexplained, {} explained by divergences.toml (matrix of {})",
        m.unexplained(),
        m.explained(),
        m.generated
    );
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::judge::{judge, Boot, Evidence};
    use crate::results::parse_ktap;

    fn run(id: &str, version: u32, config: &str, ktap: &str, mutant: Option<&str>) -> RunResult {
        let ktap = parse_ktap(ktap);
        let boot = Boot {
            userspace_up: true,
            exit: Some(0),
            ..Default::default()
        };
        let j = judge(&Evidence {
            boot: &boot,
            ktap: &ktap,
            splats: &[],
            taint_before: Some(0),
            taint_after: Some(0),
            expect: None,
            numa_nodes: None,

            exec: false,
        });
        let mut r = RunResult {
            run_id: id.into(),
            mode: "vng".into(),
            kernel: Some("6.1.176".into()),
            kernel_image: None,
            config: config.into(),
            accel: Some(crate::boot::Accel::Tcg),
            accel_reason: "test".into(),
            command: vec![],
            guest_exit: Some(0),
            boot_to_first_ktap_s: None,
            duration_s: 1.0,
            taint_before: Some(0),
            taint_after: Some(0),
            ktap,
            series: Some(SeriesTag {
                name: "guest_memfd".into(),
                version,
                base: "6.1.176".into(),
                mutant: mutant.map(Into::into),
            }),
            ..Default::default()
        };
        r.set_judgement(j);
        r
    }

    fn save(root: &Path, r: &RunResult) {
        let dir = root.join(&r.run_id);
        std::fs::create_dir_all(&dir).unwrap();
        r.write_json(&dir).unwrap();
    }

    const TWO_PASS: &str = "KTAP version 1\n1..3\nok 1 a\nok 2 b\nok 3 c # SKIP no cap\n";
    const ONE_FAIL: &str = "KTAP version 1\n1..3\nok 1 a\nnot ok 2 b\nok 3 c # SKIP no cap\n";

    #[test]
    fn no_results_for_the_version_means_no_section() {
        let tmp = tempfile::tempdir().unwrap();
        save(
            tmp.path(),
            &run("20261101-000000-a", 1, "base+gmem", TWO_PASS, None),
        );
        assert_eq!(
            tested_section(tmp.path(), "guest_memfd", 2, "6.1.176"),
            None
        );
        assert_eq!(
            tested_section(tmp.path(), "guest_memfd", 1, "6.1.177"),
            None
        );
    }

    #[test]
    fn newest_run_per_config_with_change_against_previous_version_and_mutants() {
        let tmp = tempfile::tempdir().unwrap();
        save(
            tmp.path(),
            &run("20261101-000000-a", 1, "base+gmem", ONE_FAIL, None),
        );
        save(
            tmp.path(),
            &run("20261102-000000-a", 2, "base+gmem", ONE_FAIL, None),
        );
        save(
            tmp.path(),
            &run("20261103-000000-a", 2, "base+gmem", TWO_PASS, None),
        );
        // A mutant's run is not a result of the series itself.
        save(
            tmp.path(),
            &run("20261104-000000-a", 2, "base+gmem", ONE_FAIL, Some("m1")),
        );
        let report = MutantsReport {
            run_id: "20261104-000000-mutants".into(),
            series: SeriesTag {
                name: "guest_memfd".into(),
                version: 2,
                base: "6.1.176".into(),
                mutant: None,
            },
            baseline_run_id: Some("20261104-000000-base".into()),
            baseline: "PASSED".into(),
            rows: vec![
                MutantRow {
                    name: "m1".into(),
                    verdict: MutantVerdict::Killed,
                    killed_by: vec!["b".into()],
                    detail: vec![],
                    run_id: None,
                },
                MutantRow {
                    name: "m2".into(),
                    verdict: MutantVerdict::Survived,
                    killed_by: vec![],
                    detail: vec![],
                    run_id: None,
                },
                MutantRow {
                    name: "m3".into(),
                    verdict: MutantVerdict::Error,
                    killed_by: vec![],
                    detail: vec!["kernel did not boot".into()],
                    run_id: None,
                },
            ],
        };
        let dir = tmp.path().join(&report.run_id);
        std::fs::create_dir_all(&dir).unwrap();
        report.write(&dir).unwrap();
        let text = tested_section(tmp.path(), "guest_memfd", 2, "6.1.176").unwrap();
        assert!(
            text.contains("accel tcg: 2 passed, 0 failed, 1 skipped"),
            "{text}"
        );
        assert!(text.contains("(run 20261103-000000-a)"), "{text}");
        assert!(
            text.contains("against v1: passed 1 -> 2, failed 1 -> 0, skipped 1 -> 1"),
            "{text}"
        );
        assert!(
            text.contains("mutants killed: 1/2 (run 20261104-000000-mutants, after the unmutated series: PASSED); not scored: 1 error"),
            "{text}"
        );
        assert!(text.contains("m2: survived"), "{text}");
        assert_eq!(
            brief(&["a".into(), "b".into(), "c".into()], 2),
            "a, b (+1 more)"
        );
        assert!(std::fs::read_to_string(dir.join("summary.md"))
            .unwrap()
            .contains("| m1 | KILLED | b |"));
    }

    #[test]
    fn markdown_summary_lists_cases_and_escapes_pipes() {
        let mut r = run("x", 1, "base+gmem", ONE_FAIL, None);
        r.accel_reason = "auto: a|b".into();
        let md = r.summary_markdown();
        assert!(md.contains("| b | FAIL |"), "{md}");
        assert!(md.contains("auto: a\\|b"), "{md}");
        assert!(
            md.contains("| series | guest_memfd v1 on 6.1.176 |"),
            "{md}"
        );
    }

    #[test]
    fn filtered_runs_are_not_cited_and_failing_runs_say_their_outcome() {
        let tmp = tempfile::tempdir().unwrap();
        let mut filtered = run("20261105-000000-a", 1, "base+gmem", TWO_PASS, None);
        filtered.filter = Some("bind.".into());
        save(tmp.path(), &filtered);
        assert_eq!(
            tested_section(tmp.path(), "guest_memfd", 1, "6.1.176"),
            None,
            "a --filter run is not a test of the series"
        );
        save(
            tmp.path(),
            &run("20261104-000000-a", 1, "base+gmem", ONE_FAIL, None),
        );
        let text = tested_section(tmp.path(), "guest_memfd", 1, "6.1.176").unwrap();
        assert!(text.contains("(run 20261104-000000-a)"), "{text}");
        assert!(
            text.contains("  outcome: FAILED: 1 case(s) failed: b"),
            "{text}"
        );
    }
}
