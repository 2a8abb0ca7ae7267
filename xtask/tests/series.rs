//! Tests of `apply`, `series export` and `series format` on a fixture git
//! repository built in a temp dir: a few files shaped like kernel sources,
//! one commit tagged v6.1.176, and a three-patch series written by
//! `git format-patch` in a separate clone (so the tree does not already hold
//! the series' objects).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use xtask::series::apply::{apply_series, ApplyOptions};
use xtask::series::export::export;
use xtask::series::format::{format_series, FormatRequest};
use xtask::series::model::{resolve_series_dir, Series};

const MAKEFILE: &str = "# SPDX-License-Identifier: GPL-2.0\nVERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 176\nEXTRAVERSION =\nNAME = Curry Ramen\n\nobj-y += virt/\n";
const KVM_MAIN: &str = r#"// SPDX-License-Identifier: GPL-2.0-only
/*
 * Kernel-based Virtual Machine driver for Linux
 */

#include <linux/kvm_host.h>
#include <linux/module.h>

static int kvm_usage_count;

static long kvm_vm_ioctl_check_extension_generic(struct kvm *kvm, long arg)
{
	switch (arg) {
	case KVM_CAP_USER_MEMORY:
	case KVM_CAP_DESTROY_MEMORY_REGION_WORKS:
		return 1;
	default:
		break;
	}
	return 0;
}

static int kvm_vm_release(struct inode *inode, struct file *filp)
{
	struct kvm *kvm = filp->private_data;

	kvm_put_kvm(kvm);
	return 0;
}

int kvm_init(unsigned vcpu_size, unsigned vcpu_align, struct module *module)
{
	kvm_usage_count = 0;
	return 0;
}
EXPORT_SYMBOL_GPL(kvm_init);
"#;
const KVM_UAPI: &str = r#"/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
#ifndef __LINUX_KVM_H
#define __LINUX_KVM_H

#include <linux/types.h>

#define KVM_API_VERSION 12

#define KVM_CAP_IRQCHIP	  0
#define KVM_CAP_HLT	  1
#define KVM_CAP_USER_MEMORY 3
#define KVM_CAP_DESTROY_MEMORY_REGION_WORKS 21

#endif /* __LINUX_KVM_H */
"#;
const KVM_HOST: &str = "/* SPDX-License-Identifier: GPL-2.0-only */\n#ifndef __KVM_HOST_H\n#define __KVM_HOST_H\n\nstruct kvm {\n\tint users_count;\n};\n\n#endif\n";
const KCONFIG: &str = "# SPDX-License-Identifier: GPL-2.0\n# KVM common configuration items and defaults\n\nconfig HAVE_KVM\n\tbool\n";

