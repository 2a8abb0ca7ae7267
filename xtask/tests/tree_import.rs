//! `tree fetch` on small tarballs and repositories built in temp dirs:
//! good imports (checked against what git itself makes of the same files),
//! every refused entry kind, checksums, cache reuse and the git source.
//! No network.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tar::{EntryType, Header};
use xtask::tree::{self, debian, FetchRequest, Source};

/// One entry of a fixture tarball. Names are written into the header as
/// given (the tar crate would refuse the hostile ones).
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
    Exec(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn raw_header(name: &str, kind: EntryType, mode: u32, size: u64, link: Option<&str>) -> Header {
    let mut header = Header::new_gnu();
    {
        let gnu = header.as_gnu_mut().expect("gnu header");
        assert!(name.len() < 100, "fixture names must fit in the header");
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
    }
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(size);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    header
}

/// Writes `entries` as a tarball (`.tar.xz` or `.tar.gz` by `name`).
fn make_tarball(dir: &Path, name: &str, entries: &[E]) -> PathBuf {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let (header, data): (Header, &[u8]) = match entry {
            E::Dir(n) => (raw_header(n, EntryType::Directory, 0o755, 0, None), b""),
            E::File(n, d) => (
                raw_header(n, EntryType::Regular, 0o644, d.len() as u64, None),
                d,
            ),
            E::Exec(n, d) => (
                raw_header(n, EntryType::Regular, 0o755, d.len() as u64, None),
                d,
            ),
            E::Symlink(n, t) => (raw_header(n, EntryType::Symlink, 0o777, 0, Some(t)), b""),
            E::Hardlink(n, t) => (raw_header(n, EntryType::Link, 0o644, 0, Some(t)), b""),
        };
        builder.append(&header, data).expect("appending to fixture");
    }
    let tar = builder.into_inner().expect("finishing fixture");
    let path = dir.join(name);
    let file = fs::File::create(&path).expect("creating fixture");
    if name.ends_with(".gz") {
        let mut enc = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
        enc.write_all(&tar).expect("writing fixture");
        enc.finish().expect("finishing fixture");
    } else {
        let mut enc = xz2::write::XzEncoder::new(file, 1);
        enc.write_all(&tar).expect("writing fixture");
        enc.finish().expect("finishing fixture");
    }
    path
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.com",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn good_entries() -> Vec<E<'static>> {
    vec![
        E::Dir("linux-1.2.3/"),
        E::File(
            "linux-1.2.3/Makefile",
            b"VERSION = 1\nPATCHLEVEL = 2\nSUBLEVEL = 3\n",
        ),
        E::Dir("linux-1.2.3/scripts/"),
        E::Exec(
            "linux-1.2.3/scripts/checkpatch.pl",
            b"#!/usr/bin/perl\nprint 1;\n",
        ),
        E::File("linux-1.2.3/include/a.h", b"#define A 1\n"),
        E::Symlink("linux-1.2.3/include/b.h", "a.h"),
        E::Symlink("linux-1.2.3/arch/inc", "../include"),
        E::Hardlink("linux-1.2.3/include/c.h", "linux-1.2.3/include/a.h"),
        E::File("linux-1.2.3/.gitignore", b"*.h\ntags\n"),
        E::File("linux-1.2.3/tools/tags/tags.c", b"int main;\n"),
        E::File("linux-1.2.3/dup.c", b"same\n"),
        E::File("linux-1.2.3/dup2.c", b"same\n"),
        E::Dir("linux-1.2.3/empty/"),
    ]
}

fn fetch_tarball(
    tarball: &Path,
    dest: &Path,
    version: Option<&str>,
) -> anyhow::Result<tree::Fetched> {
    tree::fetch(&FetchRequest {
        source: Source::Tarball(tarball.to_path_buf()),
        version: version.map(str::to_string),
        dir: Some(dest.to_path_buf()),
        progress: false,
    })
}

