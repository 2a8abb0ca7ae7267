//! The judge: one function from everything a run left behind (how the boot
//! ended, the KTAP stream, the kernel log's splats, the taint, what the
//! kernel is meant to report) to the run's outcome, the per-case tally and
//! the cases that failed it. Every caller (the boot lane, the host lane, the
//! mutants) goes through [`judge`].

use serde::{Deserialize, Serialize};

use super::expect::KernelExpect;
use super::{decode_taint, Ktap, Outcome, Splat, Status};

/// A deadline the harness enforced by killing the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// The guest's userspace did not start in time (seconds).
    Boot(u64),
    /// The whole run did not finish in time (seconds).
    Run(u64),
    /// The suite printed nothing for this long (seconds) after it started.
    Stall(u64),
}

/// How the guest (or the host selftests process) ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Boot {
    pub killed: Option<Deadline>,
    /// The guest script (or the host process) started.
    pub userspace_up: bool,
    /// `Kernel panic - not syncing: ...` from the console, if any.
    pub panic_line: Option<String>,
    /// The exit status the suite (or the `--exec` command) recorded.
    pub exit: Option<i32>,
    /// vng's own exit status (255 after a panic=-1 reboot).
    pub vng_exit: Option<i32>,
    /// The last console lines, for the failure text of a run that never
    /// reached the suite.
    pub console_tail: String,
}

/// Everything the judge looks at.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    pub boot: &'a Boot,
    pub ktap: &'a Ktap,
    pub splats: &'a [Splat],
    pub taint_before: Option<u64>,
    pub taint_after: Option<u64>,
    /// What this kernel must report; None when nothing is known about it
    /// (a `--kernel` image, the host), and then every skip is a skip.
    pub expect: Option<&'a KernelExpect>,
    /// The NUMA nodes the guest was given (`--numa N`); None: one node. A
    /// run given them must not skip for lacking them.
    pub numa_nodes: Option<u32>,
    /// `--exec`: a shell command instead of the suite, judged on its status.
    pub exec: bool,
}

/// Counts for CI's closing line: each case once, plus one failure per
/// run-level problem no case accounts for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub passed: usize,
    /// Failed cases, cases without a result (one per absent number), cases
    /// with a splat, skips the kernel had no reason for, and run-level
    /// failures (a splat outside any case, a capability report that differs
    /// from the expectation, a run that failed with no failing case).
    pub failed: usize,
    pub skipped: usize,
}

/// A case that failed the run, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Culprit {
    pub case: String,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub outcome: Outcome,
    pub tally: Tally,
    /// Cases that failed, splatted, skipped without reason, or were running
    /// when the kernel hung or panicked; a mutant is killed only by these.
    pub culprits: Vec<Culprit>,
}

/// The verdict of one run: per-case verdicts first, then run-level
/// problems, then how the run ended.
pub fn judge(ev: &Evidence) -> Judgement {
    // Which case was running when the kernel stopped answering: the suite's
    // `# begin` without its result, or the case of the last splat when that
    // case has no result line.
    let finished = |name: &str| {
        ev.ktap
            .cases
            .iter()
            .any(|c| c.name == name && !matches!(c.status, Status::Missing(_)))
    };
    let running = ev.ktap.running_at_end.clone().or_else(|| {
        ev.splats
            .iter()
            .rev()
            .find_map(|s| s.test.clone())
            .filter(|t| !finished(t))
    });
    let (mut tally, culprits) = if ev.exec {
        (Tally::default(), Vec::new())
    } else {
        judge_cases(ev, running.as_deref())
    };
    let (reasons, run_level_failures) = run_problems(ev, &culprits, tally.failed);
    let outcome = ending(ev, running.as_deref(), reasons);
    tally.failed += run_level_failures;
    if !outcome.is_pass() && tally.failed == 0 {
        tally.failed += 1; // the run itself: no boot, no KTAP, a bad exit
    }
    Judgement {
        outcome,
        tally,
        culprits,
    }
}