/// `git` with no user/system config and a fixed identity and dates.
fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, args, &[])
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(dir).args(args);
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("LC_ALL", "C");
    for (k, v) in [
        ("GIT_AUTHOR_NAME", "Upstream Maintainer"),
        ("GIT_AUTHOR_EMAIL", "maint@kernel.example"),
        ("GIT_AUTHOR_DATE", "2026-11-01T10:00:00+00:00"),
        ("GIT_COMMITTER_NAME", "Upstream Maintainer"),
        ("GIT_COMMITTER_EMAIL", "maint@kernel.example"),
        ("GIT_COMMITTER_DATE", "2026-11-01T10:00:00+00:00"),
    ] {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Commit everything in `dir` as `author` at `date` (committer = author).
fn commit_as(dir: &Path, author: (&str, &str), date: &str, message: &str) {
    git(dir, &["add", "-A"]);
    git_env(
        dir,
        &["commit", "-q", "-m", message],
        &[
            ("GIT_AUTHOR_NAME", author.0),
            ("GIT_AUTHOR_EMAIL", author.1),
            ("GIT_AUTHOR_DATE", date),
            ("GIT_COMMITTER_NAME", author.0),
            ("GIT_COMMITTER_EMAIL", author.1),
            ("GIT_COMMITTER_DATE", date),
        ],
    );
}

struct Fixture {
    tmp: tempfile::TempDir,
    /// The kernel tree the series is applied to.
    tree: PathBuf,
    /// Clone where the series was written; its HEAD is the series tip.
    author: PathBuf,
    /// patches/ holding the series directory `guest_memfd`.
    patches: PathBuf,
    series_dir: PathBuf,
    base_tree: String,
}

const JOERG: (&str, &str) = ("J\u{f6}rg R\u{f6}del", "joro@example.org");
const SEAN: (&str, &str) = ("Sean Developer", "sean@example.org");

impl Fixture {
    /// A tree at v6.1.176 and a three-patch series against it. With
    /// `upstream_first`, the tag's history already holds the first patch as
    /// an upstream commit (different author and date, same change).
    fn new(upstream_first: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let tree = tmp.path().join("linux");
        std::fs::create_dir_all(&tree).unwrap();
        git(&tree, &["init", "-q", "-b", "master"]);
        write(&tree.join("Makefile"), MAKEFILE);
        write(&tree.join("virt/kvm/kvm_main.c"), KVM_MAIN);
        write(&tree.join("virt/kvm/Kconfig"), KCONFIG);
        write(&tree.join("include/uapi/linux/kvm.h"), KVM_UAPI);
        write(&tree.join("include/linux/kvm_host.h"), KVM_HOST);
        commit_as(
            &tree,
            ("Upstream Maintainer", "maint@kernel.example"),
            "2026-11-01T10:00:00+00:00",
            "Linux 6.1.176",
        );
        let author = tmp.path().join("author");
        git(
            tmp.path(),
            &["clone", "-q", tree.to_str().unwrap(), "author"],
        );
        let base = git(&author, &["rev-parse", "HEAD"]);

        // 1: uAPI numbers, by an author whose name needs RFC 2047.
        let uapi = KVM_UAPI.replace(
            "#define KVM_CAP_DESTROY_MEMORY_REGION_WORKS 21\n",
            "#define KVM_CAP_DESTROY_MEMORY_REGION_WORKS 21\n#define KVM_CAP_USER_MEMORY2 231\n#define KVM_CAP_GUEST_MEMFD 234\n",
        );
        write(&author.join("include/uapi/linux/kvm.h"), &uapi);
        commit_as(
            &author,
            JOERG,
            "2026-11-20T09:15:00+02:00",
            "KVM: Add the guest_memfd capability numbers\n\nReserve the upstream numbers so userspace built against 6.8 headers\nprobes the same values.\n\nSigned-off-by: J\u{f6}rg R\u{f6}del <joro@example.org>",
        );
        // 2: a change to kvm_main.c.
        let main = KVM_MAIN.replace(
            "\tcase KVM_CAP_DESTROY_MEMORY_REGION_WORKS:\n",
            "\tcase KVM_CAP_DESTROY_MEMORY_REGION_WORKS:\n\tcase KVM_CAP_USER_MEMORY2:\n",
        );
        write(&author.join("virt/kvm/kvm_main.c"), &main);
        commit_as(
            &author,
            SEAN,
            "2026-11-21T11:00:00-08:00",
            "KVM: Report KVM_CAP_USER_MEMORY2\n\nSigned-off-by: Sean Developer <sean@example.org>",
        );
        // 3: a new file plus Kconfig.
        write(&author.join("virt/kvm/guest_memfd.c"), "// SPDX-License-Identifier: GPL-2.0\n#include <linux/kvm_host.h>\n\nint kvm_gmem_create(struct kvm *kvm, unsigned long size)\n{\n\treturn -ENOSYS;\n}\n");
        write(
            &author.join("virt/kvm/Kconfig"),
            &format!("{KCONFIG}\nconfig KVM_PRIVATE_MEM\n\tbool\n"),
        );
        commit_as(
            &author,
            SEAN,
            "2026-11-21T11:30:00-08:00",
            "KVM: Add a guest_memfd stub\n\nSigned-off-by: Sean Developer <sean@example.org>",
        );
        let patches = tmp.path().join("patches");
        let series_dir = patches.join("guest_memfd");
        std::fs::create_dir_all(&series_dir).unwrap();
        git(
            &author,
            &[
                "format-patch",
                "-q",
                "--abbrev=12",
                "-o",
                series_dir.to_str().unwrap(),
                &format!("{base}..HEAD"),
            ],
        );

        if upstream_first {
            // The same change as patch 1 landed upstream before the release tag.
            write(&tree.join("include/uapi/linux/kvm.h"), &uapi);
            commit_as(
                &tree,
                ("Stable Backporter", "stable@kernel.example"),
                "2026-11-23T08:00:00+00:00",
                "KVM: Add the guest_memfd capability numbers\n\nUpstream commit 0123456789ab.",
            );
        }
        git(&tree, &["tag", "v6.1.176"]);
        let base_tree = git(&tree, &["rev-parse", "HEAD^{tree}"]);
        write(
            &series_dir.join("series.toml"),
            &format!(
                "name = \"guest_memfd\"\nversion = 1\nchange-id = \"20261125-guest-memfd-6-1-3f9c2a\"\n\
                 subject-prefix = \"RFC PATCH\"\nto = [\"kvm@vger.kernel.org\"]\ncc = [\"linux-kernel@vger.kernel.org\"]\n\n\
                 [base]\nversion = \"6.1.176\"\ntrees = {{ debian-orig = \"{base_tree}\" }}\n\n\
                 [[changelog]]\nversion = 1\nchanges = [\"Initial backport of guest_memfd\"]\n"
            ),
        );
        Fixture {
            tmp,
            tree,
            author,
            patches,
            series_dir,
            base_tree,
        }
    }

    fn series(&self) -> Series {
        Series::load(&self.series_dir).unwrap()
    }

    fn patch(&self, n: usize) -> PathBuf {
        self.series().patches[n - 1].clone()
    }

    fn apply(&self) -> anyhow::Result<xtask::series::Applied> {
        let series = Series::load(&self.series_dir)?;
        apply_series(&series, &self.tree, &[], None, &ApplyOptions::default())
    }

    /// Error text with the temp dir replaced by [TMP].
    fn redact(&self, text: &str) -> String {
        text.replace(self.tmp.path().to_str().unwrap(), "[TMP]")
    }

    fn err(&self, result: anyhow::Result<impl std::fmt::Debug>) -> String {
        match result {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(err) => self.redact(&format!("{err:#}")),
        }
    }

    /// HEAD, branches, index bytes and every work-tree file: what "the
    /// user's tree is untouched" means.
    fn tree_state(&self) -> TreeState {
        let mut files = BTreeMap::new();
        for entry in walkdir::WalkDir::new(&self.tree)
            .into_iter()
            .filter_entry(|e| e.file_name() != ".git")
        {
            let entry = entry.unwrap();
            if entry.file_type().is_file() {
                let rel = entry
                    .path()
                    .strip_prefix(&self.tree)
                    .unwrap()
                    .display()
                    .to_string();
                files.insert(rel, std::fs::read(entry.path()).unwrap());
            }
        }
        TreeState {
            head: git(&self.tree, &["symbolic-ref", "HEAD"]),
            head_commit: git(&self.tree, &["rev-parse", "HEAD"]),
            refs: git(
                &self.tree,
                &["for-each-ref", "--format=%(refname) %(objectname)"],
            ),
            index: std::fs::read(self.tree.join(".git/index")).unwrap(),
            files,
        }
    }

    fn dir_bytes(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            out.insert(
                entry.file_name().to_string_lossy().into_owned(),
                std::fs::read(entry.path()).unwrap(),
            );
        }
        out
    }
}

