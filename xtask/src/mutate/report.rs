//! A campaign's report, a pure function of its results: the score
//! (killed / (killed + survived); listed equivalents, build failures,
//! flaky ones and errors counted apart), per file and per function, the
//! survivors to turn into cases, kills by hang or panic, equivalents that
//! were killed anyway, and time per mutant. Written as `mutants.json`,
//! `mutants.md` (fits a GitHub job summary), a short text table, and one
//! paragraph for the cover letter's Tested: section.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::equivalent::Stale;
use super::model::{MutantResult, Outcome};

/// File name of the machine-readable report.
pub const JSON: &str = "mutants.json";
/// File name of the Markdown report.
pub const MARKDOWN: &str = "mutants.md";

/// What the campaign was, besides its results.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Meta {
    /// `guest_memfd v2`.
    pub series: String,
    /// Kernel the series is applied to, `6.1.176`.
    pub base: String,
    /// Kconfig fragments, `gmem`.
    pub config: String,
    pub seed: String,
    /// How many mutants the generator made (the campaign may run fewer).
    pub generated_total: usize,
    /// Ids left unstarted (budget, sample).
    pub not_started: Vec<String>,
    /// Wall time of the whole campaign, baseline included.
    pub wall_s: f64,
    /// Wall time from the baseline's verdict to the last mutant's (None in
    /// reports from before it was kept).
    #[serde(default)]
    pub mutants_wall_s: Option<f64>,
    /// Headline of the unmutated series' run.
    pub baseline: Option<String>,
    /// equivalent.toml entries that describe no current mutant.
    pub stale_equivalents: Vec<Stale>,
    /// Run id of the campaign (its directory under target/results/).
    pub run_id: Option<String>,
}

/// One mutant as the report sees it (generated or hand-written).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// A generated id (FILE:LINE:OP[#N]) or a hand-written name.
    pub id: String,
    /// None for a hand-written mutant.
    pub file: Option<String>,
    pub function: Option<String>,
    pub original: Option<String>,
    pub mutated: Option<String>,
    pub outcome: Outcome,
    pub equivalent: Option<String>,
    pub seconds: f64,
    pub run_id: Option<String>,
}

impl Row {
    pub fn generated(r: &MutantResult) -> Row {
        Row {
            id: r.mutant.id.to_string(),
            file: Some(r.mutant.id.file.clone()),
            function: r.mutant.function.clone(),
            original: Some(r.mutant.original.clone()),
            mutated: Some(r.mutant.mutated.clone()),
            outcome: r.outcome.clone(),
            equivalent: r.equivalent.clone(),
            seconds: r.seconds,
            run_id: r.run_id.clone(),
        }
    }

    pub fn hand_written(
        name: &str,
        outcome: Outcome,
        equivalent: Option<String>,
        seconds: f64,
        run_id: Option<String>,
    ) -> Row {
        Row {
            id: name.to_string(),
            file: None,
            function: None,
            original: None,
            mutated: None,
            outcome,
            equivalent,
            seconds,
            run_id,
        }
    }

    /// Where the row counts.
    fn class(&self) -> Class {
        match (&self.outcome, self.equivalent.is_some()) {
            (o, true) if o.is_kill() => Class::EquivalentKilled,
            (Outcome::Survived, true) => Class::Equivalent,
            (Outcome::Killed { .. }, _) => Class::Killed,
            (Outcome::Timeout { .. }, _) => Class::Timeout,
            (Outcome::Panic { .. }, _) => Class::Panic,
            (Outcome::Survived, false) => Class::Survived,
            (Outcome::Flaky { .. }, _) => Class::Flaky,
            (Outcome::BuildFailed { .. }, _) => Class::BuildFailed,
            (Outcome::Error { .. }, _) => Class::Error,
        }
    }

