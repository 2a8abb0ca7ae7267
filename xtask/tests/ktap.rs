//! The KTAP parser on fixture streams.

use std::path::Path;

use xtask::results::{parse_ktap, Status};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ktap")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn pass_skip_fail_with_reasons_diagnostics_and_times() {
    let k = parse_ktap(&fixture("pass-skip-fail.ktap"));
    assert!(k.version_seen);
    assert_eq!(k.plan, Some(4));
    assert!(k.problems.is_empty(), "{:?}", k.problems);
    assert_eq!(k.count(), (2, 1, 1, 0));
    assert_eq!(k.totals, Some((2, 1, 1)));
    assert_eq!(k.cases[0].name, "create.size_zero_einval@default");
    assert_eq!(k.cases[0].duration_ms, Some(3));
    assert_eq!(
        k.cases[1].status,
        Status::Skip("KVM_X86_SW_PROTECTED_VM not supported (KVM_CAP_VM_TYPES = 0x1)".into())
    );
    assert_eq!(k.cases[2].status, Status::Fail);
    assert_eq!(
        k.cases[2].diagnostics,
        vec![
            "bind.gpa_overlap_eexist@default: expected EEXIST, got EINVAL",
            "at selftests/src/bind.rs:88"
        ]
    );
    assert_eq!(k.cases[2].duration_ms, Some(12));
    assert_eq!(k.cases[3].duration_ms, Some(250));
}

#[test]
fn nested_subtests_attach_to_their_parent() {
    let k = parse_ktap(&fixture("nested.ktap"));
    assert_eq!(k.plan, Some(2));
    assert_eq!(k.cases.len(), 2, "{:?}", k.cases);
    assert!(k.problems.is_empty(), "{:?}", k.problems);
    let parent = &k.cases[0];
    assert_eq!(parent.name, "memslots");
    assert_eq!(parent.status, Status::Fail);
    assert_eq!(parent.subtests.len(), 3);
    assert_eq!(parent.subtests[1].name, "memslots.closed_fd_ebadf");
    assert_eq!(parent.subtests[1].status, Status::Fail);
    assert_eq!(
        parent.subtests[2].status,
        Status::Skip("needs KVM_CAP_GUEST_MEMFD".into())
    );
    assert_eq!(k.cases[1].status, Status::Pass);
    assert!(k.cases[1].subtests.is_empty());
}

#[test]
fn bail_out_records_reason_and_missing_results() {
    let k = parse_ktap(&fixture("bail-out.ktap"));
    assert_eq!(
        k.bail_out.as_deref(),
        Some("/dev/kvm: No such file or directory")
    );
    // Every number the plan promised has an entry; all after the bail-out
    // are missing.
    assert_eq!(k.cases.len(), k.plan.unwrap());
    assert!(k.cases[1..]
        .iter()
        .all(|c| matches!(&c.status, Status::Missing(r) if r.contains("bailed out"))));
}

#[test]
fn missing_plan_is_a_problem_but_plan_at_end_is_fine() {
    let k = parse_ktap(&fixture("no-plan.ktap"));
    assert_eq!(k.cases.len(), 2);
    assert!(
        k.problems.iter().any(|p| p.contains("no test plan")),
        "{:?}",
        k.problems
    );
    let k = parse_ktap(&fixture("plan-at-end.ktap"));
    assert_eq!(k.plan, Some(2));
    assert!(k.problems.is_empty(), "{:?}", k.problems);
}

#[test]
fn kernel_lines_interleaved_are_noise_not_results() {
    let k = parse_ktap(&fixture("interleaved.ktap"));
    assert!(k.problems.is_empty(), "{:?}", k.problems);
    let names: Vec<&str> = k.cases.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "create.basic",
            "vcpu.run_private@sw_protected",
            "punch.invalidate@sw_protected"
        ]
    );
    assert_eq!(k.cases[1].status, Status::Pass);
    assert_eq!(k.cases[1].duration_ms, Some(801));
    assert_eq!(k.cases[2].status, Status::Fail);
    assert_eq!(k.noise.len(), 3, "{:?}", k.noise);
    assert!(k.noise.iter().any(|l| l.contains("unimplemented wrmsr")));
}

#[test]
fn truncated_stream_names_the_case_that_was_running() {
    let k = parse_ktap(&fixture("truncated.ktap"));
    assert!(
        k.problems.iter().any(|p| p == "truncated: 2 of 4 results"),
        "{:?}",
        k.problems
    );
    // One entry per absent number: the case that was running, then the
    // one that never started.
    assert_eq!(k.cases.len(), 4);
    assert!(matches!(&k.cases[3].status, Status::Missing(r) if r.contains("not started")));
    assert_eq!(k.cases[3].number, 4);
    let last = &k.cases[2];
    assert_eq!(
        last.name,
        "regression.punch_unbound_no_livelock@sw_protected"
    );
    assert!(matches!(&last.status, Status::Missing(r) if r.contains("truncated")));
    assert_eq!(
        k.running_at_end.as_deref(),
        Some("regression.punch_unbound_no_livelock@sw_protected")
    );
}

#[test]
fn no_header_at_all() {
    let k = parse_ktap(&fixture("empty.ktap"));
    assert!(!k.version_seen);
    assert!(k.cases.is_empty());
    assert!(k.problems.iter().any(|p| p.contains("no KTAP header")));
}

#[test]
fn todo_and_unknown_directives() {
    let k = parse_ktap(
        "KTAP version 1\n1..3\nok 1 a.b # TODO later\nnot ok 2 a.c # some note\nok 3 - a.d\n",
    );
    assert_eq!(k.cases[0].status, Status::Skip("TODO later".into()));
    assert_eq!(k.cases[1].status, Status::Fail);
    assert_eq!(k.cases[2].name, "a.d");
}

#[test]
fn not_ok_is_a_failure_whatever_its_directive() {
    let k =
        parse_ktap("KTAP version 1\n1..2\nnot ok 1 a.b # SKIP no cap\nnot ok 2 a.c # TODO later\n");
    assert_eq!(k.cases[0].status, Status::Fail);
    assert_eq!(k.cases[1].status, Status::Fail);
}

#[test]
fn truncated_after_one_result_gives_one_missing_per_absent_number() {
    let k = parse_ktap("KTAP version 1\n1..3\nok 1 a.b\n");
    assert_eq!(k.cases.len(), 3);
    let numbers: Vec<usize> = k.cases.iter().map(|c| c.number).collect();
    assert_eq!(numbers, vec![1, 2, 3]);
    assert_eq!(k.count(), (1, 0, 0, 2));
    assert!(k.problems.iter().any(|p| p == "truncated: 1 of 3 results"));
}

#[test]
fn caps_report_lines_are_read_not_kept_as_diagnostics() {
    let k = parse_ktap(
        "KTAP version 1\n1..1\n# caps system KVM_CAP_VM_TYPES=0x3 KVM_CAP_GUEST_MEMFD=1\n# caps sw_protected unavailable\n# caps default KVM_CAP_X=oops\nok 1 a.b\n",
    );
    assert_eq!(k.caps["system"].as_ref().unwrap()["KVM_CAP_VM_TYPES"], 3);
    assert_eq!(k.caps["system"].as_ref().unwrap()["KVM_CAP_GUEST_MEMFD"], 1);
    assert_eq!(k.caps["sw_protected"], None);
    assert!(
        k.cases[0].diagnostics.is_empty(),
        "{:?}",
        k.cases[0].diagnostics
    );
    assert!(
        k.problems
            .iter()
            .any(|p| p.contains("cannot read `KVM_CAP_X=oops`")),
        "{:?}",
        k.problems
    );
}
