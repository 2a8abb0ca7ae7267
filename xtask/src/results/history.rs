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

/// One line of the mutant table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantRow {
    pub name: String,
    /// "killed", "survived" or "error".
    pub verdict: String,
    /// Killing cases (or reasons), or the error.
    pub detail: Vec<String>,
    /// run_id of the boot that tested it, when it got that far.
    #[serde(default)]
    pub run_id: Option<String>,
}

/// `mutants.json`: what `cargo xtask test --mutant/--mutants` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MutantsReport {
    pub run_id: String,
    pub series: SeriesTag,
    pub rows: Vec<MutantRow>,
}

impl MutantsReport {
    pub fn killed(&self) -> usize {
        self.rows.iter().filter(|r| r.verdict == "killed").count()
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
            "### Mutants of {} v{} on {}\n\n| mutant | verdict | killed by |\n| --- | --- | --- |\n",
            self.series.name, self.series.version, self.series.base
        );
        for r in &self.rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                r.name,
                r.verdict,
                md_cell(&r.detail.join(", "))
            );
        }
        let _ = writeln!(
            out,
            "\nmutation score: {}/{}",
            self.killed(),
            self.rows.len()
        );
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

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

impl RunResult {
    /// The summary as Markdown (CI appends it to the job summary).
    pub fn summary_markdown(&self) -> String {
        let (p, f, s, m) = self.ktap.count();
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
            self.accel,
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
            "| counts | {p} passed, {f} failed, {s} skipped, {m} without result |"
        );
        let _ = writeln!(out, "| splats | {} |", self.splats.len());
        let _ = writeln!(
            out,
            "\n| case | status | ms | detail |\n| --- | --- | --- | --- |"
        );
        for c in &self.ktap.cases {
            let (status, detail) = match &c.status {
                Status::Pass => ("PASS", String::new()),
                Status::Fail => ("FAIL", c.diagnostics.last().cloned().unwrap_or_default()),
                Status::Skip(r) => ("SKIP", r.clone()),
                Status::Missing(r) => ("NO RESULT", r.clone()),
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
        if r.mode == "vng"
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
    let (p, f, s, m) = r.ktap.count();
    (p, f + m, s)
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
            r.accel,
            r.splats.len(),
            match (r.taint_before, r.taint_after) {
                (Some(b), Some(a)) if a == b => format!("unchanged ({a})"),
                (Some(b), Some(a)) => format!("{b} -> {a}"),
                _ => "not read".to_string(),
            },
            r.run_id
        );
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
        let _ = writeln!(
            out,
            "- mutants killed: {}/{} (run {})",
            m.killed(),
            m.rows.len(),
            m.run_id
        );
        for r in &m.rows {
            let _ = writeln!(out, "  {}: {} {}", r.name, r.verdict, brief(&r.detail, 2));
        }
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
    use crate::results::{parse_ktap, Outcome};

    fn run(id: &str, version: u32, config: &str, ktap: &str, mutant: Option<&str>) -> RunResult {
        RunResult {
            run_id: id.into(),
            mode: "vng".into(),
            kernel: Some("6.1.176".into()),
            kernel_image: None,
            config: config.into(),
            accel: "tcg".into(),
            accel_reason: "test".into(),
            command: vec![],
            guest_exit: Some(0),
            boot_to_first_ktap_s: None,
            duration_s: 1.0,
            taint_before: Some(0),
            taint_after: Some(0),
            ktap: parse_ktap(ktap),
            splats: vec![],
            outcome: Outcome::Passed,
            series: Some(SeriesTag {
                name: "guest_memfd".into(),
                version,
                base: "6.1.176".into(),
                mutant: mutant.map(Into::into),
            }),
        }
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
            rows: vec![
                MutantRow {
                    name: "m1".into(),
                    verdict: "killed".into(),
                    detail: vec!["b".into()],
                    run_id: None,
                },
                MutantRow {
                    name: "m2".into(),
                    verdict: "survived".into(),
                    detail: vec![],
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
        assert!(text.contains("mutants killed: 1/2"), "{text}");
        assert!(text.contains("m2: survived"), "{text}");
        assert_eq!(
            brief(&["a".into(), "b".into(), "c".into()], 2),
            "a, b (+1 more)"
        );
        assert!(std::fs::read_to_string(dir.join("summary.md"))
            .unwrap()
            .contains("| m1 | killed | b |"));
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
}