#[derive(Debug, PartialEq, Eq)]
struct TreeState {
    head: String,
    head_commit: String,
    refs: String,
    index: Vec<u8>,
    files: BTreeMap<String, Vec<u8>>,
}

fn log(tree: &Path, range: &str) -> String {
    git(
        tree,
        &[
            "log",
            "--reverse",
            "--format=%an <%ae> | %ad | %cn | %cd%n%B---",
            "--date=raw",
            range,
        ],
    )
}

// ---------------------------------------------------------------- apply

#[test]
fn apply_on_the_right_base_creates_the_branch_and_leaves_the_checkout() {
    let fx = Fixture::new(false);
    let before = fx.tree_state();
    let applied = fx.apply().unwrap();
    assert_eq!(applied.branch, "guest_memfd/v1");
    assert_eq!(applied.base, before.head_commit);
    assert!(applied.commits.iter().all(|c| c.commit.is_some()));
    // The checkout is untouched: same HEAD, index and files; one new branch.
    let after = fx.tree_state();
    assert_eq!(after.head, before.head);
    assert_eq!(after.index, before.index);
    assert_eq!(after.files, before.files);
    assert_ne!(after.refs, before.refs);
    // Same result as git am in the author clone: identical trees.
    assert_eq!(
        git(&fx.tree, &["rev-parse", "guest_memfd/v1^{tree}"]),
        git(&fx.author, &["rev-parse", "HEAD^{tree}"])
    );
    insta::assert_snapshot!(xtask::series::applied_table(&applied));
    insta::assert_snapshot!(log(&fx.tree, "v6.1.176..guest_memfd/v1"));
}

#[test]
fn apply_through_the_public_api_with_an_extra_patch() {
    let fx = Fixture::new(false);
    let mutant = fx.tmp.path().join("mutants/skip_invalidate.patch");
    let diff = "diff --git a/virt/kvm/guest_memfd.c b/virt/kvm/guest_memfd.c\nindex 000000000000..111111111111 100644\n--- a/virt/kvm/guest_memfd.c\n+++ b/virt/kvm/guest_memfd.c\n@@ -4,4 +4,4 @@\n int kvm_gmem_create(struct kvm *kvm, unsigned long size)\n {\n-\treturn -ENOSYS;\n+\treturn 0;\n }\n";
    write(&mutant, diff);
    let applied = xtask::series::apply(&xtask::series::ApplyRequest {
        series: fx.series_dir.display().to_string(),
        tree: fx.tree.clone(),
        extra: vec![mutant],
        branch: Some("mutant/skip_invalidate".into()),
    })
    .unwrap();
    assert_eq!(applied.branch, "mutant/skip_invalidate");
    assert_eq!(applied.commits.len(), 4);
    assert_eq!(applied.commits[3].subject, "mutant: skip_invalidate");
    let content = git(
        &fx.tree,
        &["show", "mutant/skip_invalidate:virt/kvm/guest_memfd.c"],
    );
    assert!(content.contains("return 0;"), "{content}");
}

#[test]
fn apply_refuses_a_wrong_base_naming_expected_and_found() {
    let fx = Fixture::new(false);
    let toml = std::fs::read_to_string(fx.series_dir.join("series.toml")).unwrap();
    std::fs::write(
        fx.series_dir.join("series.toml"),
        toml.replace(&fx.base_tree, "0123456789abcdef0123456789abcdef01234567"),
    )
    .unwrap();
    let before = fx.tree_state();
    let err = fx.err(fx.apply());
    assert_eq!(fx.tree_state(), before);
    insta::assert_snapshot!(err
        .replace(&fx.base_tree, "[FOUND-TREE]")
        .replace(&before.head_commit[..12], "[BASE]"));
}

