//! The guest-log splat scanner on fixture logs.

use std::path::Path;

use xtask::results::{classify_splat, decode_taint, scan_splats, strip_kmsg_prefix, SplatKind};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/splats")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn warn_at_kvm_init_is_a_boot_splat_with_its_trace() {
    let s = scan_splats(&fixture("warn-kvm-init.log"));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].kind, SplatKind::Warning);
    assert_eq!(
        s[0].title,
        "WARNING: CPU: 1 PID: 1 at arch/x86/kvm/svm/svm.c:5123 svm_init+0x1d/0x40"
    );
    assert_eq!(s[0].test, None);
    assert_eq!(s[0].phase, "boot");
    assert_eq!(s[0].line, 5);
    assert_eq!(
        s[0].excerpt.last().map(String::as_str),
        Some("---[ end trace 0000000000000000 ]---")
    );
}

#[test]
fn destroy_warn_is_attributed_to_the_running_test() {
    let s = scan_splats(&fixture("warn-destroy-in-test.log"));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(
        s[0].test.as_deref(),
        Some("regression.punch_unbound_no_livelock@sw_protected")
    );
    assert!(s[0].title.contains("kvm_destroy_vm"));
}

#[test]
fn kasan_report_is_one_splat() {
    let s = scan_splats(&fixture("kasan-uaf.log"));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].kind, SplatKind::Kasan);
    assert_eq!(
        s[0].title,
        "BUG: KASAN: use-after-free in kvm_gmem_get_pfn+0x1a3/0x2b0"
    );
    assert_eq!(
        s[0].test.as_deref(),
        Some("punch.hole_frees_pages@sw_protected")
    );
}

#[test]
fn lockdep_report_is_recognised() {
    let s = scan_splats(&fixture("lockdep-circular.log"));
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0].kind, SplatKind::Lockdep);
    assert_eq!(
        s[0].test.as_deref(),
        Some("bind.slot_delete_unbinds@sw_protected")
    );
}

#[test]
fn every_kind_of_report_is_found_and_gpf_absorbs_its_kasan_line() {
    let s = scan_splats(&fixture("bug-sleeping-and-gpf.log"));
    let kinds: Vec<SplatKind> = s.iter().map(|x| x.kind).collect();
    assert_eq!(
        kinds,
        vec![
            SplatKind::Bug,
            SplatKind::GeneralProtectionFault,
            SplatKind::RcuStall,
            SplatKind::Ubsan,
            SplatKind::SoftLockup,
            SplatKind::HungTask,
            SplatKind::Bug,
            SplatKind::Oops,
            SplatKind::Panic,
        ],
        "{s:#?}"
    );
    assert!(s
        .iter()
        .all(|x| x.test.as_deref() == Some("vcpu.run_private@sw_protected")));
}

#[test]
fn benign_lines_do_not_match() {
    let s = scan_splats(&fixture("benign.log"));
    assert!(s.is_empty(), "false positives: {s:#?}");
}

#[test]
fn classify_edge_cases() {
    assert_eq!(
        classify_splat("WARNING: at mm/slub.c:123 foo+0x1/0x2"),
        Some(SplatKind::Warning)
    );
    assert_eq!(
        classify_splat("WARNING: suspicious RCU usage"),
        Some(SplatKind::Lockdep)
    );
    assert_eq!(
        classify_splat("WARNING: bad unlock balance detected!"),
        Some(SplatKind::Lockdep)
    );
    assert_eq!(
        classify_splat("BUG: unable to handle page fault for address: ffffc90000a3e000"),
        Some(SplatKind::Bug)
    );
    assert_eq!(
        classify_splat("INFO: rcu_sched detected stalls on CPUs/tasks:"),
        Some(SplatKind::RcuStall)
    );
    assert_eq!(
        classify_splat("Spectre V2 : WARNING: Unprivileged eBPF is enabled"),
        None
    );
    assert_eq!(classify_splat("kvm: WARNING: something"), None);
    assert_eq!(
        classify_splat("rcu: Hierarchical RCU implementation."),
        None
    );
}

#[test]
fn prefixes_are_stripped() {
    assert_eq!(strip_kmsg_prefix("[   12.345678] BUG: x"), "BUG: x");
    assert_eq!(
        strip_kmsg_prefix("<4>[    1.000000] WARNING: CPU: 0 PID: 1 at x"),
        "WARNING: CPU: 0 PID: 1 at x"
    );
    assert_eq!(strip_kmsg_prefix("[    1.000000] [    T1] foo"), "foo");
    assert_eq!(strip_kmsg_prefix("plain"), "plain");
}

#[test]
fn taint_bits_decode() {
    assert_eq!(decode_taint(0), "none");
    assert_eq!(decode_taint(512), "W (kernel warning, 512)");
    assert!(decode_taint(512 | 128).starts_with("D (kernel died"));
}
