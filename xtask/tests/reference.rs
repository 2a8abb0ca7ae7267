//! The reference lane's plumbing: where each version is fetched from, the
//! error for a version the archive does not serve, the CLI spelling, and
//! the pinned version in series.toml.

use clap::Parser;
use xtask::cli::{Cli, Command};
use xtask::tree::debian::{self, NotDownloadable};

#[test]
fn six_one_comes_from_bookworm_and_newer_kernels_from_their_suites() {
    let (dir, list) = debian::sources_for("6.1.176");
    assert_eq!((dir, list), ("", debian::SOURCES_LIST));
    let (dir, list) = debian::sources_for("6.12.107");
    assert_eq!(dir, "newer");
    assert!(list.contains(" trixie main"), "{list}");
    assert!(
        !list.contains("bookworm main"),
        "6.1 lists stay apart: {list}"
    );
    // 6.10 is not 6.1.
    assert_eq!(debian::sources_for("6.10.3").0, "newer");
}

#[test]
fn an_undownloadable_version_names_itself_and_the_ones_that_can() {
    let err = NotDownloadable {
        debver: "6.12.117-1".into(),
        detail:
            "Err:1 http://deb.debian.org/debian trixie/main linux 6.12.117-1 (dsc) 404 Not Found"
                .into(),
        cached: vec!["6.1.176".into(), "6.12.107".into()],
        listed: vec!["6.12.74".into(), "6.12.113".into()],
    };
    let text = err.to_string();
    for want in ["6.12.117-1", "404", "6.12.107", "6.12.74", "--version"] {
        assert!(text.contains(want), "{want}: {text}");
    }
}

#[test]
fn cached_versions_need_the_dsc_and_its_orig_tarball() {
    let dir = tempfile::tempdir().unwrap();
    let dsc = |v: &str| {
        format!(
            "Format: 3.0 (quilt)\nChecksums-Sha256:\n {} 10 linux_{v}.orig.tar.xz\n",
            "0".repeat(64)
        )
    };
    std::fs::write(dir.path().join("linux_6.12.107-1.dsc"), dsc("6.12.107")).unwrap();
    std::fs::write(dir.path().join("linux_6.12.107.orig.tar.xz"), b"x").unwrap();
    std::fs::write(dir.path().join("linux_6.12.95-1.dsc"), dsc("6.12.95")).unwrap();
    assert_eq!(debian::cached_versions(dir.path()), ["6.12.107"]);
}

#[test]
fn test_reference_takes_an_optional_version() {
    let parse = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
        Command::Test(t) => t.reference,
        _ => unreachable!(),
    };
    assert_eq!(parse(&["x", "test", "--reference"]), Some(String::new()));
    assert_eq!(
        parse(&["x", "test", "--reference", "6.12.95"]),
        Some("6.12.95".into())
    );
    assert_eq!(
        parse(&["x", "test", "--reference", "--filter", "bind"]),
        Some(String::new())
    );
    assert_eq!(parse(&["x", "test"]), None);
    assert!(Cli::try_parse_from(["x", "test", "--reference", "--host"]).is_err());
}

#[test]
fn the_reference_is_pinned_next_to_the_base() {
    let version = xtask::reference::version(None).unwrap();
    xtask::tree::validate_version(&version).unwrap();
    assert!(
        !version.starts_with("6.1."),
        "the reference is upstream, not the base: {version}"
    );
    assert_eq!(
        xtask::reference::version(Some("6.18.15")).unwrap(),
        "6.18.15"
    );
    assert!(xtask::reference::version(Some("six")).is_err());
    let (_, tree) = xtask::tree::pinned_reference().unwrap().unwrap();
    assert!(tree.is_some(), "[reference] pins the orig tarball's tree");
}
