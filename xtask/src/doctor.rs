//! `cargo xtask doctor`: check every host tool and library the pipeline
//! needs, and /dev/kvm. With `--install` (as root) install what is missing
//! with apt-get and pip; otherwise print the exact commands.
//!
//! The requirement table is data (`REQUIREMENTS`); the checks only look on
//! `PATH` and ask the compiler for headers, so pointing `PATH` elsewhere is
//! enough to test them.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Install what is missing (apt-get, pip); needs root.
    #[arg(long)]
    pub install: bool,
}

/// Which part of the pipeline needs a requirement. `cargo xtask test --host`
/// needs only the `Host` ones; the boot lane needs everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    /// Fetching and applying the series, formatting it.
    Tree,
    /// Building a kernel.
    Build,
    /// Booting it under virtme-ng.
    Boot,
}

#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// An executable found on PATH.
    Program(&'static str),
    /// A C header the compiler can include.
    Header(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub enum Installer {
    Apt(&'static str),
    Pip(&'static str),
}

#[derive(Debug, Clone, Copy)]
pub struct Requirement {
    pub what: &'static str,
    pub probe: Probe,
    pub install: Installer,
    pub stage: Stage,
    /// Optional requirements only warn (ccache speeds builds up).
    pub optional: bool,
}

const fn req(what: &'static str, probe: Probe, install: Installer, stage: Stage) -> Requirement {
    Requirement {
        what,
        probe,
        install,
        stage,
        optional: false,
    }
}

pub const REQUIREMENTS: &[Requirement] = &[
    req(
        "git",
        Probe::Program("git"),
        Installer::Apt("git"),
        Stage::Tree,
    ),
    req(
        "apt-get (Debian source packages)",
        Probe::Program("apt-get"),
        Installer::Apt("apt"),
        Stage::Tree,
    ),
    req(
        "xz",
        Probe::Program("xz"),
        Installer::Apt("xz-utils"),
        Stage::Tree,
    ),
    req(
        "perl (checkpatch.pl)",
        Probe::Program("perl"),
        Installer::Apt("perl"),
        Stage::Tree,
    ),
    req(
        "gcc",
        Probe::Program("gcc"),
        Installer::Apt("gcc"),
        Stage::Build,
    ),
    req(
        "make",
        Probe::Program("make"),
        Installer::Apt("make"),
        Stage::Build,
    ),
    req(
        "flex",
        Probe::Program("flex"),
        Installer::Apt("flex"),
        Stage::Build,
    ),
    req(
        "bison",
        Probe::Program("bison"),
        Installer::Apt("bison"),
        Stage::Build,
    ),
    req(
        "bc",
        Probe::Program("bc"),
        Installer::Apt("bc"),
        Stage::Build,
    ),
    req(
        "cpio",
        Probe::Program("cpio"),
        Installer::Apt("cpio"),
        Stage::Build,
    ),
    req(
        "libelf headers",
        Probe::Header("gelf.h"),
        Installer::Apt("libelf-dev"),
        Stage::Build,
    ),
    req(
        "libssl headers",
        Probe::Header("openssl/ssl.h"),
        Installer::Apt("libssl-dev"),
        Stage::Build,
    ),
    Requirement {
        what: "ccache",
        probe: Probe::Program("ccache"),
        install: Installer::Apt("ccache"),
        stage: Stage::Build,
        optional: true,
    },
    req(
        "qemu-system-x86_64",
        Probe::Program("qemu-system-x86_64"),
        Installer::Apt("qemu-system-x86"),
        Stage::Boot,
    ),
    req(
        "virtme-ng (vng)",
        Probe::Program("vng"),
        Installer::Pip("virtme-ng"),
        Stage::Boot,
    ),
    req(
        "busybox (virtme-ng init helpers)",
        Probe::Program("busybox"),
        Installer::Apt("busybox-static"),
        Stage::Boot,
    ),
];

/// Outcome of checking one requirement.
#[derive(Debug, Clone)]
pub struct Finding {
    pub req: Requirement,
    /// Where it was found (program path or header), None when missing.
    pub found: Option<String>,
}

/// Whether `gcc` (looked up on `path`) can include `header`.
fn header_found(header: &str, path: &OsString) -> Option<String> {
    let gcc = crate::util::find_program("gcc", path)?;
    let mut child = Command::new(gcc)
        .args(["-E", "-x", "c", "-", "-o", "/dev/null"])
        .env("PATH", path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take()?;
        writeln!(stdin, "#include <{header}>").ok()?;
    }
    let status = child.wait().ok()?;
    status.success().then(|| format!("<{header}>"))
}

/// Check every requirement of the given stages against `path`.
pub fn check(stages: &[Stage], path: &OsString) -> Vec<Finding> {
    REQUIREMENTS
        .iter()
        .filter(|r| stages.contains(&r.stage))
        .map(|r| {
            let found = match r.probe {
                Probe::Program(name) => {
                    crate::util::find_program(name, path).map(|p| p.display().to_string())
                }
                Probe::Header(h) => header_found(h, path),
            };
            Finding { req: *r, found }
        })
        .collect()
}

/// The exact commands that install what `findings` lacks (optional ones too).
pub fn install_commands(findings: &[Finding]) -> Vec<Vec<String>> {
    let mut apt: Vec<&str> = Vec::new();
    let mut pip: Vec<&str> = Vec::new();
    for f in findings.iter().filter(|f| f.found.is_none()) {
        match f.req.install {
            Installer::Apt(p) if !apt.contains(&p) => apt.push(p),
            Installer::Pip(p) if !pip.contains(&p) => pip.push(p),
            _ => {}
        }
    }
    // Debian's python3 may come without pip; pip itself then comes from apt.
    if !pip.is_empty() && !apt.contains(&"python3-pip") {
        apt.push("python3-pip");
    }
    let mut cmds = Vec::new();
    if !apt.is_empty() {
        cmds.push(vec!["apt-get".to_string(), "update".to_string()]);
        let mut c: Vec<String> = ["apt-get", "install", "-y", "--no-install-recommends"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        c.extend(apt.iter().map(|s| s.to_string()));
        cmds.push(c);
    }
    if !pip.is_empty() {
        // --break-system-packages: Debian 12 marks its python3 "externally
        // managed" and refuses plain pip installs; virtme-ng is not packaged.
        let mut c: Vec<String> = ["python3", "-m", "pip", "install", "--break-system-packages"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        c.extend(pip.iter().map(|s| s.to_string()));
        cmds.push(c);
    }
    cmds
}

/// The text doctor prints: one line per requirement, then what to do.
pub fn report(findings: &[Finding]) -> String {
    let mut out = String::new();
    let width = findings.iter().map(|f| f.req.what.len()).max().unwrap_or(0);
    for f in findings {
        let (mark, detail) = match (&f.found, f.req.optional) {
            (Some(p), _) => ("ok     ", p.clone()),
            (None, true) => (
                "warn   ",
                "missing (optional: builds are slower without it)".to_string(),
            ),
            (None, false) => ("MISSING", "not found".to_string()),
        };
        let _ = writeln!(out, "  {mark} {:width$}  {detail}", f.req.what);
    }
    out
}

fn missing_required(findings: &[Finding]) -> Vec<&Finding> {
    findings
        .iter()
        .filter(|f| f.found.is_none() && !f.req.optional)
        .collect()
}

fn shell_line(cmd: &[String]) -> String {
    cmd.join(" ")
}

/// Checks run by the main job before any long step: fails with the doctor's
/// list and the install commands when something required is missing.
pub fn preflight(stages: &[Stage]) -> anyhow::Result<()> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let findings = check(stages, &path);
    let missing = missing_required(&findings);
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|f| f.req.what).collect();
    let cmds: Vec<String> = install_commands(&findings)
        .iter()
        .map(|c| shell_line(c))
        .collect();
    bail!(
        "missing host tools: {}\n{}\ninstall them with:\n  {}\n(or run `cargo xtask doctor --install` as root)",
        names.join(", "),
        report(&findings),
        cmds.join("\n  ")
    )
}

pub fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let stages = [Stage::Tree, Stage::Build, Stage::Boot];
    let mut findings = check(&stages, &path);
    println!("host tools:");
    print!("{}", report(&findings));
    match crate::util::kvm_status(Path::new(crate::util::DEV_KVM)) {
        Ok(s) => println!("  ok      /dev/kvm  {s} (whether it can boot a kernel is probed by `cargo xtask test --accel auto`)"),
        Err(e) => println!("  warn    /dev/kvm  {e}: the host lane (`test --host`) cannot run; booting uses TCG"),
    }
    let cmds = install_commands(&findings);
    if cmds.is_empty() {
        println!("everything the pipeline needs is installed");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.install {
        println!("to install what is missing, run (as root):");
        for c in &cmds {
            println!("  {}", shell_line(c));
        }
        println!("or: cargo xtask doctor --install");
        return Ok(if missing_required(&findings).is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    if !nix_is_root() {
        bail!("`doctor --install` needs root (apt-get install); run it with sudo, or run the commands above yourself");
    }
    for c in &cmds {
        println!("+ {}", shell_line(c));
        let status = Command::new(&c[0])
            .args(&c[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("cannot run `{}`", shell_line(c)))?;
        if !status.success() {
            bail!("`{}` failed ({status})", shell_line(c));
        }
    }
    findings = check(&stages, &path);
    print!("{}", report(&findings));
    let still: Vec<&str> = missing_required(&findings)
        .iter()
        .map(|f| f.req.what)
        .collect();
    if !still.is_empty() {
        bail!(
            "still missing after installing: {} (is the pip scripts directory on PATH?)",
            still.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn fake_bin(dir: &Path, name: &str) {
        let p = dir.join(name);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn qemu_missing_from_path_is_reported_with_its_package() {
        let dir = tempfile::tempdir().unwrap();
        fake_bin(dir.path(), "vng");
        fake_bin(dir.path(), "busybox");
        let path = OsString::from(dir.path());
        let findings = check(&[Stage::Boot], &path);
        let qemu = findings
            .iter()
            .find(|f| f.req.what == "qemu-system-x86_64")
            .unwrap();
        assert!(qemu.found.is_none());
        let vng = findings
            .iter()
            .find(|f| f.req.what == "virtme-ng (vng)")
            .unwrap();
        assert!(vng.found.is_some());
        let cmds = install_commands(&findings);
        assert_eq!(
            shell_line(&cmds[1]),
            "apt-get install -y --no-install-recommends qemu-system-x86"
        );
        assert_eq!(
            cmds.len(),
            2,
            "no pip command when vng is present: {cmds:?}"
        );
        assert!(report(&findings).contains("MISSING qemu-system-x86_64"));
    }

    #[test]
    fn everything_present_needs_no_install() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["qemu-system-x86_64", "vng", "busybox"] {
            fake_bin(dir.path(), name);
        }
        let findings = check(&[Stage::Boot], &OsString::from(dir.path()));
        assert!(findings.iter().all(|f| f.found.is_some()));
        assert!(install_commands(&findings).is_empty());
    }

    #[test]
    fn non_executable_file_is_not_a_program() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("qemu-system-x86_64"), "").unwrap();
        assert!(
            crate::util::find_program("qemu-system-x86_64", &OsString::from(dir.path())).is_none()
        );
    }

    #[test]
    fn pip_requirement_becomes_a_pip_command() {
        let dir = tempfile::tempdir().unwrap();
        fake_bin(dir.path(), "qemu-system-x86_64");
        fake_bin(dir.path(), "busybox");
        let findings = check(&[Stage::Boot], &OsString::from(dir.path()));
        let cmds = install_commands(&findings);
        assert_eq!(cmds.len(), 3);
        assert_eq!(
            shell_line(&cmds[1]),
            "apt-get install -y --no-install-recommends python3-pip"
        );
        assert_eq!(
            shell_line(&cmds[2]),
            "python3 -m pip install --break-system-packages virtme-ng"
        );
    }

    #[test]
    fn preflight_error_lists_the_missing_tool() {
        // A PATH with nothing on it: every boot tool is missing.
        let dir = tempfile::tempdir().unwrap();
        let findings = check(&[Stage::Boot], &OsString::from(dir.path()));
        let missing: Vec<&str> = missing_required(&findings)
            .iter()
            .map(|f| f.req.what)
            .collect();
        assert_eq!(
            missing,
            [
                "qemu-system-x86_64",
                "virtme-ng (vng)",
                "busybox (virtme-ng init helpers)"
            ]
        );
    }
}
