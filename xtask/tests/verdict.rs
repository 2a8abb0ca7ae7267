//! From what a run left behind to its verdict: the judge on every kind of
//! boot outcome, the expectation checks, the mutant verdicts, results.json
//! and junit.xml.

use xtask::results::expect::{Expectations, KernelExpect};
use xtask::results::judge::{judge, Boot, Deadline, Evidence, Judgement, Tally};
use xtask::results::{
    parse_ktap, scan_splats, MutantVerdict, Outcome, RunResult, SeriesTag, Splat,
};
use xtask::test::classify;

const KTAP: &str = "KTAP version 1\n1..2\nok 1 a.one\n# time a.one 5\nok 2 a.two # SKIP no SW_PROTECTED VMs\n# totals: pass 1 fail 0 skip 1\n";
const LOG: &str = "[    1.000000] gmem-selftests: begin a.one\n[    1.100000] WARNING: CPU: 0 PID: 9 at virt/kvm/kvm_main.c:1335 kvm_destroy_vm+0x2c4/0x2d0\n[    1.200000] ---[ end trace 0000000000000000 ]---\n[    1.300000] gmem-selftests: end a.one\n";

/// The report the suite prints on 6.1 + the series.
const SERIES_CAPS: &str = "\
# caps system KVM_CAP_VM_TYPES=0x3 KVM_CAP_GUEST_MEMFD=0x1 KVM_CAP_USER_MEMORY2=0x1 KVM_CAP_MEMORY_ATTRIBUTES=0x8 KVM_CAP_MEMORY_FAULT_INFO=0x1 KVM_CAP_GUEST_MEMFD_FLAGS=0x0
# caps default KVM_CAP_GUEST_MEMFD=0 KVM_CAP_USER_MEMORY2=1 KVM_CAP_MEMORY_ATTRIBUTES=0x0 KVM_CAP_MEMORY_FAULT_INFO=1 KVM_CAP_GUEST_MEMFD_FLAGS=0x0
# caps sw_protected KVM_CAP_GUEST_MEMFD=1 KVM_CAP_USER_MEMORY2=1 KVM_CAP_MEMORY_ATTRIBUTES=0x8 KVM_CAP_MEMORY_FAULT_INFO=1 KVM_CAP_GUEST_MEMFD_FLAGS=0x0
";

fn series_expect() -> KernelExpect {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../patches/guest_memfd.expect.toml");
    Expectations::load(&path).unwrap().kinds["series"].clone()
}

fn finished(exit: i32) -> Boot {
    Boot {
        userspace_up: true,
        exit: Some(exit),
        vng_exit: Some(0),
        ..Default::default()
    }
}

fn judged(boot: &Boot, ktap: &str, log: &str, expect: Option<&KernelExpect>) -> Judgement {
    let k = parse_ktap(ktap);
    let s = scan_splats(log);
    judge(&Evidence {
        boot,
        ktap: &k,
        splats: &s,
        taint_before: Some(0),
        taint_after: Some(0),
        expect,
        numa_nodes: None,

        exec: false,
    })
}

fn reasons(o: &Outcome) -> Vec<String> {
    match o {
        Outcome::Failed(r) => r.clone(),
        o => panic!("expected Failed, got {o:?}"),
    }
}

#[test]
fn all_passing_is_a_pass() {
    let j = judged(&finished(0), KTAP, "", None);
    assert_eq!(j.outcome, Outcome::Passed);
    assert_eq!(
        j.tally,
        Tally {
            passed: 1,
            failed: 0,
            skipped: 1
        }
    );
    assert!(j.culprits.is_empty());
}

#[test]
fn a_failed_case_fails_the_run_and_is_its_culprit() {
    let ktap = "KTAP version 1\n1..2\nok 1 a.one\n# FAIL: expected EINVAL, got EBADF\nnot ok 2 bind.x@default\n";
    let j = judged(&finished(1), ktap, "", None);
    assert!(reasons(&j.outcome)[0].contains("1 case(s) failed: bind.x@default"));
    assert_eq!(j.culprits.len(), 1);
    assert_eq!(j.culprits[0].case, "bind.x@default");
    assert_eq!(j.culprits[0].why, "FAIL: expected EINVAL, got EBADF");
    assert_eq!(j.tally.failed, 1);
}