#[test]
fn apply_uses_head_when_the_version_tag_is_missing() {
    let fx = Fixture::new(false);
    git(&fx.tree, &["tag", "-d", "v6.1.176"]);
    fx.apply().unwrap();
    // And refuses when HEAD moved away from the base.
    git(&fx.tree, &["branch", "-D", "guest_memfd/v1"]);
    write(&fx.tree.join("Makefile"), &MAKEFILE.replace("176", "177"));
    commit_as(&fx.tree, SEAN, "2026-11-24T10:00:00+00:00", "Linux 6.1.177");
    let err = fx.err(fx.apply());
    assert!(
        err.contains("wrong base") && err.contains("but HEAD (commit"),
        "{err}"
    );
}

#[test]
fn apply_refuses_a_dirty_tree() {
    let fx = Fixture::new(false);
    write(
        &fx.tree.join("virt/kvm/kvm_main.c"),
        &format!("{KVM_MAIN}/* local hack */\n"),
    );
    let before = fx.tree_state();
    let err = fx.err(fx.apply());
    assert_eq!(fx.tree_state(), before);
    insta::assert_snapshot!("dirty_worktree", err);
    // A staged change is dirty too.
    git(&fx.tree, &["add", "virt/kvm/kvm_main.c"]);
    let err = fx.err(fx.apply());
    assert!(
        err.contains("uncommitted changes (virt/kvm/kvm_main.c)"),
        "{err}"
    );
}

#[test]
fn apply_fails_atomically_on_a_conflicting_patch() {
    let fx = Fixture::new(false);
    // The tree moved on in a way that conflicts with patch 2's context.
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap();
    std::fs::write(
        &p2,
        text.replace(
            " \tcase KVM_CAP_USER_MEMORY:\n",
            " \tcase KVM_CAP_USER_MEMORY_RENAMED:\n",
        ),
    )
    .unwrap();
    let before = fx.tree_state();
    let err = fx.err(fx.apply());
    let after = fx.tree_state();
    assert_eq!(after.head, before.head, "HEAD changed");
    assert_eq!(after.refs, before.refs, "a branch or ref was left behind");
    assert_eq!(after.index, before.index, "the index changed");
    assert_eq!(after.files, before.files, "the work tree changed");
    assert!(
        err.contains("0002-KVM-Report-KVM_CAP_USER_MEMORY2.patch"),
        "{err}"
    );
    assert!(err.contains("virt/kvm/kvm_main.c"), "{err}");
    insta::assert_snapshot!(err);
}

#[test]
fn apply_skips_a_patch_already_in_the_base() {
    let fx = Fixture::new(true);
    let applied = fx.apply().unwrap();
    assert_eq!(
        applied.commits[0].commit, None,
        "patch 1 is upstream already"
    );
    assert!(applied.commits[1].commit.is_some() && applied.commits[2].commit.is_some());
    insta::assert_snapshot!(xtask::series::applied_table(&applied));
}

#[test]
fn apply_refuses_an_existing_branch_unless_forced() {
    let fx = Fixture::new(false);
    fx.apply().unwrap();
    let err = fx.err(fx.apply());
    insta::assert_snapshot!(err);
    let series = fx.series();
    let opts = ApplyOptions {
        force: true,
        ..Default::default()
    };
    apply_series(&series, &fx.tree, &[], None, &opts).unwrap();
}

#[test]
fn apply_with_checkout_switches_to_the_new_branch() {
    let fx = Fixture::new(false);
    let opts = ApplyOptions {
        checkout: true,
        ..Default::default()
    };
    apply_series(&fx.series(), &fx.tree, &[], None, &opts).unwrap();
    assert_eq!(
        git(&fx.tree, &["symbolic-ref", "HEAD"]),
        "refs/heads/guest_memfd/v1"
    );
    assert!(fx.tree.join("virt/kvm/guest_memfd.c").is_file());
    assert_eq!(git(&fx.tree, &["status", "--porcelain"]), "");
}

// ---------------------------------------------------------------- export

#[test]
fn apply_then_export_reproduces_the_files_byte_for_byte() {
    let fx = Fixture::new(false);
    let before = Fixture::dir_bytes(&fx.series_dir);
    fx.apply().unwrap();
    let report = export(&fx.series_dir, &fx.tree, None).unwrap();
    let after = Fixture::dir_bytes(&fx.series_dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &before {
        assert!(after[name] == *bytes, "{name} differs after the round trip");
    }
    insta::assert_snapshot!(fx.redact(&report.to_string()));
    // No temporary directory is left next to the series.
    let leftovers: Vec<_> = std::fs::read_dir(&fx.patches)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, vec![std::ffi::OsString::from("guest_memfd")]);
}