/// The tree git itself records for the same files: `tar x` + `git add -f`.
fn git_tree_of_tarball(tarball: &Path, scratch: &Path) -> String {
    fs::create_dir_all(scratch).unwrap();
    let out = Command::new("tar")
        .arg("-xf")
        .arg(tarball)
        .arg("-C")
        .arg(scratch)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar x failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let top = fs::read_dir(scratch)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    git(&top, &["init", "-q"]);
    git(&top, &["add", "-A", "-f", "."]);
    git(&top, &["write-tree"]).trim().to_string()
}

#[test]
fn good_tarball_imports_as_tagged_clean_repository_matching_git() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "linux-1.2.3.tar.xz", &good_entries());
    let dest = tmp.path().join("kernel");
    let fetched = fetch_tarball(&tarball, &dest, None).unwrap();
    assert_eq!(
        fetched.version, "1.2.3",
        "version from the top-level directory"
    );
    assert!(!fetched.reused);
    assert_eq!(fetched.path, dest);

    // The tag names the commit, which is the only one, and its tree is what
    // `git add` of the same files gives (ignored files included).
    assert_eq!(
        git(&dest, &["rev-parse", "v1.2.3"]).trim(),
        fetched.commit.to_string()
    );
    assert_eq!(
        git(&dest, &["rev-parse", "HEAD"]).trim(),
        fetched.commit.to_string()
    );
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]).trim(), "1");
    assert_eq!(tree::tag_tree(&dest, "1.2.3").unwrap(), fetched.tree);
    let expected = git_tree_of_tarball(&tarball, &tmp.path().join("ref"));
    assert_eq!(fetched.tree.to_string(), expected);

    // A clean checkout with exec bits and symlinks on disk and in git.
    assert_eq!(git(&dest, &["status", "--porcelain", "--ignored"]), "");
    git(&dest, &["fsck", "--strict", "--no-dangling"]);
    let ls = git(&dest, &["ls-tree", "-r", "HEAD"]);
    assert!(
        ls.contains("100755 blob") && ls.contains("\tscripts/checkpatch.pl"),
        "{ls}"
    );
    assert!(
        ls.contains("120000 blob") && ls.contains("\tinclude/b.h"),
        "{ls}"
    );
    assert!(ls.contains("\tarch/inc"), "{ls}");
    assert!(ls.contains("\ttools/tags/tags.c"), "{ls}");
    let mode = fs::metadata(dest.join("scripts/checkpatch.pl"))
        .unwrap()
        .permissions()
        .mode();
    assert_ne!(mode & 0o111, 0, "exec bit on disk");
    assert_eq!(
        fs::read_link(dest.join("include/b.h")).unwrap(),
        PathBuf::from("a.h")
    );
    assert_eq!(
        fs::read(dest.join("include/c.h")).unwrap(),
        b"#define A 1\n"
    );
    // Nothing but the repository is left next to it.
    let names: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| !n.to_string_lossy().starts_with(".xtask-")),
        "{names:?}"
    );
}

#[test]
fn gzip_tarball_with_explicit_version_imports() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "src.tar.gz", &good_entries());
    let dest = tmp.path().join("kernel");
    let fetched = fetch_tarball(&tarball, &dest, Some("1.2")).unwrap();
    assert_eq!(fetched.version, "1.2");
    assert_eq!(
        git(&dest, &["rev-parse", "v1.2^{tree}"]).trim(),
        fetched.tree.to_string()
    );
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
}

#[test]
fn second_fetch_reuses_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "linux-1.2.3.tar.xz", &good_entries());
    let dest = tmp.path().join("kernel");
    let first = fetch_tarball(&tarball, &dest, None).unwrap();
    fs::write(dest.join(".git/marker"), "still here").unwrap();
    let second = fetch_tarball(&tarball, &dest, None).unwrap();
    assert!(second.reused);
    assert_eq!(second.commit, first.commit);
    assert_eq!(second.tree, first.tree);
    assert!(
        dest.join(".git/marker").exists(),
        "the repository was not recreated"
    );
}