#[test]
fn a_splat_fails_a_run_whose_tests_all_passed() {
    let k = parse_ktap(KTAP);
    let s = scan_splats(LOG);
    let j = judge(&Evidence {
        boot: &finished(0),
        ktap: &k,
        splats: &s,
        taint_before: Some(0),
        taint_after: Some(512),
        expect: None,
        numa_nodes: None,

        exec: false,
    });
    let r = reasons(&j.outcome);
    assert!(
        r.iter().any(|r| r.contains("kernel splat")
            && r.contains("kvm_destroy_vm")
            && r.contains("in a.one")),
        "{r:?}"
    );
    assert!(
        r.iter()
            .any(|r| r.contains("taint changed 0 -> 512") && r.contains("W (kernel warning")),
        "{r:?}"
    );
    // The splatted case counts as failed, not passed.
    assert_eq!(
        j.tally,
        Tally {
            passed: 0,
            failed: 1,
            skipped: 1
        }
    );
    assert_eq!(j.culprits[0].case, "a.one");
    assert!(j.culprits[0].why.starts_with("kernel splat: WARNING"));
}

#[test]
fn a_splat_outside_any_case_is_a_failure_of_its_own() {
    let log = "[    0.500000] WARNING: CPU: 0 PID: 1 at arch/x86/kernel/foo.c:1 foo+0x1/0x2\n";
    let j = judged(&finished(0), KTAP, log, None);
    assert!(matches!(j.outcome, Outcome::Failed(_)));
    assert!(j.culprits.is_empty(), "no case to blame: {:?}", j.culprits);
    assert_eq!(
        j.tally,
        Tally {
            passed: 1,
            failed: 1,
            skipped: 1
        }
    );
}

#[test]
fn a_panic_during_a_case_names_that_case() {
    let ktap = "KTAP version 1\n1..3\nok 1 a.one\n# begin punch.x@sw_protected\n";
    let log = "[    2.000000] gmem-selftests: begin punch.x@sw_protected\n[    2.100000] Kernel panic - not syncing: Fatal exception\n";
    let boot = Boot {
        userspace_up: true,
        panic_line: Some("Kernel panic - not syncing: Fatal exception".into()),
        vng_exit: Some(255),
        ..Default::default()
    };
    let j = judged(&boot, ktap, log, None);
    let Outcome::Panic(d) = &j.outcome else {
        panic!("{:?}", j.outcome)
    };
    assert!(
        d.contains("while `punch.x@sw_protected` was running"),
        "{d}"
    );
    assert!(j.culprits.iter().any(|c| c.case == "punch.x@sw_protected"));
    // One missing result per absent number: the running case and one more.
    assert_eq!(j.tally.failed, 2);
    assert_eq!(j.tally.passed, 1);
}

#[test]
fn a_hang_during_a_case_names_that_case() {
    let ktap = "KTAP version 1\n1..2\nok 1 a.one\n# begin regression.x@sw_protected\n";
    let boot = Boot {
        killed: Some(Deadline::Run(900)),
        userspace_up: true,
        ..Default::default()
    };
    let j = judged(&boot, ktap, "", None);
    let Outcome::Hang(d) = &j.outcome else {
        panic!("{:?}", j.outcome)
    };
    assert!(
        d.contains("900s") && d.contains("regression.x@sw_protected"),
        "{d}"
    );
    assert_eq!(j.culprits.len(), 1);
    assert_eq!(j.culprits[0].case, "regression.x@sw_protected");
    assert!(j.culprits[0].why.contains("hung"));
}

#[test]
fn a_hang_after_the_last_result_blames_no_case() {
    // a.one splatted and finished; the guest then hung at teardown.
    let boot = Boot {
        killed: Some(Deadline::Run(900)),
        userspace_up: true,
        ..Default::default()
    };
    let j = judged(&boot, KTAP, LOG, None);
    let Outcome::Hang(d) = &j.outcome else {
        panic!("{:?}", j.outcome)
    };
    assert!(!d.contains("while"), "{d}");
    assert_eq!(j.culprits.len(), 1, "only the splat: {:?}", j.culprits);
    assert!(j.culprits[0].why.starts_with("kernel splat"));
}