#[test]
fn export_of_a_changed_branch_rewrites_only_what_changed() {
    let fx = Fixture::new(false);
    fx.apply().unwrap();
    // Amend the last commit on the branch: reword it.
    git(&fx.tree, &["switch", "-q", "guest_memfd/v1"]);
    git_env(
        &fx.tree,
        &[
            "commit",
            "-q",
            "--amend",
            "-m",
            "KVM: Add a guest_memfd stub file\n\nSigned-off-by: Sean Developer <sean@example.org>",
        ],
        &[
            ("GIT_AUTHOR_NAME", SEAN.0),
            ("GIT_AUTHOR_EMAIL", SEAN.1),
            ("GIT_AUTHOR_DATE", "2026-11-21T11:30:00-08:00"),
        ],
    );
    let read_dir = |dir: &std::path::Path| -> std::collections::BTreeMap<String, Vec<u8>> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect()
    };
    let before = read_dir(&fx.series_dir);
    let report = export(&fx.series_dir, &fx.tree, Some("v6.1.176..guest_memfd/v1")).unwrap();
    insta::assert_snapshot!(fx.redact(&report.to_string()));
    assert!(
        fx.series_dir.join("series.toml").is_file(),
        "series.toml must survive an export"
    );
    // What the report calls unchanged is byte for byte what was there.
    let after = read_dir(&fx.series_dir);
    for name in [
        "series.toml",
        "0001-KVM-Add-the-guest_memfd-capability-numbers.patch",
        "0002-KVM-Report-KVM_CAP_USER_MEMORY2.patch",
    ] {
        assert_eq!(after.get(name), before.get(name), "{name} was rewritten");
    }
    assert!(!after.contains_key("0003-KVM-Add-a-guest_memfd-stub.patch"));
    let new =
        String::from_utf8(after["0003-KVM-Add-a-guest_memfd-stub-file.patch"].clone()).unwrap();
    assert!(
        new.contains("Subject: [PATCH 3/3] KVM: Add a guest_memfd stub file\n"),
        "{new}"
    );
}

#[test]
fn export_refuses_a_deletion_and_leaves_the_series_untouched() {
    let fx = Fixture::new(false);
    fx.apply().unwrap();
    git(&fx.tree, &["switch", "-q", "guest_memfd/v1"]);
    git(&fx.tree, &["rm", "-q", "include/linux/kvm_host.h"]);
    commit_as(
        &fx.tree,
        SEAN,
        "2026-11-22T10:00:00+00:00",
        "KVM: Drop kvm_host.h",
    );
    let before = Fixture::dir_bytes(&fx.series_dir);
    let err = fx.err(export(
        &fx.series_dir,
        &fx.tree,
        Some("v6.1.176..guest_memfd/v1"),
    ));
    assert_eq!(Fixture::dir_bytes(&fx.series_dir), before);
    let leftovers: Vec<_> = std::fs::read_dir(&fx.patches)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "temporary files left: {leftovers:?}");
    insta::assert_snapshot!(err);
}

// ---------------------------------------------------------------- format

/// A stand-in for scripts/checkpatch.pl: one WARNING per added line with
/// "ENOSYS", one ERROR per added line with "TODO", in the --terse format.
const FAKE_CHECKPATCH: &str = r#"#!/usr/bin/perl
my $file = $ARGV[-1];
open(my $fh, '<', $file) or die "cannot open $file";
my $n = 0; my $bad = 0;
while (my $line = <$fh>) {
    $n++;
    if ($line =~ /^\+.*ENOSYS/) { print "virt/kvm/guest_memfd.c:$n: WARNING: ENOSYS means 'invalid syscall nr' and nothing else\n"; $bad = 1; }
    if ($line =~ /^\+.*TODO/) { print "virt/kvm/guest_memfd.c:$n: ERROR: TODO left in\n"; $bad = 1; }
}
exit $bad;
"#;

/// Names people by the files a patch touches, like the real script, and
/// also addresses the mails already carry (in other case) to be skipped.
const FAKE_GET_MAINTAINER: &str = r#"#!/usr/bin/perl
my $file = $ARGV[-1];
open(my $fh, '<', $file) or die "cannot open $file";
my %files;
while (my $line = <$fh>) { $files{$1} = 1 if $line =~ m{^\+\+\+ b/(\S+)}; }
print "Paolo Bonzini <PBONZINI\@example.org>\n";
print "Sean C. Developer <sean.gmem\@example.org>\n" if $files{'virt/kvm/guest_memfd.c'};
print "J\x{c3}\x{b6}rg R\x{c3}\x{b6}del <joro.uapi\@example.org>\n" if grep { m{^include/uapi/} } keys %files;
print "kvm\@vger.kernel.org\n";
print "linux-kernel\@vger.kernel.org\n";
"#;