/// How the kernel took a case down with it, if it did.
fn died_during(boot: &Boot) -> Option<&'static str> {
    match (&boot.killed, &boot.panic_line) {
        (Some(Deadline::Run(_)), _) => Some("the kernel hung during it (run timeout)"),
        (Some(Deadline::Stall(_)), _) => Some("the kernel hung during it (the suite went silent)"),
        (Some(Deadline::Boot(_)), _) => None,
        (None, Some(_)) => Some("the kernel panicked during it"),
        (None, None) if boot.userspace_up && boot.exit.is_none() && boot.vng_exit == Some(255) => {
            Some("the guest died during it (panic=-1 reboot)")
        }
        _ => None,
    }
}

/// Each case once: passed, failed (with why) or skipped.
fn judge_cases(ev: &Evidence, running: Option<&str>) -> (Tally, Vec<Culprit>) {
    let mut tally = Tally::default();
    let mut culprits = Vec::new();
    let died = died_during(ev.boot);
    for c in &ev.ktap.cases {
        let splat = ev
            .splats
            .iter()
            .find(|s| s.test.as_deref() == Some(&c.name));
        let vm_type = c.name.rsplit_once('@').map(|(_, t)| t).unwrap_or("");
        let failure = match (&c.status, splat) {
            (_, Some(s)) => Some(format!("kernel splat: {}", s.title)),
            (Status::Pass, None) => None,
            (Status::Fail, None) => Some(
                c.diagnostics
                    .iter()
                    .rev()
                    .find(|d| d.starts_with(protocol::ktap::FAIL))
                    .or(c.diagnostics.last())
                    .cloned()
                    .unwrap_or_else(|| "not ok".into()),
            ),
            // No result: a failure; its culprit only when the kernel died
            // while it ran (the others never started).
            (Status::Missing(_), None) => {
                tally.failed += 1;
                if let Some(d) = died.filter(|_| running == Some(c.name.as_str())) {
                    culprits.push(Culprit {
                        case: c.name.clone(),
                        why: d.to_string(),
                    });
                }
                continue;
            }
            (Status::Skip(reason), None) => ev
                .expect
                .and_then(|e| e.unexpected_skip(vm_type, reason, ev.numa_nodes)),
        };
        match (failure, &c.status) {
            (Some(why), _) => {
                tally.failed += 1;
                culprits.push(Culprit {
                    case: c.name.clone(),
                    why,
                });
            }
            (None, Status::Skip(_)) => tally.skipped += 1,
            (None, _) => tally.passed += 1,
        }
    }
    (tally, culprits)
}

/// What fails the run besides its cases' results, and how many of those
/// problems no case accounts for (each one failure in the tally).
fn run_problems(ev: &Evidence, culprits: &[Culprit], failed_cases: usize) -> (Vec<String>, usize) {
    let ktap = ev.ktap;
    let mut reasons = Vec::new();
    let mut run_level_failures = 0;
    if !culprits.is_empty() || failed_cases > 0 {
        let names: Vec<&str> = ktap
            .cases
            .iter()
            .filter(|c| c.status.is_failure() || culprits.iter().any(|k| k.case == c.name))
            .map(|c| c.name.as_str())
            .collect();
        reasons.push(format!(
            "{} case(s) failed: {}",
            names.len(),
            names.join(", ")
        ));
    }
    if !ev.exec {
        if let Some(b) = &ktap.bail_out {
            reasons.push(format!("Bail out! {b}"));
        }
        for p in &ktap.problems {
            reasons.push(format!("KTAP: {p}"));
        }
        let ran = ktap
            .cases
            .iter()
            .filter(|c| matches!(c.status, Status::Pass | Status::Fail))
            .count();
        if ktap.version_seen && ran == 0 && ktap.bail_out.is_none() {
            reasons.push(match ktap.cases.len() {
                0 => "no case in the plan: nothing was tested".to_string(),
                n => format!(
                    "no case ran ({n} of {n} skipped or without result): nothing was tested"
                ),
            });
        }
        if let Some(e) = ev.expect {
            let m = e.caps_mismatches(ktap);
            if !m.is_empty() {
                run_level_failures += 1;
                reasons.push(format!(
                    "capabilities differ from [{}] in the expectation file: {}",
                    e.kind,
                    m.join("; ")
                ));
            }
        }
    }
    if !ev.splats.is_empty() {
        let names: Vec<String> = ev
            .splats
            .iter()
            .map(|s| {
                format!(
                    "{} in {}",
                    s.title,
                    s.test.clone().unwrap_or_else(|| s.phase.clone())
                )
            })
            .collect();
        reasons.push(format!(
            "{} kernel splat(s): {}",
            ev.splats.len(),
            names.join(" | ")
        ));
        let in_a_case = |s: &&Splat| {
            s.test
                .as_ref()
                .is_some_and(|t| ktap.cases.iter().any(|c| &c.name == t))
        };
        if ev.splats.iter().any(|s| !in_a_case(&s)) {
            run_level_failures += 1;
        }
    }
    if let (Some(b), Some(a)) = (ev.taint_before, ev.taint_after) {
        if a != b {
            reasons.push(format!(
                "kernel taint changed {b} -> {a}: {}",
                decode_taint(a & !b)
            ));
        }
    }

    (reasons, run_level_failures)
}