#[test]
fn no_boot_blames_no_case() {
    let boot = Boot {
        killed: Some(Deadline::Boot(180)),
        console_tail: "[    0.1] Booting the kernel".into(),
        ..Default::default()
    };
    let j = judged(&boot, "", "", None);
    let Outcome::NoBoot(d) = &j.outcome else {
        panic!("{:?}", j.outcome)
    };
    assert!(
        d.contains("180s") && d.contains("Booting the kernel"),
        "{d}"
    );
    assert!(j.culprits.is_empty());
    assert_eq!(
        j.tally,
        Tally {
            passed: 0,
            failed: 1,
            skipped: 0
        }
    );
    let boot = Boot {
        userspace_up: false,
        vng_exit: Some(1),
        ..Default::default()
    };
    assert!(matches!(
        judged(&boot, "", "", None).outcome,
        Outcome::NoBoot(_)
    ));
}

#[test]
fn no_exit_status_is_a_harness_error() {
    let boot = Boot {
        userspace_up: true,
        vng_exit: Some(0),
        ..Default::default()
    };
    let j = judged(&boot, KTAP, "", None);
    assert!(matches!(j.outcome, Outcome::Error(_)), "{:?}", j.outcome);
    assert_eq!(j.tally.failed, 1);
}

#[test]
fn no_ktap_fails() {
    let j = judged(
        &finished(0),
        "the binary printed something else\n",
        "",
        None,
    );
    let r = reasons(&j.outcome);
    assert!(r.iter().any(|r| r.contains("no KTAP header")), "{r:?}");
    assert_eq!(j.tally.failed, 1);
}

#[test]
fn nonzero_exit_without_failed_case_fails() {
    let j = judged(&finished(2), KTAP, "", None);
    assert!(reasons(&j.outcome)[0].contains("exited with status 2"));
}

#[test]
fn an_empty_plan_fails() {
    let j = judged(&finished(0), "KTAP version 1\n1..0\n", "", None);
    let r = reasons(&j.outcome);
    assert!(r.iter().any(|r| r.contains("no case in the plan")), "{r:?}");
    assert_eq!(j.tally.failed, 1);
}

#[test]
fn a_plan_where_every_case_skips_fails_on_any_kernel() {
    let ktap = "KTAP version 1\n1..2\nok 1 a.b@default # SKIP lacks /dev/kvm: ENOENT\nok 2 a.b@sw_protected # SKIP lacks /dev/kvm: ENOENT\n";
    let j = judged(&finished(0), ktap, "", None);
    let r = reasons(&j.outcome);
    assert!(
        r.iter().any(|r| r.contains("no case ran (2 of 2 skipped")),
        "{r:?}"
    );
}

/// The run a patch that makes KVM_CAP_GUEST_MEMFD answer 0 everywhere would
/// give: every guest_memfd case skips. On a kernel built from the series
/// that is a failure of each of those cases, and the capability report
/// differs from the expectation.
#[test]
fn every_case_skipping_on_a_series_kernel_fails() {
    let caps = SERIES_CAPS.replace(
        "caps sw_protected KVM_CAP_GUEST_MEMFD=1",
        "caps sw_protected KVM_CAP_GUEST_MEMFD=0",
    );
    let ktap = format!(
        "KTAP version 1\n1..3\n{caps}ok 1 caps.vm_types@default\n\
ok 2 create.size@default # SKIP lacks KVM_CAP_GUEST_MEMFD: KVM_CAP_GUEST_MEMFD is 0 on a default VM\n\
ok 3 create.size@sw_protected # SKIP lacks KVM_CAP_GUEST_MEMFD: KVM_CAP_GUEST_MEMFD is 0 on a sw_protected VM\n"
    );
    let e = series_expect();
    let j = judged(&finished(0), &ktap, "", Some(&e));
    let r = reasons(&j.outcome);
    assert!(
        r.iter()
            .any(|r| r.contains("1 case(s) failed: create.size@sw_protected")),
        "{r:?}"
    );
    assert!(
        r.iter().any(|r| r
            .contains("KVM_CAP_GUEST_MEMFD is 0x0 on sw_protected, a series kernel reports 0x1")),
        "{r:?}"
    );
    assert_eq!(j.culprits[0].case, "create.size@sw_protected");
    assert!(j.culprits[0]
        .why
        .contains("KVM_CAP_GUEST_MEMFD which a series kernel must have"));
    // The default VM's skip is due: no guest_memfd there on the 6.8 uAPI.
    assert_eq!(
        j.tally,
        Tally {
            passed: 1,
            failed: 2,
            skipped: 1
        }
    );
    // Without an expectation (a --kernel image) the same skips are skips.
    let j = judged(&finished(0), &ktap, "", None);
    assert_eq!(j.outcome, Outcome::Passed);
}

