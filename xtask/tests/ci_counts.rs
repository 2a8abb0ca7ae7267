//! .ci/run's counting helpers read what `cargo xtask test` writes: the
//! judge's tally in results.json and the verdicts in mutants.json.

use std::path::Path;
use std::process::Command;

use xtask::results::judge::{judge, Boot, Evidence};
use xtask::results::{
    parse_ktap, scan_splats, MutantRow, MutantVerdict, MutantsReport, RunResult, SeriesTag,
};

/// Sources .ci/run for its helpers, runs `script`, returns stdout.
fn ci(script: &str) -> String {
    let run = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.ci/run");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("source {}; {script}", run.display()))
        .env("CI_RUN_DEFINE_ONLY", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tag() -> SeriesTag {
    SeriesTag {
        name: "guest_memfd".into(),
        version: 1,
        base: "6.1.176".into(),
        mutant: None,
    }
}

#[test]
fn results_json_counts_splatted_and_each_missing_case_as_failed() {
    // One pass, one case with a splat, one skip, then the stream stops with
    // two numbers of the plan unanswered.
    let ktap = parse_ktap(
        "KTAP version 1\n1..5\nok 1 a.one\nok 2 a.two\nok 3 a.three # SKIP lacks /dev/kvm: x\n",
    );
    let splats = scan_splats(
        "[ 1.000000] gmem-selftests: begin a.two\n[ 1.100000] WARNING: CPU: 0 PID: 9 at virt/kvm/kvm_main.c:1 f+0x1/0x2\n[ 1.200000] gmem-selftests: end a.two\n",
    );
    let boot = Boot {
        userspace_up: true,
        exit: Some(0),
        ..Default::default()
    };
    let j = judge(&Evidence {
        boot: &boot,
        ktap: &ktap,
        splats: &splats,
        taint_before: None,
        taint_after: None,
        expect: None,
        numa_nodes: None,

        exec: false,
    });
    let mut r = RunResult {
        run_id: "r".into(),
        ktap,
        splats,
        ..Default::default()
    };
    r.set_judgement(j);
    let dir = tempfile::tempdir().unwrap();
    let file = r.write_json(dir.path()).unwrap();
    let out = ci(&format!(
        "count_results_json {} main; echo \"total $passed $failed $skipped\"",
        file.display()
    ));
    assert!(
        out.contains("main: 1 passed, 3 failed, 1 skipped (outcome failed;"),
        "{out}"
    );
    assert!(out.trim_end().ends_with("total 1 3 1"), "{out}");
}

#[test]
fn mutants_json_scores_kills_and_fails_what_could_not_be_tested() {
    let row = |name: &str, verdict| MutantRow {
        name: name.into(),
        verdict,
        killed_by: vec![],
        detail: vec![],
        run_id: None,
    };
    let report = MutantsReport {
        run_id: "m".into(),
        series: tag(),
        baseline_run_id: Some("b".into()),
        baseline: "PASSED".into(),
        rows: vec![
            row("a", MutantVerdict::Killed),
            row("b", MutantVerdict::Survived),
            row("c", MutantVerdict::Error),
            row("d", MutantVerdict::BuildFailed),
            row("e", MutantVerdict::Killed),
        ],
    };
    let dir = tempfile::tempdir().unwrap();
    let file = report.write(dir.path()).unwrap();
    let out = ci(&format!(
        "count_mutants_json {} mutants; echo \"total $passed $failed $skipped\"",
        file.display()
    ));
    // baseline + 2 killed pass; survived, error, build-failed fail.
    assert!(out.trim_end().ends_with("total 3 3 0"), "{out}");

    let failed_baseline = MutantsReport {
        baseline: "FAILED: 1 case(s) failed: x".into(),
        rows: vec![row("a", MutantVerdict::NotRun)],
        ..report
    };
    let file = failed_baseline.write(dir.path()).unwrap();
    let out = ci(&format!(
        "count_mutants_json {} mutants; echo \"total $passed $failed $skipped\"",
        file.display()
    ));
    assert!(out.trim_end().ends_with("total 0 1 1"), "{out}");
}

#[test]
fn a_stage_that_does_not_run_is_a_skip_with_its_reason() {
    let out = ci("skip_stage mutants CI_SKIP_MUTANTS=1; echo \"total $passed $failed $skipped ${skipped_stages[*]}\"");
    assert!(out.contains("SKIP: mutants: CI_SKIP_MUTANTS=1"), "{out}");
    assert!(
        out.trim_end()
            .ends_with("total 0 0 1 mutants: CI_SKIP_MUTANTS=1"),
        "{out}"
    );
}

#[test]
fn an_unreadable_results_json_is_a_problem() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("results.json");
    std::fs::write(&file, "{}").unwrap();
    let out = ci(&format!(
        "count_results_json {} host 2>/dev/null; echo \"problems ${{#problems[@]}}\"",
        file.display()
    ));
    assert!(out.contains("CI: host: cannot read the tally"), "{out}");
    assert!(out.trim_end().ends_with("problems 1"), "{out}");
}

#[test]
fn campaign_json_passes_kills_fails_the_untested_and_skips_equivalents_and_the_unstarted() {
    use xtask::mutate::model::{Mutant, MutantId, MutantResult, Operator, Outcome};
    use xtask::mutate::run::{Baseline, Campaign, HandWrittenResult, Timing};
    let result = |line: u32, outcome: Outcome, equivalent: Option<&str>| MutantResult {
        mutant: Mutant {
            id: MutantId {
                file: "virt/kvm/guest_memfd.c".into(),
                line,
                op: Operator::DropCall,
                nth: 1,
            },
            function: None,
            original: "\tf();".into(),
            mutated: String::new(),
            diff: String::new(),
        },
        outcome,
        equivalent: equivalent.map(Into::into),
        seconds: 1.0,
        run_id: None,
    };
    let c = Campaign {
        series: tag(),
        seed: "s".into(),
        baseline: Baseline {
            passed: true,
            headline: "PASSED".into(),
            run_id: None,
            timing: Timing::default(),
        },
        generated: vec![
            result(
                1,
                Outcome::Killed {
                    by: vec!["a.b".into()],
                },
                None,
            ),
            result(2, Outcome::Timeout { by: vec![] }, None),
            result(3, Outcome::Survived, None),
            result(4, Outcome::Survived, Some("why")),
            result(5, Outcome::Panic { by: vec![] }, Some("wrong")),
            result(6, Outcome::Flaky { by: vec![] }, None),
        ],
        hand_written: vec![HandWrittenResult {
            name: "h".into(),
            outcome: Outcome::BuildFailed {
                log_tail: String::new(),
            },
            equivalent: None,
            seconds: 1.0,
            run_id: None,
        }],
        timings: Vec::new(),
        not_started: vec!["x".into(), "y".into()],
        wall_s: 1.0,
        mutants_wall_s: 1.0,
        schedule: Default::default(),
        jobs: 2,
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("campaign.json");
    std::fs::write(&file, serde_json::to_string(&c).unwrap()).unwrap();
    let out = ci(&format!(
        "count_campaign_json {} mutants; echo \"total $passed $failed $skipped\"",
        file.display()
    ));
    // pass: baseline, killed, timeout; fail: survived, killed equivalent,
    // flaky, build-failed; skip: the listed survivor, two not started.
    assert!(out.trim_end().ends_with("total 3 4 3"), "{out}");
}