#[test]
fn import_removes_scratch_left_by_a_dead_run_only() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "linux-1.2.3.tar.xz", &good_entries());
    // pid 999999999 is above any pid_max; this test's own pid is alive.
    let dead = tmp.path().join(".xtask-import-999999999-k3Jq");
    let alive = tmp
        .path()
        .join(format!(".xtask-import-{}-zz", std::process::id()));
    let unrelated = tmp.path().join(".xtask-import-notapid");
    for dir in [&dead, &alive, &unrelated] {
        fs::create_dir_all(dir.join(".git/objects")).unwrap();
    }
    fetch_tarball(&tarball, &tmp.path().join("kernel"), None).unwrap();
    assert!(!dead.exists(), "a dead run's scratch directory was kept");
    assert!(
        alive.exists(),
        "a running import's scratch directory was removed"
    );
    assert!(unrelated.exists(), "a directory without a pid was removed");
    let left: Vec<String> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".xtask-import-"))
        .collect();
    assert_eq!(
        left.len(),
        2,
        "the import left its own scratch behind: {left:?}"
    );
}

#[test]
fn truncated_or_corrupt_tarball_is_a_clear_error_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let good = make_tarball(tmp.path(), "linux-1.2.3.tar.xz", &good_entries());
    let bytes = fs::read(&good).unwrap();
    let cut = tmp.path().join("cut/linux-1.2.3.tar.xz");
    fs::create_dir_all(cut.parent().unwrap()).unwrap();
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0xff;
    let bad = tmp.path().join("bad/linux-1.2.3.tar.xz");
    fs::create_dir_all(bad.parent().unwrap()).unwrap();
    fs::write(&bad, &flipped).unwrap();
    for tarball in [&cut, &bad] {
        let out = tarball.parent().unwrap();
        let dest = out.join("kernel");
        let err = format!("{:#}", fetch_tarball(tarball, &dest, None).unwrap_err());
        assert!(err.contains("linux-1.2.3.tar.xz"), "{err}");
        assert!(!dest.exists(), "{} was left", dest.display());
        let left: Vec<_> = fs::read_dir(out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "linux-1.2.3.tar.xz")
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

/// Imports `entries` and returns the error text; checks nothing was left.
fn import_error(entries: &[E]) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "linux-1.0.tar.xz", entries);
    let dest = tmp.path().join("kernel");
    let err = fetch_tarball(&tarball, &dest, None).expect_err("import should be refused");
    assert!(!dest.exists(), "nothing may be left at the destination");
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "linux-1.0.tar.xz")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    format!("{err:#}")
}

#[test]
fn dotdot_entry_is_refused() {
    let err = import_error(&[E::Dir("linux-1.0/"), E::File("linux-1.0/../evil", b"x")]);
    insta::assert_snapshot!(err);
}

#[test]
fn absolute_entry_is_refused() {
    let err = import_error(&[E::Dir("linux-1.0/"), E::File("/etc/evil", b"x")]);
    insta::assert_snapshot!(err);
}

#[test]
fn escaping_symlink_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Symlink("linux-1.0/drivers/evil", "../../etc"),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn absolute_symlink_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Symlink("linux-1.0/evil", "/etc/passwd"),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn symlink_chain_escaping_is_refused() {
    // Each link alone stays inside; followed through `up`, `out` leaves.
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Symlink("linux-1.0/a/up", ".."),
        E::Symlink("linux-1.0/out", "a/up/.."),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn symlink_chain_escaping_is_refused_whatever_the_order() {
    // `out` is judged again once `up` exists (after the stream).
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Symlink("linux-1.0/out", "a/up/.."),
        E::Symlink("linux-1.0/a/up", ".."),
    ]);
    assert!(err.contains("refusing tarball entry `linux-1.0/out`: symlink target `a/up/..` points outside the tree"), "{err}");
}

#[test]
fn escaping_hardlink_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Hardlink("linux-1.0/passwd", "linux-1.0/../../etc/passwd"),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn hardlink_outside_the_top_directory_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Hardlink("linux-1.0/passwd", "/etc/passwd"),
    ]);
    insta::assert_snapshot!(err);
    // A relative target in a sibling of the top directory is outside too.
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Hardlink("linux-1.0/passwd", "other/passwd"),
    ]);
    assert!(
        err.contains("hard link target `other/passwd` points outside the tree"),
        "{err}"
    );
}

