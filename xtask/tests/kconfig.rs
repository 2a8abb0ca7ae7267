//! Fragment merge and the survivor check (no kernel build needed).

use std::path::Path;

use xtask::kconfig::{self, Fragment};

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/kconfig")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn frag(name: &str) -> Fragment {
    Fragment::parse(name, &fixture(&format!("{name}.config"))).expect("fixture parses")
}

#[test]
fn parse_reads_assignments_and_not_set_lines() {
    let a = frag("a");
    let got: Vec<(String, String)> = a
        .assignments
        .iter()
        .map(|x| (x.option.clone(), x.value.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("CONFIG_A".into(), "y".into()),
            ("CONFIG_B".into(), "m".into()),
            ("CONFIG_C".into(), "n".into()),
            ("CONFIG_STR".into(), "\"hello\"".into()),
            ("CONFIG_NUM".into(), "42".into()),
        ]
    );
    assert_eq!(a.assignments[3].line, 5);
}

#[test]
fn parse_rejects_garbage_naming_file_and_line() {
    let err = Fragment::parse("bad", &fixture("bad.config"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bad:2"), "{err}");
    assert!(err.contains("this is not a config line"), "{err}");
    let err = Fragment::parse("x", "FOO=y\n").unwrap_err().to_string();
    assert!(err.contains("not a CONFIG_ option"), "{err}");
    let err = Fragment::parse("x", "CONFIG_FOO=\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no value"), "{err}");
}

#[test]
fn merge_later_fragment_wins_and_keeps_first_order() {
    let merged = kconfig::merge(&[frag("a"), frag("b")]);
    let got: Vec<String> = merged
        .requests
        .iter()
        .map(|x| format!("{}={} ({})", x.option, x.value, x.source))
        .collect();
    assert_eq!(
        got,
        vec![
            "CONFIG_A=n (b)",
            "CONFIG_B=y (b)",
            "CONFIG_C=y (b)",
            "CONFIG_STR=\"hello\" (a)",
            "CONFIG_NUM=42 (a)",
            "CONFIG_D=y (b)",
        ]
    );
    // Three values changed: A, B, C.
    assert_eq!(merged.overrides.len(), 3);
    let rendered = merged.render();
    assert!(rendered.contains("# CONFIG_A is not set\n"));
    assert!(rendered.contains("CONFIG_B=y\n"));
    assert!(!rendered.contains("CONFIG_B=m"));
}

#[test]
fn survivor_check_reports_only_dropped_options() {
    let merged = kconfig::merge(&[frag("a"), frag("b")]);
    let dot = kconfig::parse_dotconfig(&fixture("final.config"));
    let dropped = kconfig::check_survivors(&merged, &dot);
    let names: Vec<&str> = dropped.iter().map(|d| d.request.option.as_str()).collect();
    assert_eq!(names, vec!["CONFIG_D"]);
    assert_eq!(dropped[0].got.as_deref(), Some("n"));
}

#[test]
fn survivor_check_accepts_absent_for_n_and_flags_absent_for_y() {
    let merged =
        kconfig::merge(&[
            Fragment::parse("f", "# CONFIG_GONE is not set\nCONFIG_NEW=y\n").unwrap(),
        ]);
    let dot = kconfig::parse_dotconfig("CONFIG_OTHER=y\n");
    let dropped = kconfig::check_survivors(&merged, &dot);
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].request.option, "CONFIG_NEW");
    assert_eq!(dropped[0].got, None);
}

#[test]
fn explain_names_unmet_dependency_missing_symbol_and_select_only() {
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kconfig/tree");
    let merged =
        kconfig::merge(&[Fragment::parse("f", "CONFIG_D=y\nCONFIG_H=y\nCONFIG_NOPE=y\n").unwrap()]);
    let dot = kconfig::parse_dotconfig("# CONFIG_D is not set\nCONFIG_F=y\n");
    let mut dropped = kconfig::check_survivors(&merged, &dot);
    assert_eq!(dropped.len(), 3);
    kconfig::explain_dropped(&tree, &mut dropped, &dot).unwrap();
    let d = dropped[0].to_string();
    assert!(d.contains("depends on E && (F || G)"), "{d}");
    assert!(d.contains("E=n F=y G=n"), "{d}");
    let h = dropped[1].to_string();
    assert!(h.contains("only selected by SELECTOR"), "{h}");
    let nope = dropped[2].to_string();
    assert!(nope.contains("not defined in any Kconfig file"), "{nope}");
    // Only the symbol the tree lacks may be deferred by --each-patch.
    let undefined: Vec<bool> = dropped.iter().map(|d| d.undefined_in_tree).collect();
    assert_eq!(undefined, [false, false, true]);
}