#[test]
fn a_series_run_with_the_expected_caps_and_due_skips_passes() {
    let ktap = format!(
        "KTAP version 1\n1..2\n{SERIES_CAPS}ok 1 create.size@sw_protected\n\
ok 2 create.size@default # SKIP lacks KVM_CAP_GUEST_MEMFD: KVM_CAP_GUEST_MEMFD is 0 on a default VM\n"
    );
    let e = series_expect();
    let j = judged(&finished(0), &ktap, "", Some(&e));
    assert_eq!(j.outcome, Outcome::Passed, "{:?}", j.outcome);
    // A skip in free text cannot be checked, so it fails on a series kernel.
    let free = ktap.replace(
        "# SKIP lacks KVM_CAP_GUEST_MEMFD: KVM_CAP_GUEST_MEMFD is 0",
        "# SKIP no guest_memfd",
    );
    let j = judged(&finished(0), &free, "", Some(&e));
    assert!(j.culprits[0].why.contains("without naming what it lacks"));
}

#[test]
fn a_numa_skip_fails_only_the_run_that_gave_the_guest_the_nodes() {
    let ktap = format!(
        "KTAP version 1\n1..2\n{SERIES_CAPS}ok 1 create.size@sw_protected\n\
ok 2 mmap.mbind@sw_protected # SKIP lacks numa=2: NUMA nodes 0 and 1 not both online\n"
    );
    let e = series_expect();
    let (k, s, boot) = (parse_ktap(&ktap), scan_splats(""), finished(0));
    let ev = |numa_nodes| Evidence {
        boot: &boot,
        ktap: &k,
        splats: &s,
        taint_before: Some(0),
        taint_after: Some(0),
        expect: Some(&e),
        numa_nodes,
        exec: false,
    };
    assert_eq!(judge(&ev(None)).outcome, Outcome::Passed);
    let j = judge(&ev(Some(2)));
    assert_eq!(j.culprits[0].case, "mmap.mbind@sw_protected");
    assert!(
        j.culprits[0].why.contains("a guest with 2 NUMA nodes"),
        "{}",
        j.culprits[0].why
    );
}

#[test]
fn not_ok_with_a_skip_directive_is_a_failure() {
    let ktap = "KTAP version 1\n1..2\nok 1 a.one\nnot ok 2 a.two # SKIP looked like a skip\n";
    let j = judged(&finished(1), ktap, "", None);
    assert_eq!(j.culprits[0].case, "a.two");
    assert_eq!(j.tally.failed, 1);
    assert_eq!(j.tally.skipped, 0);
}

#[test]
fn a_stream_truncated_after_one_result_has_one_missing_per_absent_number() {
    let ktap = "KTAP version 1\n1..4\nok 1 a.one\n";
    let j = judged(&finished(0), ktap, "", None);
    assert_eq!(
        j.tally,
        Tally {
            passed: 1,
            failed: 3,
            skipped: 0
        }
    );
    assert!(reasons(&j.outcome)
        .iter()
        .any(|r| r.contains("truncated: 1 of 4 results")));
}

#[test]
fn exec_runs_are_judged_on_the_command_status() {
    let k = xtask::results::Ktap {
        version_seen: true,
        ..Default::default()
    };
    let ev = |boot| Evidence {
        boot,
        ktap: &k,
        splats: &[],
        taint_before: None,
        taint_after: None,
        expect: None,
        numa_nodes: None,

        exec: true,
    };
    let (ok, bad) = (finished(0), finished(3));
    assert_eq!(judge(&ev(&ok)).outcome, Outcome::Passed);
    assert!(reasons(&judge(&ev(&bad)).outcome)[0].contains("guest command exited 3"));
}

fn result_with(ktap: &str, log: &str, boot: &Boot) -> RunResult {
    let k = parse_ktap(ktap);
    let splats: Vec<Splat> = scan_splats(log);
    let j = judge(&Evidence {
        boot,
        ktap: &k,
        splats: &splats,
        taint_before: Some(0),
        taint_after: Some(0),
        expect: None,
        numa_nodes: None,

        exec: false,
    });
    let mut r = RunResult {
        run_id: "m".into(),
        mode: "vng".into(),
        config: "base+gmem".into(),
        accel: Some(xtask::boot::Accel::Tcg),
        accel_reason: "test".into(),
        guest_exit: boot.exit,
        duration_s: 1.0,
        taint_before: Some(0),
        taint_after: Some(0),
        ktap: k,
        splats,
        series: Some(SeriesTag {
            name: "guest_memfd".into(),
            version: 1,
            base: "6.1.176".into(),
            mutant: Some("m1".into()),
        }),
        ..Default::default()
    };
    r.set_judgement(j);
    r
}