/// The outcome, from how the run ended; `reasons` are the failures found so
/// far, used when the suite ran to its end.
fn ending(ev: &Evidence, running: Option<&str>, mut reasons: Vec<String>) -> Outcome {
    let boot = ev.boot;
    let tail = || boot.console_tail.clone();
    let while_running = || {
        running
            .map(|t| format!(" while `{t}` was running"))
            .unwrap_or_default()
    };
    match (&boot.killed, &boot.panic_line) {
        (Some(Deadline::Boot(s)), _) => Outcome::NoBoot(format!(
            "the guest's userspace did not start within {s}s (no output from the guest script, no KTAP header); QEMU was killed. Last console lines:\n{}",
            tail()
        )),
        (Some(Deadline::Run(s)), _) => Outcome::Hang(format!(
            "the run did not finish within {s}s and was killed{}",
            while_running()
        )),
        (Some(Deadline::Stall(s)), _) => Outcome::Hang(format!(
            "the suite printed nothing for {s}s and the guest was killed{}",
            while_running()
        )),
        (None, Some(line)) => Outcome::Panic(format!("{line}{}", while_running())),
        (None, None) if !boot.userspace_up => Outcome::NoBoot(format!(
            "vng exited ({}) before the guest script ran; last console lines:\n{}",
            exit_text(boot.vng_exit),
            tail()
        )),
        (None, None) if boot.exit.is_none() && boot.vng_exit == Some(255) => Outcome::Panic(format!(
            "the guest script never finished and vng exited 255 (panic=-1 reboot or a crash){}; last console lines:\n{}",
            while_running(),
            tail()
        )),
        (None, None) if boot.exit.is_none() => Outcome::Error(format!(
            "the guest script never recorded an exit status (vng exited {}); last console lines:\n{}",
            exit_text(boot.vng_exit),
            tail()
        )),
        (None, None) => {
            let code = boot.exit.unwrap_or_default();
            if ev.exec && code != 0 {
                reasons.push(format!("guest command exited {code}"));
            }
            if !ev.exec && code != 0 && reasons.is_empty() {
                reasons.push(format!("selftests exited with status {code} without a failing case"));
            }
            if reasons.is_empty() {
                Outcome::Passed
            } else {
                Outcome::Failed(reasons)
            }
        }
    }
}

fn exit_text(code: Option<i32>) -> String {
    code.map(|c| c.to_string())
        .unwrap_or_else(|| "by a signal".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest killed for the suite's silence is a hang, blamed on the case
    /// that was running, and says how long the silence was.
    #[test]
    fn a_stalled_suite_is_a_hang_of_the_running_case() {
        let ktap = crate::results::parse_ktap(
            "KTAP version 1\n1..2\n# begin a.first\nok 1 a.first\n# begin a.second\n",
        );
        let boot = Boot {
            killed: Some(Deadline::Stall(30)),
            userspace_up: true,
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
        let Outcome::Hang(why) = &j.outcome else {
            panic!("{:?}", j.outcome)
        };
        assert!(why.contains("printed nothing for 30s"), "{why}");
        assert!(why.contains("a.second"), "{why}");
        let c: Vec<String> = j.culprits.iter().map(|c| format!("{c:?}")).collect();
        assert!(
            c.len() == 1 && c[0].contains("a.second") && c[0].contains("went silent"),
            "{c:?}"
        );
    }
}