#[test]
fn help_text_is_not_parsed_as_kconfig() {
    let tree = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kconfig/tree");
    let info = kconfig::scan_kconfig(&tree, &["A".to_string()]).unwrap();
    assert!(info["A"].depends.is_empty(), "{:?}", info["A"]);
    assert!(info["A"].has_prompt);
}

#[test]
fn fragment_list_puts_base_first_once() {
    assert_eq!(
        kconfig::fragment_list("gmem,debug").unwrap(),
        vec!["base", "gmem", "debug"]
    );
    assert_eq!(kconfig::fragment_list("base").unwrap(), vec!["base"]);
    assert_eq!(
        kconfig::fragment_list("debug,base,gmem.config,debug").unwrap(),
        vec!["base", "debug", "gmem"]
    );
    assert!(kconfig::fragment_list("../etc/passwd").is_err());
}

#[test]
fn project_fragments_parse_and_base_has_kvm() {
    let dir = xtask::util::kconfigs_dir();
    let names = kconfig::available_fragments(&dir);
    for n in ["base", "gmem", "debug", "kasan"] {
        assert!(names.iter().any(|x| x == n), "kconfigs/{n}.config missing");
    }
    let frags = kconfig::load_fragments(&dir, &names).unwrap();
    let base = &frags[names.iter().position(|n| n == "base").unwrap()];
    for opt in [
        "CONFIG_KVM",
        "CONFIG_KVM_AMD",
        "CONFIG_KVM_INTEL",
        "CONFIG_9P_FS",
        "CONFIG_VIRTIO_CONSOLE",
    ] {
        assert!(
            base.assignments
                .iter()
                .any(|a| a.option == opt && a.value == "y"),
            "{opt} not in base.config"
        );
    }
    let err = kconfig::load_fragments(&dir, &["nonexistent".to_string()])
        .unwrap_err()
        .to_string();
    assert!(err.contains("available:") && err.contains("gmem"), "{err}");
}

#[test]
fn since_fragments_follow_their_fragment_from_their_version_on() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.config"), "CONFIG_A=y\n").unwrap();
    std::fs::write(dir.path().join("gmem.config"), "CONFIG_KVM=y\n").unwrap();
    for (v, line) in [("6.2", "CONFIG_SMM=y\n"), ("6.10", "CONFIG_LATER=y\n")] {
        let d = dir.path().join("since").join(v);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("gmem.config"), line).unwrap();
    }
    let names = vec!["base".to_string(), "gmem".to_string()];
    let list = |v: Option<&str>| -> Vec<String> {
        kconfig::load_fragments_for(dir.path(), &names, v)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect()
    };
    assert_eq!(list(Some("6.1.176")), ["base", "gmem"]);
    assert_eq!(list(None), ["base", "gmem"]);
    assert_eq!(list(Some("6.2")), ["base", "gmem", "since/6.2/gmem"]);
    // 6.10 sorts after 6.2 numerically, not as text.
    assert_eq!(
        list(Some("6.12.107")),
        ["base", "gmem", "since/6.2/gmem", "since/6.10/gmem"]
    );
    let merged =
        kconfig::merge(&kconfig::load_fragments_for(dir.path(), &names, Some("6.12.107")).unwrap());
    let smm = merged
        .requests
        .iter()
        .find(|r| r.option == "CONFIG_SMM")
        .unwrap();
    assert_eq!(smm.source, "since/6.2/gmem");
}

#[test]
fn the_projects_since_fragments_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kconfigs");
    let names = vec!["base".to_string(), "gmem".to_string()];
    let frags = kconfig::load_fragments_for(&root, &names, Some("6.12.107")).unwrap();
    let merged = kconfig::merge(&frags);
    assert!(merged
        .requests
        .iter()
        .any(|r| r.option == "CONFIG_KVM_SMM" && r.value == "y" && r.source == "since/6.2/gmem"));
    let frags61 = kconfig::load_fragments_for(&root, &names, Some("6.1.176")).unwrap();
    assert!(!kconfig::merge(&frags61)
        .requests
        .iter()
        .any(|r| r.option == "CONFIG_KVM_SMM"));
}