#[test]
fn entry_through_a_symlink_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::Dir("linux-1.0/real/"),
        E::Symlink("linux-1.0/link", "real"),
        E::File("linux-1.0/link/file", b"x"),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn dot_git_entry_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::File("linux-1.0/.git/config", b"[core]\n"),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn second_top_level_directory_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::File("linux-1.0/a", b"x"),
        E::File("other/b", b"y"),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn duplicate_entry_is_refused() {
    let err = import_error(&[
        E::Dir("linux-1.0/"),
        E::File("linux-1.0/a", b"x"),
        E::Symlink("linux-1.0/a", "b"),
    ]);
    insta::assert_snapshot!(err);
}

#[test]
fn existing_foreign_directory_is_not_clobbered() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "linux-1.2.3.tar.xz", &good_entries());
    let dest = tmp.path().join("mine");
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("notes.txt"), "precious").unwrap();
    let err = fetch_tarball(&tarball, &dest, None).expect_err("must refuse");
    let text = format!("{err:#}").replace(&tmp.path().display().to_string(), "[TMP]");
    insta::assert_snapshot!(text);
    assert_eq!(
        fs::read_to_string(dest.join("notes.txt")).unwrap(),
        "precious"
    );
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);
}

#[test]
fn existing_repository_of_another_version_is_not_clobbered() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "linux-1.2.3.tar.xz", &good_entries());
    let dest = tmp.path().join("kernel");
    fetch_tarball(&tarball, &dest, None).unwrap();
    let err = fetch_tarball(&tarball, &dest, Some("1.2.4")).expect_err("must refuse");
    let text = format!("{err:#}").replace(&tmp.path().display().to_string(), "[TMP]");
    insta::assert_snapshot!(text);
    assert_eq!(git(&dest, &["tag"]).trim(), "v1.2.3");
}

#[test]
fn missing_tarball_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = fetch_tarball(
        &tmp.path().join("nope.tar.xz"),
        &tmp.path().join("k"),
        Some("1.0"),
    )
    .unwrap_err();
    let text = format!("{err:#}").replace(&tmp.path().display().to_string(), "[TMP]");
    insta::assert_snapshot!(text);
}

#[test]
fn bad_version_and_unknown_scheme_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let tarball = make_tarball(tmp.path(), "linux-1.2.3.tar.xz", &good_entries());
    let mut errors = Vec::new();
    for v in ["6.1.x", "6", "../6.1", "6.1.176-rc1", ""] {
        errors.push(format!(
            "{:#}",
            fetch_tarball(&tarball, &tmp.path().join("k"), Some(v)).unwrap_err()
        ));
    }
    for from in [
        "http://example.com/x.tar",
        "git:https://example.com/linux.git",
        "git:#v1",
        "tarball:",
        "Debian",
    ] {
        errors.push(format!("{:#}", from.parse::<Source>().unwrap_err()));
    }
    insta::assert_snapshot!(errors.join("\n"));
    assert!(!tmp.path().join("k").exists());
}

#[test]
fn sources_parse() {
    assert_eq!("debian".parse::<Source>().unwrap(), Source::Debian);
    assert_eq!(
        "git:https://git.kernel.org/a/linux.git#v6.1.176"
            .parse::<Source>()
            .unwrap(),
        Source::Git {
            url: "https://git.kernel.org/a/linux.git".into(),
            reference: "v6.1.176".into()
        }
    );
    assert_eq!(
        "tarball:/x/linux.tar.xz".parse::<Source>().unwrap(),
        Source::Tarball("/x/linux.tar.xz".into())
    );
}

const FAKE_DSC: &str = "-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA512

Format: 3.0 (quilt)
Source: linux
Version: 1.0-1
Checksums-Sha1:
 0000000000000000000000000000000000000000 5 linux_1.0.orig.tar.xz
Checksums-Sha256:
 {SUM} 5 linux_1.0.orig.tar.xz
 1111111111111111111111111111111111111111111111111111111111111111 9 linux_1.0-1.debian.tar.xz
Files:
 00000000000000000000000000000000 5 linux_1.0.orig.tar.xz

-----BEGIN PGP SIGNATURE-----
";