#[test]
fn junit_marks_the_case_with_the_splat_failed() {
    let r = result_with(KTAP, LOG, &finished(0));
    let xml = r.junit().to_string().unwrap();
    assert!(xml.contains("tests=\"2\""), "{xml}");
    assert!(xml.contains("failures=\"1\""), "{xml}");
    assert!(
        xml.contains("kernel splat: WARNING: CPU: 0 PID: 9 at virt/kvm/kvm_main.c:1335"),
        "{xml}"
    );
    assert!(xml.contains("skipped"), "{xml}");
    let summary = r.summary();
    assert!(summary.contains("SPLAT"), "{summary}");
    assert!(
        summary.contains("0 passed, 1 failed, 1 skipped"),
        "{summary}"
    );
    assert!(summary.contains("accel      tcg (test)"), "{summary}");
    let dir = tempfile::tempdir().unwrap();
    let json = r.write_json(dir.path()).unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(back["outcome"]["kind"], "failed");
    assert_eq!(back["ktap"]["cases"][1]["status"], "skip");
    assert_eq!(back["ktap"]["cases"][1]["reason"], "no SW_PROTECTED VMs");
    assert_eq!(back["tally"]["failed"], 1);
    assert_eq!(back["culprits"][0]["case"], "a.one");
}

#[test]
fn mutant_verdicts_count_only_what_a_case_caught() {
    // Killed by a failed case.
    let failed = result_with(
        "KTAP version 1\n1..2\nok 1 a.one\nnot ok 2 bind.gpa_overlap_eexist@sw_protected\n",
        "",
        &finished(1),
    );
    let row = classify(&failed);
    assert_eq!(row.verdict, MutantVerdict::Killed);
    assert_eq!(row.name, "m1");
    assert_eq!(row.run_id.as_deref(), Some("m"));
    assert_eq!(
        row.killed_by,
        vec!["bind.gpa_overlap_eexist@sw_protected (not ok)"]
    );
    // Killed by a splat during a case.
    let row = classify(&result_with(KTAP, LOG, &finished(0)));
    assert_eq!(row.verdict, MutantVerdict::Killed);
    assert!(
        row.killed_by[0].starts_with("a.one (kernel splat: WARNING: CPU: 0 PID: 9"),
        "{:?}",
        row.killed_by
    );
    // Killed by the case running when the kernel hung.
    let hang = result_with(
        "KTAP version 1\n1..2\nok 1 a.one\n# begin regression.x@sw_protected\n",
        "",
        &Boot {
            killed: Some(Deadline::Run(900)),
            userspace_up: true,
            ..Default::default()
        },
    );
    let row = classify(&hang);
    assert_eq!(row.verdict, MutantVerdict::Killed);
    assert!(row.killed_by[0].starts_with("regression.x@sw_protected (the kernel hung"));
    // A kernel that never boots is an error, not a kill.
    let no_boot = result_with(
        "",
        "",
        &Boot {
            killed: Some(Deadline::Boot(180)),
            ..Default::default()
        },
    );
    let row = classify(&no_boot);
    assert_eq!(row.verdict, MutantVerdict::Error);
    assert!(row.killed_by.is_empty());
    assert!(
        row.detail[0].starts_with("KERNEL DID NOT BOOT"),
        "{:?}",
        row.detail
    );
    // A panic at boot, before the suite: an error too.
    let boot_panic = result_with(
        "",
        "[    0.3] Kernel panic - not syncing: VFS: Unable to mount root fs\n",
        &Boot {
            userspace_up: false,
            panic_line: Some("Kernel panic - not syncing: VFS: Unable to mount root fs".into()),
            vng_exit: Some(255),
            ..Default::default()
        },
    );
    assert_eq!(classify(&boot_panic).verdict, MutantVerdict::Error);
    // A harness error (no exit status) with every case passed: an error.
    let harness = result_with(
        KTAP,
        "",
        &Boot {
            userspace_up: true,
            vng_exit: Some(0),
            ..Default::default()
        },
    );
    assert_eq!(classify(&harness).verdict, MutantVerdict::Error);
    // Survived.
    let row = classify(&result_with(KTAP, "", &finished(0)));
    assert_eq!(row.verdict, MutantVerdict::Survived);
}
