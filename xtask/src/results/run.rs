//! One run's record: the outcome, results.json, junit.xml and the summary.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::judge::{Culprit, Judgement, Tally};
use super::{decode_taint, Ktap, SeriesTag, Splat, Status};
use crate::boot::Accel;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum Outcome {
    /// The suite ran, at least one case ran, every case passed or skipped
    /// for something the kernel is not meant to have, no splat, no new taint.
    Passed,
    /// No KTAP header within the boot timeout.
    NoBoot(String),
    /// The kernel panicked (vng exits 255 under panic=-1).
    Panic(String),
    /// The whole-run timeout expired and QEMU was killed.
    Hang(String),
    /// Failed cases, missing results, splats, taint changes, skips the
    /// kernel had no reason for, capabilities other than expected, or a plan
    /// in which no case ran.
    Failed(Vec<String>),
    /// The harness itself could not run the suite.
    Error(String),
}

/// A run nobody judged yet has no verdict to claim.
impl Default for Outcome {
    fn default() -> Self {
        Outcome::Error("not judged".into())
    }
}

impl Outcome {
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Passed)
    }
    pub fn headline(&self) -> String {
        match self {
            Outcome::Passed => "PASSED".into(),
            Outcome::NoBoot(d) => format!("KERNEL DID NOT BOOT: {d}"),
            Outcome::Panic(d) => format!("KERNEL PANIC: {d}"),
            Outcome::Hang(d) => format!("GUEST HANG: {d}"),
            Outcome::Failed(r) => format!("FAILED: {}", r.join("; ")),
            Outcome::Error(d) => format!("HARNESS ERROR: {d}"),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunResult {
    pub run_id: String,
    pub mode: String,
    pub kernel: Option<String>,
    pub kernel_image: Option<PathBuf>,
    pub config: String,
    /// The guest's accelerator; None when the suite ran on the host (no
    /// guest). Written as results.json has always had it: `kvm`, `tcg` or
    /// `host`.
    #[serde(with = "accel_or_host")]
    pub accel: Option<Accel>,
    /// Why that accelerator (`auto`'s probe, or what was asked).
    pub accel_reason: String,
    pub command: Vec<String>,
    pub guest_exit: Option<i32>,
    pub boot_to_first_ktap_s: Option<f64>,
    pub duration_s: f64,
    pub taint_before: Option<u64>,
    pub taint_after: Option<u64>,
    pub ktap: Ktap,
    pub splats: Vec<Splat>,
    pub outcome: Outcome,
    /// Which series (and mutant) the kernel was built from, when known:
    /// the cover letter's Tested: section picks runs by it.
    #[serde(default)]
    pub series: Option<SeriesTag>,
    /// `--filter` given to the suite, if any (such a run tests a part).
    #[serde(default)]
    pub filter: Option<String>,
    /// The expectation table the run was judged against (`series`, ...).
    #[serde(default)]
    pub expect: Option<String>,
    /// The guest's NUMA nodes (`--numa N`); None: one.
    #[serde(default)]
    pub numa: Option<u32>,
    /// The judge's counts (what CI adds up).
    #[serde(default)]
    pub tally: Tally,
    /// Cases that failed the run, and how.
    #[serde(default)]
    pub culprits: Vec<Culprit>,
    /// SHA-256 of the kernel image booted (the host lane: of /proc/version)
    /// and of the selftests binary: a later question about the same two
    /// (the matrix) may take this run's answer instead of booting again.
    #[serde(default)]
    pub image_sha256: Option<String>,
    #[serde(default)]
    pub selftests_sha256: Option<String>,
}

/// `RunResult.accel` in results.json: the accelerator's name, or `host`.
mod accel_or_host {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::boot::Accel;

    pub const HOST: &str = "host";

    pub fn name(accel: Option<Accel>) -> &'static str {
        accel.map_or(HOST, Accel::name)
    }

    pub fn serialize<S: Serializer>(accel: &Option<Accel>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(name(*accel))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Accel>, D::Error> {
        let text = String::deserialize(d)?;
        match text.as_str() {
            HOST => Ok(None),
            "kvm" => Ok(Some(Accel::Kvm)),
            "tcg" => Ok(Some(Accel::Tcg)),
            other => Err(D::Error::custom(format!(
                "accel `{other}`: expected kvm, tcg or host"
            ))),
        }
    }
}

impl RunResult {
    /// What ran the suite, as results.json names it: `kvm`, `tcg`, `host`.
    pub fn accel_name(&self) -> &'static str {
        accel_or_host::name(self.accel)
    }

    /// Records the judge's verdict.
    pub fn set_judgement(&mut self, j: Judgement) {
        self.outcome = j.outcome;
        self.tally = j.tally;
        self.culprits = j.culprits;
    }

    pub fn write_json(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("results.json");
        let text = serde_json::to_string_pretty(self)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    pub fn junit(&self) -> quick_junit::Report {
        use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};
        let mut report = Report::new("gmem-selftests");
        let mut suite = TestSuite::new(format!(
            "gmem-selftests ({}, {}, {})",
            self.kernel.as_deref().unwrap_or("?"),
            self.config,
            self.accel_name()
        ));
        for c in &self.ktap.cases {
            let status = match &c.status {
                Status::Pass => TestCaseStatus::success(),
                Status::Skip(r) => {
                    let mut s = TestCaseStatus::skipped();
                    s.set_message(r.clone());
                    s
                }
                Status::Fail => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                    s.set_message("not ok");
                    s.set_description(c.diagnostics.join("\n"));
                    s
                }
                Status::Missing(why) => {
                    let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                    s.set_message(format!("no result: {why}"));
                    s.set_description(c.diagnostics.join("\n"));
                    s
                }
            };
            // A splat during a passing case turns it into a failure.
            let splats: Vec<&Splat> = self
                .splats
                .iter()
                .filter(|s| s.test.as_deref() == Some(c.name.as_str()))
                .collect();
            let bad_skip = self
                .culprits
                .iter()
                .find(|k| k.case == c.name && matches!(c.status, Status::Skip(_)));
            let status = if !splats.is_empty() && !c.status.is_failure() {
                splat_failure("kernel splat", &splats)
            } else if let Some(k) = bad_skip {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
                s.set_message(k.why.clone());
                s
            } else {
                status
            };
            let mut tc = TestCase::new(c.name.clone(), status);
            if let Some(ms) = c.duration_ms {
                tc.set_time(std::time::Duration::from_millis(ms));
            }
            suite.add_test_case(tc);
        }
        let outside: Vec<&Splat> = self
            .splats
            .iter()
            .filter(|s| {
                s.test.is_none()
                    || !self
                        .ktap
                        .cases
                        .iter()
                        .any(|c| Some(&c.name) == s.test.as_ref())
            })
            .collect();
        if !outside.is_empty() {
            let s = splat_failure("kernel splat outside a test", &outside);
            suite.add_test_case(TestCase::new("kernel-log", s));
        }
        match &self.outcome {
            Outcome::NoBoot(d) | Outcome::Panic(d) | Outcome::Hang(d) | Outcome::Error(d) => {
                let mut s = TestCaseStatus::non_success(NonSuccessKind::Error);
                s.set_message(self.outcome.headline());
                s.set_description(d.clone());
                suite.add_test_case(TestCase::new("boot", s));
            }
            _ => {}
        }
        report.add_test_suite(suite);
        report
    }

    pub fn write_junit(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("junit.xml");
        let xml = self.junit().to_string().context("serialising junit.xml")?;
        std::fs::write(&path, xml).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The terminal summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!("run        {}\n", self.run_id));
        out.push_str(&format!(
            "kernel     {}\n",
            self.kernel.as_deref().unwrap_or("(unknown)")
        ));
        out.push_str(&format!("config     {}\n", self.config));
        out.push_str(&format!(
            "accel      {} ({})\n",
            self.accel_name(),
            self.accel_reason
        ));
        if let Some(b) = self.boot_to_first_ktap_s {
            out.push_str(&format!("boot       first KTAP line after {b:.1}s\n"));
        }
        out.push_str(&format!("duration   {:.1}s\n", self.duration_s));
        if let (Some(b), Some(a)) = (self.taint_before, self.taint_after) {
            out.push_str(&format!(
                "taint      before {b}, after {a} ({})\n",
                decode_taint(a)
            ));
        }
        if !self.ktap.cases.is_empty() {
            let w = self
                .ktap
                .cases
                .iter()
                .map(|c| c.name.len())
                .max()
                .unwrap_or(4)
                .max(4);
            out.push_str(&format!(
                "\n{:<w$}  {:<9}  {:>8}  detail\n",
                "case", "status", "ms"
            ));
            for c in &self.ktap.cases {
                let splat = self
                    .splats
                    .iter()
                    .find(|s| s.test.as_deref() == Some(c.name.as_str()));
                let bad_skip = self.culprits.iter().find(|k| k.case == c.name);
                let (label, detail) = match (&c.status, splat) {
                    (st, Some(s)) if !st.is_failure() => ("SPLAT", s.title.clone()),
                    (Status::Skip(r), _) => match bad_skip {
                        Some(k) => ("BAD SKIP", format!("{}: {r}", k.why)),
                        None => ("SKIP", r.clone()),
                    },
                    (Status::Missing(r), _) => ("NO RESULT", r.clone()),
                    (Status::Fail, s) => (
                        "FAIL",
                        s.map(|s| s.title.clone())
                            .or_else(|| c.diagnostics.last().cloned())
                            .unwrap_or_default(),
                    ),
                    (Status::Pass, _) => ("PASS", String::new()),
                };
                let ms = c
                    .duration_ms
                    .map(|m| m.to_string())
                    .unwrap_or_else(|| "-".into());
                out.push_str(&format!("{:<w$}  {label:<9}  {ms:>8}  {detail}\n", c.name));
            }
            let m = self
                .ktap
                .cases
                .iter()
                .filter(|c| matches!(c.status, Status::Missing(_)))
                .count();
            let t = self.tally;
            let missing = if m > 0 {
                format!(" ({m} of the failed without result)")
            } else {
                String::new()
            };
            out.push_str(&format!(
                "\n{} passed, {} failed, {} skipped{missing}\n",
                t.passed, t.failed, t.skipped
            ));
        }
        for s in &self.splats {
            out.push_str(&format!(
                "splat ({:?}) in {}: {} [log line {}]\n",
                s.kind,
                s.test.clone().unwrap_or_else(|| s.phase.clone()),
                s.title,
                s.line
            ));
        }
        out.push_str(&format!("\nresult: {}\n", self.outcome.headline()));
        out
    }
}

