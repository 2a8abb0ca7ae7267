//! From parsed output to a verdict, results.json and junit.xml.

use xtask::results::{parse_ktap, scan_splats, verdict, Outcome, RunResult};

const KTAP: &str = "KTAP version 1\n1..2\nok 1 a.one\n# time a.one 5\nok 2 a.two # SKIP no SW_PROTECTED VMs\n# totals: pass 1 fail 0 skip 1\n";
const LOG: &str = "[    1.000000] gmem-selftests: begin a.one\n[    1.100000] WARNING: CPU: 0 PID: 9 at virt/kvm/kvm_main.c:1335 kvm_destroy_vm+0x2c4/0x2d0\n[    1.200000] ---[ end trace 0000000000000000 ]---\n[    1.300000] gmem-selftests: end a.one\n";

#[test]
fn all_passing_is_a_pass() {
    let k = parse_ktap(KTAP);
    assert_eq!(verdict(&k, &[], Some(0), Some(0), Some(0)), Outcome::Passed);
}

#[test]
fn a_splat_fails_a_run_whose_tests_all_passed() {
    let k = parse_ktap(KTAP);
    let s = scan_splats(LOG);
    let v = verdict(&k, &s, Some(0), Some(512), Some(0));
    let Outcome::Failed(reasons) = v else {
        panic!("expected failure, got {v:?}")
    };
    assert!(
        reasons.iter().any(|r| r.contains("kernel splat")
            && r.contains("kvm_destroy_vm")
            && r.contains("in a.one")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("taint changed 0 -> 512") && r.contains("W (warning")),
        "{reasons:?}"
    );
}

#[test]
fn nonzero_exit_without_failed_case_fails() {
    let k = parse_ktap(KTAP);
    assert!(matches!(
        verdict(&k, &[], None, None, Some(2)),
        Outcome::Failed(_)
    ));
}

#[test]
fn junit_marks_the_case_with_the_splat_failed() {
    let k = parse_ktap(KTAP);
    let splats = scan_splats(LOG);
    let outcome = verdict(&k, &splats, Some(0), Some(512), Some(0));
    let r = RunResult {
        run_id: "t".into(),
        mode: "vng".into(),
        kernel: Some("6.1.176".into()),
        kernel_image: None,
        config: "base".into(),
        accel: "tcg".into(),
        accel_reason: "test".into(),
        command: vec![],
        guest_exit: Some(0),
        boot_to_first_ktap_s: Some(10.0),
        duration_s: 20.0,
        taint_before: Some(0),
        taint_after: Some(512),
        ktap: k,
        splats,
        outcome,
        series: None,
    };
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
    assert!(summary.contains("accel      tcg (test)"), "{summary}");
    let dir = tempfile::tempdir().unwrap();
    let json = r.write_json(dir.path()).unwrap();
    let back: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json).unwrap()).unwrap();
    assert_eq!(back["outcome"]["kind"], "failed");
    assert_eq!(back["ktap"]["cases"][1]["status"], "skip");
    assert_eq!(back["ktap"]["cases"][1]["reason"], "no SW_PROTECTED VMs");
}

fn result_with(ktap: &str, log: &str, outcome: Option<Outcome>) -> RunResult {
    let k = parse_ktap(ktap);
    let splats = scan_splats(log);
    let outcome = outcome.unwrap_or_else(|| verdict(&k, &splats, Some(0), Some(0), Some(0)));
    RunResult {
        run_id: "m".into(),
        mode: "vng".into(),
        kernel: None,
        kernel_image: None,
        config: "base+gmem".into(),
        accel: "tcg".into(),
        accel_reason: "test".into(),
        command: vec![],
        guest_exit: Some(1),
        boot_to_first_ktap_s: None,
        duration_s: 1.0,
        taint_before: Some(0),
        taint_after: Some(0),
        ktap: k,
        splats,
        outcome,
        series: None,
    }
}

#[test]
fn mutant_killers_name_failed_cases_splats_and_hangs() {
    use xtask::test::killers;
    let failed = result_with(
        "KTAP version 1\n1..2\nok 1 a.one\nnot ok 2 bind.gpa_overlap_eexist@sw_protected\n",
        "",
        None,
    );
    assert_eq!(
        killers(&failed),
        vec!["bind.gpa_overlap_eexist@sw_protected"]
    );
    let splat = result_with(KTAP, LOG, None);
    let k = killers(&splat);
    assert_eq!(k.len(), 1, "{k:?}");
    assert!(
        k[0].starts_with("a.one (splat: WARNING: CPU: 0 PID: 9 at virt/kvm/kvm_main.c:1335"),
        "{k:?}"
    );
    let hang = result_with(
        "KTAP version 1\n1..2\nok 1 a.one\n",
        "",
        Some(Outcome::Hang(
            "the run did not finish within 900s; QEMU was killed while `regression.x` was running"
                .into(),
        )),
    );
    let k = killers(&hang);
    assert!(
        k.iter()
            .any(|x| x.starts_with("hang:") && x.contains("regression.x")),
        "{k:?}"
    );
    let survived = result_with(KTAP, "", None);
    assert!(killers(&survived).is_empty());
}