    fn by(&self) -> &[String] {
        match &self.outcome {
            Outcome::Killed { by }
            | Outcome::Timeout { by }
            | Outcome::Panic { by }
            | Outcome::Flaky { by } => by,
            _ => &[],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Killed,
    Timeout,
    Panic,
    Survived,
    Flaky,
    BuildFailed,
    Error,
    Equivalent,
    EquivalentKilled,
}

/// Counts over the rows. A listed equivalent that is killed counts as a
/// kill (it was one) and is also counted in `equivalent_killed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub killed: usize,
    pub timeout: usize,
    pub panic: usize,
    pub survived: usize,
    pub flaky: usize,
    pub build_failed: usize,
    pub error: usize,
    /// Listed in equivalent.toml and survived: not scored.
    pub equivalent: usize,
    /// Listed in equivalent.toml and killed: the entry is wrong (or a case
    /// is flaky); scored as the kill it is.
    pub equivalent_killed: usize,
}

impl Counts {
    fn add(&mut self, row: &Row) {
        self.add_outcome(&row.outcome, row.equivalent.is_some());
    }

    /// One mutant's outcome; `equivalent` when equivalent.toml lists it.
    pub fn add_outcome(&mut self, outcome: &Outcome, equivalent: bool) {
        match outcome {
            Outcome::Survived if equivalent => self.equivalent += 1,
            Outcome::Survived => self.survived += 1,
            Outcome::Killed { .. } => self.killed += 1,
            Outcome::Timeout { .. } => self.timeout += 1,
            Outcome::Panic { .. } => self.panic += 1,
            Outcome::Flaky { .. } => self.flaky += 1,
            Outcome::BuildFailed { .. } => self.build_failed += 1,
            Outcome::Error { .. } => self.error += 1,
        }
        if equivalent && outcome.is_kill() {
            self.equivalent_killed += 1;
        }
    }

    pub fn kills(&self) -> usize {
        self.killed + self.timeout + self.panic
    }

    /// (killed, killed + survived).
    pub fn score(&self) -> (usize, usize) {
        (self.kills(), self.kills() + self.survived)
    }

    /// The score in percent; None when nothing was scored.
    pub fn percent(&self) -> Option<f64> {
        let (k, n) = self.score();
        (n > 0).then(|| 100.0 * k as f64 / n as f64)
    }

    pub fn total(&self) -> usize {
        self.kills() + self.survived + self.flaky + self.build_failed + self.error + self.equivalent
    }
}

/// Counts of one file or function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub counts: Counts,
    pub percent: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Survivor {
    pub id: String,
    pub function: Option<String>,
    pub original: Option<String>,
    pub mutated: Option<String>,
    pub run_id: Option<String>,
}

/// A mutant and the cases named with its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub id: String,
    /// killed, timeout, panic, flaky.
    pub how: String,
    pub by: Vec<String>,
    pub equivalent: Option<String>,
}

/// What a campaign found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub meta: Meta,
    pub counts: Counts,
    pub percent: Option<f64>,
    pub per_file: Vec<Group>,
    pub per_function: Vec<Group>,
    pub survivors: Vec<Survivor>,
    /// Kills by a hang or a panic.
    pub hangs_and_panics: Vec<Named>,
    /// Listed in equivalent.toml, killed all the same.
    pub equivalent_killed: Vec<Named>,
    pub flaky: Vec<Named>,
    /// Build failures and errors: what went wrong, first line.
    pub not_scored: Vec<(String, String)>,
    /// The mutants' wall time / mutants run (without it, the sum of the
    /// mutants' own times / mutants run).
    pub seconds_per_mutant: Option<f64>,
    pub rows: Vec<Row>,
}