#[test]
fn dsc_checksum_is_verified() {
    let tmp = tempfile::tempdir().unwrap();
    let orig = tmp.path().join("linux_1.0.orig.tar.xz");
    fs::write(&orig, b"hello").unwrap();
    let dsc = tmp.path().join("linux_1.0-1.dsc");
    // sha256("hello")
    let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    fs::write(&dsc, FAKE_DSC.replace("{SUM}", good)).unwrap();
    debian::verify_against_dsc(&dsc, &orig, false).unwrap();

    fs::write(&dsc, FAKE_DSC.replace("{SUM}", &"ab".repeat(32))).unwrap();
    let err = debian::verify_against_dsc(&dsc, &orig, false).unwrap_err();
    assert!(err.downcast_ref::<debian::ChecksumMismatch>().is_some());
    insta::assert_snapshot!(format!("{err:#}"));

    let files = debian::dsc_sha256(&FAKE_DSC.replace("{SUM}", good));
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].name, "linux_1.0.orig.tar.xz");
    assert_eq!(files[0].size, 5);
}

#[test]
fn newest_debian_61_is_chosen() {
    let showsrc = "Package: linux\nVersion: 6.1.99-1\n\nPackage: linux\nVersion: 6.1.176-1\n\n\
                   Package: linux\nVersion: 6.1.38-4~deb12u1\n\nPackage: linux-signed\nVersion: 6.1.200-1\n\n\
                   Package: linux\nVersion: 6.12.9-1~bpo12+1\n";
    let versions = debian::parse_showsrc(showsrc);
    assert_eq!(
        versions,
        [
            "6.1.99-1",
            "6.1.176-1",
            "6.1.38-4~deb12u1",
            "6.12.9-1~bpo12+1"
        ]
    );
    assert_eq!(
        debian::newest_in_series(&versions, "6.1").unwrap(),
        "6.1.176-1"
    );
    assert_eq!(debian::upstream_of("1:6.1.176-1"), "6.1.176");
}

#[test]
fn git_source_clones_one_ref_shallow_and_tags_it() {
    let tmp = tempfile::tempdir().unwrap();
    let upstream = tmp.path().join("upstream");
    fs::create_dir_all(upstream.join("scripts")).unwrap();
    git(&upstream, &["init", "-q"]);
    fs::write(
        upstream.join("Makefile"),
        "VERSION = 1\nPATCHLEVEL = 2\nSUBLEVEL = 3\n",
    )
    .unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-q", "-m", "old"]);
    fs::write(upstream.join("scripts/run.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(
        upstream.join("scripts/run.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-q", "-m", "Linux 1.2.3"]);
    git(&upstream, &["branch", "stable"]);
    let want_tree = git(&upstream, &["rev-parse", "HEAD^{tree}"])
        .trim()
        .to_string();
    let url = format!("file://{}", upstream.display());

    // A branch: the version comes from the Makefile, the tag is created.
    let dest = tmp.path().join("clone");
    let req = FetchRequest {
        source: format!("git:{url}#stable").parse().unwrap(),
        version: None,
        dir: Some(dest.clone()),
        progress: false,
    };
    let fetched = tree::fetch(&req).unwrap();
    assert_eq!(fetched.version, "1.2.3");
    assert_eq!(fetched.tree.to_string(), want_tree);
    assert_eq!(
        tree::tag_tree(&dest, "1.2.3").unwrap().to_string(),
        want_tree
    );
    assert_eq!(
        git(&dest, &["rev-parse", "--is-shallow-repository"]).trim(),
        "true"
    );
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]).trim(), "1");
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
    let again = tree::fetch(&req).unwrap();
    assert!(again.reused);

    // A ref that does not exist: a clear error, nothing left.
    let dest2 = tmp.path().join("clone2");
    let err = tree::fetch(&FetchRequest {
        source: format!("git:{url}#v9.9.9").parse().unwrap(),
        version: None,
        dir: Some(dest2.clone()),
        progress: false,
    })
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("git clone of `v9.9.9`"),
        "{err:#}"
    );
    assert!(!dest2.exists());
}