fn redact_mail(text: &str, fx: &Fixture) -> String {
    let version = git(&fx.tree, &["version"])
        .trim_start_matches("git version ")
        .to_string();
    fx.redact(text)
        .lines()
        .map(|l| if l == version { "[GIT-VERSION]" } else { l })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The fixture series as v2 (patch 2 reworded, a changelog entry, a cover
/// letter template) with v1 applied as a branch, formatted into
/// `outgoing/`; returns the fixture, the output directory and the report.
fn format_v2(auto_cc: bool) -> (Fixture, PathBuf, xtask::series::format::FormatReport) {
    let fx = Fixture::new(false);
    write(&fx.tree.join("scripts/checkpatch.pl"), FAKE_CHECKPATCH);
    write(
        &fx.tree.join("scripts/get_maintainer.pl"),
        FAKE_GET_MAINTAINER,
    );
    commit_as(
        &fx.tree,
        ("Upstream Maintainer", "maint@kernel.example"),
        "2026-11-01T10:00:00+00:00",
        "scripts: checkpatch",
    );
    git(&fx.tree, &["tag", "-f", "v6.1.176"]);
    let base_tree = git(&fx.tree, &["rev-parse", "HEAD^{tree}"]);
    // v1 exists as a branch.
    let toml = std::fs::read_to_string(fx.series_dir.join("series.toml"))
        .unwrap()
        .replace(&fx.base_tree, &base_tree);
    std::fs::write(fx.series_dir.join("series.toml"), &toml).unwrap();
    fx.apply().unwrap();
    // v2: reworded patch 2, a changelog entry and a cover letter template.
    let toml = toml.replace("version = 1\nchange-id", "version = 2\nchange-id")
        + "\n[[changelog]]\nversion = 2\nchanges = [\"Report KVM_CAP_USER_MEMORY2 only where it works\", \"Rebase on 6.1.176\"]\n";
    std::fs::write(fx.series_dir.join("series.toml"), toml).unwrap();
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap();
    std::fs::write(
        &p2,
        text.replace(
            "Subject: [PATCH 2/3] KVM: Report KVM_CAP_USER_MEMORY2\n",
            "Subject: [PATCH 2/3] KVM: Report KVM_CAP_USER_MEMORY2 to userspace\n",
        ),
    )
    .unwrap();
    write(
        &fx.series_dir.join("0000-cover-letter.patch"),
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\nFrom: Sean Developer <sean@example.org>\nDate: Fri, 21 Nov 2026 11:30:00 -0800\nSubject: [PATCH 0/3] KVM: guest_memfd for 6.1 LTS\n\nThis backports guest_memfd (the 6.8 uAPI) to Linux 6.1 LTS.\n\nSean Developer (2):\n  x\n",
    );
    let out = fx.tmp.path().join("outgoing");
    let req = FormatRequest {
        reroll: None,
        to: vec!["Paolo Bonzini <pbonzini@example.org>".into()],
        cc: vec![],
        out: Some(out.clone()),
        compare_to: None,
        checkpatch: true,
        from: Some("Sean Developer <sean@example.org>".into()),
        results_dir: None,
        auto_cc,
    };
    let report = format_series(&fx.series(), &fx.tree, &req).unwrap();
    (fx, out, report)
}

#[test]
fn format_writes_a_v2_series_with_cover_letter_and_range_diff() {
    let (fx, out, report) = format_v2(false);
    let names: Vec<String> = Fixture::dir_bytes(&out).into_keys().collect();
    assert_eq!(names.len(), 4, "{names:?}");
    let cover =
        String::from_utf8(std::fs::read(out.join("v2-0000-cover-letter.patch")).unwrap()).unwrap();
    assert!(cover.contains("Range-diff against v1:"), "{cover}");
    assert!(cover.contains(&format!(
        "base-commit: {}\nchange-id: 20261125-guest-memfd-6-1-3f9c2a\n",
        git(&fx.tree, &["rev-parse", "v6.1.176"])
    )));
    // Headers and the cover letter up to the range-diff (its exact layout
    // belongs to git); dates are redacted.
    let head: String = cover
        .split("Range-diff against v1:")
        .next()
        .unwrap()
        .to_string();
    let redact_date = |t: &str| {
        t.lines()
            .map(|l| {
                if l.starts_with("Date: ") {
                    "Date: [DATE]"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    insta::assert_snapshot!(
        "format_v2_cover_letter",
        redact_date(&redact_mail(&head, &fx))
    );
    let subjects: Vec<String> = Fixture::dir_bytes(&out)
        .into_iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8(bytes).unwrap();
            let headers: Vec<&str> = text
                .lines()
                .take_while(|l| !l.is_empty())
                .filter(|l| {
                    l.starts_with("Subject:")
                        || l.starts_with("To:")
                        || l.starts_with("Cc:")
                        || l.starts_with(' ')
                })
                .collect();
            format!("{name}\n{}", headers.join("\n"))
        })
        .collect();
    insta::assert_snapshot!("format_v2_subjects", subjects.join("\n\n"));
    insta::assert_snapshot!("format_v2_report", redact_mail(&report.to_string(), &fx));
}

/// The To/Cc headers of every mail in `out`, unfolded one address a line.
fn recipients(out: &Path) -> String {
    Fixture::dir_bytes(out)
        .into_iter()
        .map(|(name, bytes)| {
            let text = String::from_utf8(bytes).unwrap();
            let head = text.split("\n\n").next().unwrap().to_string();
            let mut lines = Vec::new();
            let mut keep = false;
            for line in head.lines() {
                if line.starts_with("To:") || line.starts_with("Cc:") {
                    keep = true;
                } else if !line.starts_with([' ', '\t']) {
                    keep = false;
                }
                if keep {
                    lines.push(line.to_string());
                }
            }
            format!("{name}\n{}", lines.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn format_auto_cc_adds_whom_get_maintainer_names_once() {
    let (fx, out, report) = format_v2(true);
    insta::assert_snapshot!("format_v2_auto_cc_recipients", recipients(&out));
    let text = redact_mail(&report.to_string(), &fx);
    let section: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("auto-cc"))
        .take(5)
        .collect();
    insta::assert_snapshot!("format_v2_auto_cc_report", section.join("\n"));
}

#[test]
fn format_auto_cc_without_the_script_is_a_clear_error_and_writes_nothing() {
    let fx = Fixture::new(false);
    let out = fx.tmp.path().join("v1");
    let req = FormatRequest {
        out: Some(out.clone()),
        auto_cc: true,
        ..Default::default()
    };
    let err = format!(
        "{:#}",
        format_series(&fx.series(), &fx.tree, &req).unwrap_err()
    );
    assert!(
        err.contains("--auto-cc needs") && err.contains("scripts/get_maintainer.pl"),
        "{err}"
    );
    assert!(!out.exists(), "{} was written", out.display());
}

/// What `series format` writes must go through `git send-email` as is.
/// Ignored by default because Debian ships send-email separately
/// (git-email); `.ci/run` runs it:
/// `cargo test -p xtask --test series -- --ignored git_send_email`.
#[test]
#[ignore = "needs git send-email"]
fn formatted_series_passes_git_send_email_dry_run() {
    let (fx, out, _) = format_v2(true);
    let output = Command::new("git")
        .current_dir(&fx.tree)
        .args([
            "send-email",
            "--dry-run",
            "--confirm=never",
            "--from=Sean Developer <sean@example.org>",
            // Never used by --dry-run; set so no local MTA is looked for.
            "--smtp-server=/bin/false",
        ])
        .arg(&out)
        .output()
        .expect("running git send-email");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "git send-email --dry-run failed:\n{stdout}\n{stderr}"
    );
    assert_eq!(
        stdout.matches("Result: OK").count(),
        4,
        "{stdout}\n{stderr}"
    );
    // Threaded: the three patches reply to the cover letter.
    let cover_id = stdout
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .expect("a Message-ID for the cover letter");
    assert_eq!(
        stdout.matches(&format!("In-Reply-To: {cover_id}")).count(),
        3,
        "{stdout}"
    );
    for k in 0..=3 {
        assert!(
            stdout.contains(&format!("Subject: [RFC PATCH v2 {k}/3] ")),
            "no [RFC PATCH v2 {k}/3] subject:\n{stdout}"
        );
    }
    // Every mail goes to the list and to the --to address.
    let to_both = stdout
        .lines()
        .filter(|l| {
            l.starts_with("Sendmail: ")
                && l.contains(" kvm@vger.kernel.org ")
                && l.contains(" pbonzini@example.org ")
        })
        .count();
    assert_eq!(to_both, 4, "{stdout}");
    // The --auto-cc additions are read by send-email too: the cover letter
    // and the patch that touches each path.
    for who in ["sean.gmem@example.org", "joro.uapi@example.org"] {
        let mails = stdout
            .lines()
            .filter(|l| l.starts_with("Sendmail: ") && l.contains(&format!(" {who}")))
            .count();
        assert_eq!(mails, 2, "{who} in Sendmail lines:\n{stdout}");
    }
}

#[test]
fn format_without_checkpatch_script_reports_a_skip() {
    let fx = Fixture::new(false);
    let out = fx.tmp.path().join("v1");
    let req = FormatRequest {
        out: Some(out.clone()),
        checkpatch: true,
        ..Default::default()
    };
    let report = format_series(&fx.series(), &fx.tree, &req).unwrap();
    let text = report.to_string();
    assert!(
        text.contains("checkpatch: SKIP:") && text.contains("scripts/checkpatch.pl not found"),
        "{text}"
    );
    let names: Vec<String> = Fixture::dir_bytes(&out).into_keys().collect();
    insta::assert_snapshot!(names.join("\n"));
    let patch1 = String::from_utf8(
        std::fs::read(out.join("0001-KVM-Add-the-guest_memfd-capability-numbers.patch")).unwrap(),
    )
    .unwrap();
    assert!(
        patch1.contains("Subject: [RFC PATCH 1/3] KVM: Add the guest_memfd capability numbers\n"),
        "{patch1}"
    );
    assert!(
        patch1.contains("From: =?UTF-8?q?J=C3=B6rg=20R=C3=B6del?= <joro@example.org>\n"),
        "{patch1}"
    );
}

// ---------------------------------------------------------------- bad input

/// Apply must fail with the given message and leave the tree untouched.
fn assert_refused(fx: &Fixture) -> String {
    let before = fx.tree_state();
    let err = match Series::load(&fx.series_dir) {
        Ok(series) => fx.err(apply_series(
            &series,
            &fx.tree,
            &[],
            None,
            &ApplyOptions::default(),
        )),
        Err(err) => fx.redact(&format!("{err:#}")),
    };
    assert_eq!(fx.tree_state(), before, "the tree changed after: {err}");
    err
}

#[test]
fn bad_input_non_patch_file_in_the_series_dir() {
    let fx = Fixture::new(false);
    write(&fx.series_dir.join("NOTES.txt"), "remember to rebase\n");
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_gap_in_the_numbering() {
    let fx = Fixture::new(false);
    let p2 = fx.patch(2);
    std::fs::rename(&p2, fx.series_dir.join("0004-moved.patch")).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_truncated_patch() {
    let fx = Fixture::new(false);
    let p2 = fx.patch(2);
    let text = std::fs::read_to_string(&p2).unwrap();
    let cut = text.find("+\tcase KVM_CAP_USER_MEMORY2:").unwrap();
    std::fs::write(&p2, &text[..cut]).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_patch_cut_before_the_diff() {
    let fx = Fixture::new(false);
    let p1 = fx.patch(1);
    let text = std::fs::read_to_string(&p1).unwrap();
    let cut = text.find("diff --git").unwrap();
    std::fs::write(&p1, &text[..cut]).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_crlf_line_endings() {
    let fx = Fixture::new(false);
    let p1 = fx.patch(1);
    let text = std::fs::read_to_string(&p1).unwrap();
    std::fs::write(&p1, text.replace('\n', "\r\n")).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

/// Add a fourth patch made by `git format-patch` from a commit in the author clone.
fn add_patch_from(fx: &Fixture, change: impl FnOnce(&Path), message: &str, extra: &[&str]) {
    change(&fx.author);
    commit_as(&fx.author, SEAN, "2026-11-22T12:00:00+00:00", message);
    let mut args = vec![
        "format-patch",
        "-q",
        "--abbrev=12",
        "--start-number=4",
        "-o",
    ];
    let dir = fx.series_dir.to_str().unwrap().to_string();
    args.push(&dir);
    args.extend_from_slice(extra);
    args.push("-1");
    git(&fx.author, &args);
}

#[test]
fn bad_input_binary_diff() {
    let fx = Fixture::new(false);
    add_patch_from(
        &fx,
        |dir| std::fs::write(dir.join("virt/kvm/firmware.bin"), [0u8, 1, 2, 255, 0, 7]).unwrap(),
        "KVM: Add a firmware blob",
        &["--binary"],
    );
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_rename() {
    let fx = Fixture::new(false);
    add_patch_from(
        &fx,
        |dir| git(dir, &["mv", "virt/kvm/guest_memfd.c", "virt/kvm/gmem.c"]).truncate(0),
        "KVM: Rename guest_memfd.c",
        &["-M"],
    );
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_deletion() {
    let fx = Fixture::new(false);
    add_patch_from(
        &fx,
        |dir| git(dir, &["rm", "-q", "include/linux/kvm_host.h"]).truncate(0),
        "KVM: Remove kvm_host.h",
        &[],
    );
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_missing_series_toml() {
    let fx = Fixture::new(false);
    std::fs::remove_file(fx.series_dir.join("series.toml")).unwrap();
    insta::assert_snapshot!(assert_refused(&fx));
}

#[test]
fn bad_input_malformed_series_toml() {
    let fx = Fixture::new(false);
    let path = fx.series_dir.join("series.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("version = 1\nchange-id", "version = \"one\nchange-id"),
    )
    .unwrap();
    insta::assert_snapshot!("malformed_syntax", assert_refused(&fx));
    std::fs::write(
        &path,
        text.replace("version = 1\nchange-id", "version = 1\nchangeid"),
    )
    .unwrap();
    insta::assert_snapshot!("malformed_unknown_field", assert_refused(&fx));
    std::fs::write(
        &path,
        text.replace("name = \"guest_memfd\"", "name = \"gmem\""),
    )
    .unwrap();
    insta::assert_snapshot!("malformed_name_mismatch", assert_refused(&fx));
}

#[test]
fn bad_input_unknown_series_name_lists_the_known_ones() {
    let fx = Fixture::new(false);
    std::fs::create_dir_all(fx.patches.join("mutants")).unwrap();
    let err = fx.err(resolve_series_dir("guest_memfd_v2", &fx.patches));
    insta::assert_snapshot!(err);
}

#[test]
fn bad_input_tree_is_not_a_git_repository() {
    let fx = Fixture::new(false);
    let plain = fx.tmp.path().join("plain");
    std::fs::create_dir_all(&plain).unwrap();
    let err = fx.err(apply_series(
        &fx.series(),
        &plain,
        &[],
        None,
        &ApplyOptions::default(),
    ));
    insta::assert_snapshot!("not_a_repo", err);
    let err = fx.err(apply_series(
        &fx.series(),
        &fx.tmp.path().join("nowhere"),
        &[],
        None,
        &ApplyOptions::default(),
    ));
    insta::assert_snapshot!("missing_tree", err);
}

#[test]
fn bad_input_mail_without_headers() {
    let fx = Fixture::new(false);
    write(
        &fx.series_dir.join("0004-notes.patch"),
        "Just some notes, not a patch.\n",
    );
    insta::assert_snapshot!(assert_refused(&fx));
}