fn groups(rows: &[Row], key: impl Fn(&Row) -> String) -> Vec<Group> {
    let mut map: BTreeMap<String, Counts> = BTreeMap::new();
    for r in rows {
        map.entry(key(r)).or_default().add(r);
    }
    map.into_iter()
        .map(|(name, counts)| Group {
            percent: counts.percent(),
            name,
            counts,
        })
        .collect()
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Build the report (pure: same rows and meta, same report).
pub fn build(rows: Vec<Row>, meta: Meta) -> Report {
    let mut counts = Counts::default();
    for r in &rows {
        counts.add(r);
    }
    let file_of = |r: &Row| r.file.clone().unwrap_or_else(|| "hand-written".into());
    let per_file = groups(&rows, file_of);
    let per_function = groups(&rows, |r| {
        format!(
            "{}: {}",
            file_of(r),
            r.function
                .as_deref()
                .unwrap_or(if r.file.is_some() { "?" } else { &r.id })
        )
    });
    let named = |r: &Row, how: &str| Named {
        id: r.id.clone(),
        how: how.to_string(),
        by: r.by().to_vec(),
        equivalent: r.equivalent.clone(),
    };
    let mut survivors = Vec::new();
    let mut hangs_and_panics = Vec::new();
    let mut equivalent_killed = Vec::new();
    let mut flaky = Vec::new();
    let mut not_scored = Vec::new();
    for r in &rows {
        match &r.outcome {
            Outcome::Timeout { .. } => hangs_and_panics.push(named(r, "timeout")),
            Outcome::Panic { .. } => hangs_and_panics.push(named(r, "panic")),
            Outcome::Flaky { .. } => flaky.push(named(r, "flaky")),
            Outcome::BuildFailed { log_tail } => not_scored.push((
                r.id.clone(),
                format!("build failed: {}", first_line(log_tail)),
            )),
            Outcome::Error { detail } => {
                not_scored.push((r.id.clone(), format!("error: {}", first_line(detail))))
            }
            Outcome::Survived if r.equivalent.is_none() => survivors.push(Survivor {
                id: r.id.clone(),
                function: r.function.clone(),
                original: r.original.clone(),
                mutated: r.mutated.clone(),
                run_id: r.run_id.clone(),
            }),
            _ => {}
        }
        if r.class() == Class::EquivalentKilled {
            let how = match r.outcome {
                Outcome::Timeout { .. } => "timeout",
                Outcome::Panic { .. } => "panic",
                _ => "killed",
            };
            equivalent_killed.push(named(r, how));
        }
    }
    let seconds_per_mutant = (!rows.is_empty()).then(|| {
        let wall = meta
            .mutants_wall_s
            .unwrap_or_else(|| rows.iter().map(|r| r.seconds).sum());
        wall / rows.len() as f64
    });
    Report {
        percent: counts.percent(),
        meta,
        counts,
        per_file,
        per_function,
        survivors,
        hangs_and_panics,
        equivalent_killed,
        flaky,
        not_scored,
        seconds_per_mutant,
        rows,
    }
}

fn pct(p: Option<f64>) -> String {
    p.map_or("n/a".to_string(), |p| format!("{p:.0}%"))
}

fn duration(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m{:02}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

fn trimmed(s: &Option<String>) -> String {
    s.as_deref().map(str::trim).unwrap_or("").to_string()
}

/// `|` and backticks would break a Markdown table cell or code span.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('`', "'")
}

impl Report {
    /// `K/N killed (P%)` plus what was counted apart.
    pub fn score_line(&self) -> String {
        let c = &self.counts;
        let (k, n) = c.score();
        let mut apart = Vec::new();
        for (n, what) in [
            (c.equivalent, "listed equivalent"),
            (c.flaky, "flaky"),
            (c.build_failed, "build failed"),
            (c.error, "error"),
        ] {
            if n > 0 {
                apart.push(format!("{n} {what}"));
            }
        }
        format!(
            "mutation score {} ({k} killed of {n} scored{}{})",
            pct(self.percent),
            if c.timeout + c.panic > 0 {
                format!(", {} by timeout, {} by panic", c.timeout, c.panic)
            } else {
                String::new()
            },
            if apart.is_empty() {
                String::new()
            } else {
                format!("; not scored: {}", apart.join(", "))
            }
        )
    }

    fn time_line(&self) -> String {
        format!(
            "{} mutants run of {} generated{}; wall time {}{}",
            self.rows.len(),
            self.meta.generated_total,
            if self.meta.not_started.is_empty() {
                String::new()
            } else {
                format!(", {} not started", self.meta.not_started.len())
            },
            duration(self.meta.wall_s),
            self.seconds_per_mutant
                .map_or(String::new(), |s| format!(", {s:.1} s per mutant"))
        )
    }

    /// The short table for stdout.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let w = self
            .per_file
            .iter()
            .map(|g| g.name.len())
            .max()
            .unwrap_or(4)
            .max(4);
        let _ = writeln!(
            out,
            "{:<w$}  {:>6}  {:>8}  {:>10}  {:>9}  score",
            "file", "killed", "survived", "equivalent", "not-scored"
        );
        for g in &self.per_file {
            let c = &g.counts;
            let _ = writeln!(
                out,
                "{:<w$}  {:>6}  {:>8}  {:>10}  {:>9}  {}",
                g.name,
                c.kills(),
                c.survived,
                c.equivalent,
                c.flaky + c.build_failed + c.error,
                pct(g.percent)
            );
        }
        if !self.survivors.is_empty() {
            let _ = writeln!(out, "\nsurvivors ({}):", self.survivors.len());
            for s in &self.survivors {
                let _ = writeln!(
                    out,
                    "  {}  [{}]  {}  ->  {}",
                    s.id,
                    s.function.as_deref().unwrap_or("?"),
                    trimmed(&s.original),
                    trimmed(&s.mutated)
                );
            }
        }
        for n in &self.equivalent_killed {
            let _ = writeln!(
                out,
                "listed equivalent but {} by {}: {} (fix the entry or the flaky case)",
                n.how,
                n.by.join(", "),
                n.id
            );
        }
        for s in &self.meta.stale_equivalents {
            let _ = writeln!(out, "stale equivalent.toml entry {}: {}", s.id, s.why);
        }
        let _ = writeln!(out, "\n{}", self.score_line());
        let _ = writeln!(out, "{}", self.time_line());
        out
    }

    /// The Markdown report (a GitHub job summary).
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "## Mutation campaign: {} on {} (config {})\n",
            self.meta.series, self.meta.base, self.meta.config
        );
        let _ = writeln!(md, "**{}**\n", self.score_line());
        let _ = writeln!(
            md,
            "{}; seed `{}`.\n",
            self.time_line(),
            cell(&self.meta.seed)
        );
        if let Some(b) = &self.meta.baseline {
            let _ = writeln!(md, "Unmutated series: {}\n", cell(&first_line(b)));
        }
        for (title, groups) in [("file", &self.per_file), ("function", &self.per_function)] {
            let _ = writeln!(
                md,
                "| {title} | killed | survived | equivalent | not scored | score |\n|---|---:|---:|---:|---:|---:|"
            );
            for g in groups {
                let c = &g.counts;
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} | {} | {} | {} |",
                    cell(&g.name),
                    c.kills(),
                    c.survived,
                    c.equivalent,
                    c.flaky + c.build_failed + c.error,
                    pct(g.percent)
                );
            }
            md.push('\n');
        }
        if !self.survivors.is_empty() {
            let _ = writeln!(
                md,
                "### Survivors ({}): each wants a case, or an equivalent.toml entry with its reason\n\n| id | function | original | mutated |\n|---|---|---|---|",
                self.survivors.len()
            );
            for s in &self.survivors {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | `{}` | `{}` |",
                    cell(&s.id),
                    cell(s.function.as_deref().unwrap_or("?")),
                    cell(&trimmed(&s.original)),
                    cell(&trimmed(&s.mutated))
                );
            }
            md.push('\n');
        }
        for (title, list) in [
            ("Killed by a hang or a panic", &self.hangs_and_panics),
            (
                "Listed equivalent, killed all the same (fix the entry or the flaky case)",
                &self.equivalent_killed,
            ),
            ("Flaky (passed, then failed on the rerun)", &self.flaky),
        ] {
            if list.is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {title}\n\n| id | how | cases |\n|---|---|---|");
            for n in list {
                let _ = writeln!(
                    md,
                    "| `{}` | {} | {} |",
                    cell(&n.id),
                    n.how,
                    cell(&n.by.join(", "))
                );
            }
            md.push('\n');
        }
        if !self.not_scored.is_empty() {
            let _ = writeln!(md, "### Not scored\n\n| id | why |\n|---|---|");
            for (id, why) in &self.not_scored {
                let _ = writeln!(md, "| `{}` | {} |", cell(id), cell(why));
            }
            md.push('\n');
        }
        if !self.meta.stale_equivalents.is_empty() {
            let _ = writeln!(
                md,
                "### Stale equivalent.toml entries\n\n| id | why |\n|---|---|"
            );
            for s in &self.meta.stale_equivalents {
                let _ = writeln!(md, "| `{}` | {} |", cell(&s.id), cell(&s.why));
            }
            md.push('\n');
        }
        md
    }

    /// One paragraph for the cover letter's Tested: section.
    pub fn tested_line(&self) -> String {
        let c = &self.counts;
        let hand = self.rows.iter().filter(|r| r.file.is_none()).count();
        format!(
            "- mutation campaign (run {}): {} over {} of the {} mutants generated from the lines the series adds{}, config {}, each built and booted and judged by the whole suite; {} equivalent mutant(s) listed with reasons in patches/mutants/equivalent.toml; {} survivor(s); {}",
            self.meta.run_id.as_deref().unwrap_or("unnamed"),
            self.score_line(),
            self.rows.len() - hand,
            self.meta.generated_total,
            if hand > 0 {
                format!(" plus {hand} hand-written")
            } else {
                String::new()
            },
            self.meta.config,
            c.equivalent,
            c.survived,
            self.time_line(),
        )
    }

    /// Write mutants.json and mutants.md into `dir` (each beside, then
    /// renamed over, so a reader never sees half a file).
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self)?;
        let mut out = Vec::new();
        for (name, text) in [(JSON, json), (MARKDOWN, self.markdown())] {
            let path = dir.join(name);
            let tmp = dir.join(format!(".{name}.tmp"));
            std::fs::write(&tmp, text)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| {
                format!("cannot rename {} to {}", tmp.display(), path.display())
            })?;
            out.push(path);
        }
        Ok(out)
    }
}