/// A JUnit failure for `splats` (at least one): the first one's title as
/// the message, every excerpt as the description.
fn splat_failure(what: &str, splats: &[&Splat]) -> quick_junit::TestCaseStatus {
    let mut s = quick_junit::TestCaseStatus::non_success(quick_junit::NonSuccessKind::Failure);
    s.set_message(format!("{what}: {}", splats[0].title));
    s.set_description(
        splats
            .iter()
            .flat_map(|s| s.excerpt.clone())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A results.json as the harness wrote it before `accel` was typed
    /// (and before `filter`, `expect`, `tally`, the hashes), cut to one case.
    const OLD_TCG_RECORD: &str = r#"{"run_id": "20261201-214756-base+gmem-tcg", "mode": "vng",
        "kernel": "6.1.176+", "kernel_image": "/var/tmp/k/bzImage", "config": "base+gmem",
        "accel": "tcg", "accel_reason": "auto: /dev/kvm cannot boot a kernel",
        "command": ["vng", "--run", "/var/tmp/k/bzImage"], "guest_exit": 0,
        "boot_to_first_ktap_s": 16.2, "duration_s": 26.1, "taint_before": 0, "taint_after": 0,
        "ktap": {"version_seen": true, "plan": 80, "cases": [{"number": 1,
            "name": "caps.vm_types_matches_create_vm@default", "status": "pass",
            "diagnostics": [], "duration_ms": 263, "subtests": []}],
            "bail_out": null, "problems": [], "noise": [], "totals": [36, 0, 44],
            "running_at_end": null},
        "splats": [], "outcome": {"kind": "passed"},
        "series": {"name": "guest_memfd", "version": 1, "base": "6.1.176", "mutant": null}}"#;

    #[test]
    fn old_results_files_read_with_their_accel_and_write_it_back_the_same() {
        let tcg: RunResult = serde_json::from_str(OLD_TCG_RECORD).unwrap();
        assert_eq!(tcg.accel, Some(Accel::Tcg));
        assert_eq!(tcg.accel_name(), "tcg");
        let host: RunResult = serde_json::from_str(
            &OLD_TCG_RECORD.replace(r#""accel": "tcg""#, r#""accel": "host""#),
        )
        .unwrap();
        assert_eq!(host.accel, None);
        let kvm: RunResult =
            serde_json::from_str(&OLD_TCG_RECORD.replace(r#""accel": "tcg""#, r#""accel": "kvm""#))
                .unwrap();
        assert_eq!(kvm.accel, Some(Accel::Kvm));
        for (r, name) in [(&tcg, "tcg"), (&host, "host"), (&kvm, "kvm")] {
            let v: serde_json::Value = serde_json::to_value(r).unwrap();
            assert_eq!(v["accel"], name);
        }
        let e = serde_json::from_str::<RunResult>(
            &OLD_TCG_RECORD.replace(r#""accel": "tcg""#, r#""accel": "auto""#),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("accel `auto`: expected kvm, tcg or host"), "{e}");
    }
}
