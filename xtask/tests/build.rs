//! Pieces of build-kernel that need no kernel build.

use std::path::Path;

use xtask::build::{build_dir, check_tree, classify_make_line, fmt_duration, tree_id};

#[test]
fn make_lines_are_classified_for_the_progress_line() {
    assert_eq!(
        classify_make_line("  CC      arch/x86/kvm/x86.o"),
        Some(("CC", "arch/x86/kvm/x86.o"))
    );
    assert_eq!(
        classify_make_line("  LD [M]  foo.ko"),
        Some(("LD", "[M]  foo.ko"))
    );
    assert_eq!(
        classify_make_line("  AS      arch/x86/entry/entry_64.o"),
        Some(("AS", "arch/x86/entry/entry_64.o"))
    );
    assert_eq!(classify_make_line("make[1]: Entering directory '/x'"), None);
    assert_eq!(
        classify_make_line("arch/x86/kvm/x86.c:12:1: error: expected ';'"),
        None
    );
    assert_eq!(classify_make_line("  lowercase   thing"), None);
}

#[test]
fn build_dirs_differ_per_tree_and_config_set() {
    let a = build_dir(Path::new("/src/linux"), &["base".into(), "gmem".into()]);
    let b = build_dir(Path::new("/other/linux"), &["base".into(), "gmem".into()]);
    let c = build_dir(Path::new("/src/linux"), &["base".into()]);
    assert_ne!(a, b);
    assert_ne!(a, c);
    assert!(a.ends_with("base+gmem"));
    assert!(tree_id(Path::new("/src/linux")).starts_with("linux-"));
    assert_eq!(
        tree_id(Path::new("/src/linux")),
        tree_id(Path::new("/src/linux"))
    );
}

#[test]
fn check_tree_refuses_non_kernel_dirs_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let err = check_tree(dir.path()).unwrap_err().to_string();
    assert!(
        err.contains("does not look like a Linux source tree"),
        "{err}"
    );
    let err = check_tree(Path::new("/nonexistent/linux"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}

#[test]
fn durations_read_well() {
    assert_eq!(fmt_duration(std::time::Duration::from_millis(7600)), "7.6s");
    assert_eq!(
        fmt_duration(std::time::Duration::from_secs(608)),
        "10m08.0s"
    );
}
