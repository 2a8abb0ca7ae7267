//! The vng command line and the guest script (insta snapshots).

use std::path::PathBuf;

use xtask::boot::{default_append, guest_script, vng_args, Accel, VngSpec};
use xtask::util::sh_quote;

fn spec(accel: Accel) -> VngSpec {
    VngSpec {
        image: PathBuf::from("/w/target/kbuild/linux-1234abcd/base+gmem/arch/x86/boot/bzImage"),
        accel,
        cpus: 2,
        memory: "2G".into(),
        rwdir: PathBuf::from("/w/target/results/20261125-170000-base+gmem-tcg"),
        exec: "sh /w/target/results/20261125-170000-base+gmem-tcg/guest.sh".into(),
        append: default_append(),
        numa: Vec::new(),
    }
}

fn render(accel: Accel) -> String {
    vng_args(&spec(accel))
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn vng_command_line_tcg() {
    insta::assert_snapshot!(render(Accel::Tcg));
}

#[test]
fn vng_command_line_kvm() {
    let kvm = render(Accel::Kvm);
    assert!(!kvm.contains("--disable-kvm"));
    assert!(!kvm.contains("-cpu max"));
    insta::assert_snapshot!(kvm);
}

#[test]
fn a_numa_guest_gets_one_socket_per_vcpu() {
    let numa = VngSpec {
        numa: vec!["1024M,cpus=0".into(), "1024M,cpus=1".into()],
        ..spec(Accel::Tcg)
    };
    let args: Vec<String> = vng_args(&numa)
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let cpus = args.iter().position(|a| a == "--cpus").unwrap();
    assert_eq!(args[cpus + 1], "2,sockets=2,cores=1,threads=1");
    assert!(render(Accel::Tcg).contains("--cpus\n2\n"));
}

#[test]
fn guest_script_quotes_arguments() {
    let s = guest_script(
        &PathBuf::from("/w/target/results/run 1"),
        &PathBuf::from("/w/target/debug/gmem-selftests"),
        &[
            "--filter".into(),
            "bind.it's".into(),
            "--timeout".into(),
            "30".into(),
        ],
    );
    insta::assert_snapshot!(s);
}

#[test]
fn sh_quote_cases() {
    assert_eq!(sh_quote("plain/path-1.2"), "plain/path-1.2");
    assert_eq!(sh_quote("a b"), "'a b'");
    assert_eq!(sh_quote("it's"), r"'it'\''s'");
    assert_eq!(sh_quote(""), "''");
    assert_eq!(sh_quote("$(reboot)"), "'$(reboot)'");
}