/// The Tested: paragraph of the campaign whose mutants.json is `path`, for
/// `results::history::tested_section`; None when it cannot be read.
pub fn tested_line_from(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let report: Report = serde_json::from_str(&text).ok()?;
    Some(report.tested_line())
}

/// The Tested: paragraph of the newest campaign of `series` (`guest_memfd
/// v2`) on `base` among the run directories under `results_root`
/// (target/results/); None when there is none.
pub fn newest_tested_line(results_root: &Path, series: &str, base: &str) -> Option<String> {
    let mut best: Option<(String, Report)> = None;
    for entry in std::fs::read_dir(results_root).ok()?.flatten() {
        // `latest` is a symlink to one of the others.
        if entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path().join(JSON)) else {
            continue;
        };
        // `test --mutant`/`--all-mutants` writes a mutants.json of another shape: skipped.
        let Ok(report) = serde_json::from_str::<Report>(&text) else {
            continue;
        };
        if report.meta.series != series || report.meta.base != base {
            continue;
        }
        let key = entry.file_name().to_string_lossy().into_owned();
        if best.as_ref().is_none_or(|(k, _)| key > *k) {
            best = Some((key, report));
        }
    }
    best.map(|(_, r)| r.tested_line())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mutate::model::{Mutant, MutantId};

    fn result(
        id: &str,
        function: &str,
        outcome: Outcome,
        equivalent: Option<&str>,
    ) -> MutantResult {
        let id: MutantId = id.parse().unwrap();
        MutantResult {
            mutant: Mutant {
                id,
                function: Some(function.into()),
                original: "\tif (a < b)".into(),
                mutated: "\tif (a <= b)".into(),
                diff: String::new(),
            },
            outcome,
            equivalent: equivalent.map(str::to_string),
            seconds: 20.0,
            run_id: Some("r1".into()),
        }
    }

    fn killed(case: &str) -> Outcome {
        Outcome::Killed {
            by: vec![case.into()],
        }
    }

    fn meta() -> Meta {
        Meta {
            series: "guest_memfd v2".into(),
            base: "6.1.176".into(),
            config: "gmem".into(),
            seed: "0".into(),
            generated_total: 368,
            wall_s: 400.0,
            run_id: Some("mutate-1".into()),
            ..Meta::default()
        }
    }

    fn sample() -> Report {
        let g = "virt/kvm/guest_memfd.c";
        let rows = vec![
            Row::generated(&result(
                &format!("{g}:10:swap-relational"),
                "bind",
                killed("bind_overlap"),
                None,
            )),
            Row::generated(&result(
                &format!("{g}:11:drop-call"),
                "bind",
                Outcome::Timeout {
                    by: vec!["punch".into()],
                },
                None,
            )),
            Row::generated(&result(
                &format!("{g}:12:negate-condition"),
                "punch",
                Outcome::Survived,
                None,
            )),
            Row::generated(&result(
                &format!("{g}:13:drop-call"),
                "punch",
                Outcome::Survived,
                Some("idempotent"),
            )),
            Row::generated(&result(
                &format!("{g}:14:drop-call"),
                "punch",
                killed("punch_hole"),
                Some("wrongly listed"),
            )),
            Row::generated(&result(
                "virt/kvm/kvm_main.c:5:off-by-one",
                "kvm_vm_ioctl",
                Outcome::BuildFailed {
                    log_tail: "\nerror: x undeclared\nmore".into(),
                },
                None,
            )),
            Row::generated(&result(
                "virt/kvm/kvm_main.c:6:replace-errno",
                "kvm_vm_ioctl",
                Outcome::Panic {
                    by: vec!["create".into()],
                },
                None,
            )),
            Row::generated(&result(
                "virt/kvm/kvm_main.c:7:replace-errno#2",
                "kvm_vm_ioctl",
                Outcome::Flaky {
                    by: vec!["race".into()],
                },
                None,
            )),
            Row::generated(&result(
                "virt/kvm/kvm_main.c:8:drop-flag",
                "kvm_vm_ioctl",
                Outcome::Error {
                    detail: "no boot".into(),
                },
                None,
            )),
            Row::hand_written(
                "retry-gfn-start-only",
                Outcome::Survived,
                Some("start and end set together".into()),
                22.0,
                None,
            ),
        ];
        build(rows, meta())
    }

    #[test]
    fn score_counts_kills_over_kills_and_survivors_only() {
        let r = sample();
        let c = r.counts;
        // Kills: swap-relational, the timeout, the panic, the killed equivalent.
        assert_eq!((c.killed, c.timeout, c.panic), (2, 1, 1));
        assert_eq!(c.survived, 1);
        assert_eq!(c.score(), (4, 5));
        assert_eq!(r.percent, Some(80.0));
        assert_eq!((c.equivalent, c.equivalent_killed), (2, 1));
        assert_eq!((c.flaky, c.build_failed, c.error), (1, 1, 1));
        assert_eq!(c.total(), 10);
        assert!(r.score_line().starts_with("mutation score 80% (4 killed of 5 scored, 1 by timeout, 1 by panic; not scored: 2 listed equivalent, 1 flaky, 1 build failed, 1 error)"), "{}", r.score_line());
    }

    #[test]
    fn per_file_and_per_function_groups() {
        let r = sample();
        let names: Vec<&str> = r.per_file.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "hand-written",
                "virt/kvm/guest_memfd.c",
                "virt/kvm/kvm_main.c"
            ]
        );
        let gm = &r.per_file[1];
        assert_eq!(gm.counts.score(), (3, 4));
        assert_eq!(gm.percent, Some(75.0));
        let punch = r
            .per_function
            .iter()
            .find(|g| g.name == "virt/kvm/guest_memfd.c: punch")
            .unwrap();
        assert_eq!(punch.counts.score(), (1, 2));
        assert!(r
            .per_function
            .iter()
            .any(|g| g.name == "hand-written: retry-gfn-start-only"));
        // kvm_main.c had only a panic kill scored.
        assert_eq!(r.per_file[2].counts.score(), (1, 1));
    }

    #[test]
    fn survivors_hangs_and_killed_equivalents_are_reported() {
        let r = sample();
        assert_eq!(r.survivors.len(), 1);
        assert_eq!(
            r.survivors[0].id,
            "virt/kvm/guest_memfd.c:12:negate-condition"
        );
        assert_eq!(r.survivors[0].function.as_deref(), Some("punch"));
        let hangs: Vec<(&str, &str)> = r
            .hangs_and_panics
            .iter()
            .map(|n| (n.id.as_str(), n.how.as_str()))
            .collect();
        assert_eq!(
            hangs,
            [
                ("virt/kvm/guest_memfd.c:11:drop-call", "timeout"),
                ("virt/kvm/kvm_main.c:6:replace-errno", "panic")
            ]
        );
        assert_eq!(r.equivalent_killed.len(), 1);
        assert_eq!(r.equivalent_killed[0].by, ["punch_hole"]);
        assert_eq!(r.not_scored[0].1, "build failed: error: x undeclared");
        let text = r.text();
        assert!(
            text.contains(
                "listed equivalent but killed by punch_hole: virt/kvm/guest_memfd.c:14:drop-call"
            ),
            "{text}"
        );
        assert!(text.contains("survivors (1):"));
        let md = r.markdown();
        assert!(md.contains("### Survivors (1)"));
        assert!(md.contains("| `virt/kvm/guest_memfd.c:12:negate-condition` | punch | `if (a < b)` | `if (a <= b)` |"), "{md}");
        assert!(md.contains("Listed equivalent, killed all the same"));
        assert!(r.seconds_per_mutant.unwrap() > 20.0);
        let mut m = meta();
        m.mutants_wall_s = Some(100.0);
        let n = sample().rows.len() as f64;
        let r = build(sample().rows, m);
        assert_eq!(
            r.seconds_per_mutant,
            Some(100.0 / n),
            "the wall time, not the rows' sum"
        );
    }

    #[test]
    fn stale_entries_and_the_tested_line() {
        let mut m = meta();
        m.stale_equivalents = vec![Stale {
            id: "x.c:1:drop-call".into(),
            why: "the line changed".into(),
        }];
        m.not_started = vec!["a".into(), "b".into()];
        let r = build(sample().rows, m);
        assert!(r
            .text()
            .contains("stale equivalent.toml entry x.c:1:drop-call: the line changed"));
        assert!(r.markdown().contains("### Stale equivalent.toml entries"));
        let t = r.tested_line();
        assert!(
            t.starts_with("- mutation campaign (run mutate-1): mutation score 80%"),
            "{t}"
        );
        assert!(t.contains("over 9 of the 368 mutants generated"), "{t}");
        assert!(t.contains("plus 1 hand-written"), "{t}");
        assert!(
            t.contains("10 mutants run of 368 generated, 2 not started; wall time 6m40s"),
            "{t}"
        );
        assert!(!t.contains('\n'));
    }

    #[test]
    fn an_empty_run_scores_nothing_and_says_so() {
        let r = build(vec![], meta());
        assert_eq!(r.percent, None);
        assert_eq!(r.counts.score(), (0, 0));
        assert!(r
            .score_line()
            .starts_with("mutation score n/a (0 killed of 0 scored)"));
        assert!(r.survivors.is_empty() && r.per_file.is_empty());
        assert_eq!(r.seconds_per_mutant, None);
        assert!(r.text().contains("mutation score n/a"));
    }

    #[test]
    fn the_newest_campaign_of_the_series_gives_the_tested_line() {
        let root = std::env::temp_dir().join(format!("gmem61-newest-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let old = sample();
        let mut newer = build(vec![], meta());
        newer.meta.run_id = Some("mutate-2".into());
        let mut other = build(vec![], meta());
        other.meta.base = "6.1.177".into();
        old.write(&root.join("20261202-010000-mutate")).unwrap();
        newer.write(&root.join("20261202-020000-mutate")).unwrap();
        other.write(&root.join("20261202-030000-mutate")).unwrap();
        // A `test --all-mutants` report of another shape is skipped.
        std::fs::create_dir_all(root.join("20261202-040000-mutants")).unwrap();
        std::fs::write(
            root.join("20261202-040000-mutants").join(JSON),
            "{\"rows\": []}",
        )
        .unwrap();
        let line = newest_tested_line(&root, "guest_memfd v2", "6.1.176").unwrap();
        assert!(line.contains("(run mutate-2)"), "{line}");
        assert_eq!(newest_tested_line(&root, "guest_memfd v3", "6.1.176"), None);
        assert_eq!(
            newest_tested_line(&root.join("none"), "guest_memfd v2", "6.1.176"),
            None
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn files_round_trip_and_feed_the_tested_line() {
        let dir = std::env::temp_dir().join(format!("gmem61-report-{}", std::process::id()));
        let r = sample();
        let paths = r.write(&dir).unwrap();
        assert_eq!(paths.len(), 2);
        let back: Report =
            serde_json::from_str(&std::fs::read_to_string(dir.join(JSON)).unwrap()).unwrap();
        assert_eq!(back, r);
        assert_eq!(tested_line_from(&dir.join(JSON)), Some(r.tested_line()));
        assert_eq!(tested_line_from(&dir.join("missing.json")), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
