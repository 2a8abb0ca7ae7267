//! Booting a kernel with virtme-ng: accel detection and the vng command
//! line.
//!
//! The guest runs a generated script (`guest.sh` in the run directory, which
//! vng shares read-write) that records the taint before and after, runs the
//! selftests with stdout going to vng's stdout, and saves `dmesg`. vng's
//! `--verbose` sends the kernel console (loglevel 7) to its stderr, so the
//! KTAP stream and the kernel log arrive on separate pipes; both are saved
//! and interleaved into `guest.log` in arrival order.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use xshell::{cmd, Shell};

use crate::results;
use crate::util;

mod bench;

pub use bench::{bench_boot, newest_image};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// Which accelerator, and why (always printed; never a silent fallback).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// `--accel`: what the user asks for. `auto` is a question (does /dev/kvm
/// boot a kernel here?) that [`choose_accel`] answers with an [`Accel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelRequest {
    /// KVM when /dev/kvm is probed to boot a kernel, else TCG.
    Auto,
    /// KVM, not probed.
    Kvm,
    /// TCG with `-cpu max`.
    Tcg,
}

impl AccelRequest {
    /// As typed on the command line.
    pub fn name(self) -> &'static str {
        match self {
            AccelRequest::Auto => "auto",
            AccelRequest::Kvm => "kvm",
            AccelRequest::Tcg => "tcg",
        }
    }

    /// The accelerator asked for by name; None for `auto`.
    pub fn fixed(self) -> Option<Accel> {
        match self {
            AccelRequest::Auto => None,
            AccelRequest::Kvm => Some(Accel::Kvm),
            AccelRequest::Tcg => Some(Accel::Tcg),
        }
    }
}

/// Answers `--accel`.
pub fn choose_accel(request: AccelRequest, image: &Path) -> Result<AccelChoice> {
    match request {
        AccelRequest::Tcg => Ok(AccelChoice {
            accel: Accel::Tcg,
            reason: "requested with --accel tcg".into(),
        }),
        AccelRequest::Kvm => {
            if let Err(e) = util::kvm_status(Path::new(util::DEV_KVM)) {
                bail!("--accel kvm: {e}; use --accel tcg or auto");
            }
            Ok(AccelChoice {
                accel: Accel::Kvm,
                reason: "requested with --accel kvm (not probed)".into(),
            })
        }
        AccelRequest::Auto => {
            if let Err(e) = util::kvm_status(Path::new(util::DEV_KVM)) {
                return Ok(AccelChoice {
                    accel: Accel::Tcg,
                    reason: format!("auto: {e}"),
                });
            }
            let probe = probe_kvm(image)?;
            Ok(if probe.boots {
                AccelChoice {
                    accel: Accel::Kvm,
                    reason: format!("auto: {}", probe.detail),
                }
            } else {
                AccelChoice {
                    accel: Accel::Tcg,
                    reason: format!("auto: /dev/kvm cannot boot a kernel ({})", probe.detail),
                }
            })
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KvmProbe {
    pub boots: bool,
    pub detail: String,
    pub boot_id: String,
}

/// Boot `image` under `qemu -accel kvm` without a root filesystem: a kernel
/// that gets as far as looking for its root (and panics) proves that this
/// host's KVM can boot a stock kernel. The answer is cached for this host
/// boot in target/xtask-kvm-probe.json.
pub fn probe_kvm(image: &Path) -> Result<KvmProbe> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap_or_default()
        .trim()
        .to_string();
    let cache = util::target_dir().join("xtask-kvm-probe.json");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Ok(p) = serde_json::from_str::<KvmProbe>(&text) {
            if p.boot_id == boot_id && !boot_id.is_empty() {
                return Ok(KvmProbe {
                    detail: format!(
                        "{} (probe cached for this host boot in {})",
                        p.detail,
                        cache.display()
                    ),
                    ..p
                });
            }
        }
    }
    let (boots, detail) = boot_under_kvm(image, Duration::from_secs(30))?;
    let probe = KvmProbe {
        boots,
        detail,
        boot_id,
    };
    if let Ok(text) = serde_json::to_string_pretty(&probe) {
        std::fs::create_dir_all(util::target_dir()).ok();
        std::fs::write(&cache, text).ok();
    }
    Ok(probe)
}

/// Runs the probe's QEMU for up to `timeout`: whether the kernel reached
/// its root mount, and what it got to.
fn boot_under_kvm(image: &Path, timeout: Duration) -> Result<(bool, String)> {
    eprintln!(
        "accel: probing whether /dev/kvm boots a kernel (qemu -accel kvm, up to {}s)...",
        timeout.as_secs()
    );
    let mut command = Command::new("qemu-system-x86_64");
    command
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-smp",
            "1",
            "-nodefaults",
            "-no-reboot",
        ])
        .args([
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-kernel",
        ])
        .arg(image)
        .args([
            "-append",
            "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1 loglevel=7",
        ])
        .stdin(Stdio::null());
    let start = Instant::now();
    let mut spawned = util::spawn_lines(&mut command)
        .context("starting qemu-system-x86_64 for the KVM probe (is QEMU installed?)")?;
    let mut seen_linux = false;
    let mut last = String::new();
    let verdict = loop {
        let left = timeout.saturating_sub(start.elapsed());
        match spawned
            .lines
            .recv_timeout(left.min(Duration::from_millis(500)))
        {
            Ok((_, line)) => {
                if line.contains("Linux version") {
                    seen_linux = true;
                }
                if line.contains("VFS: Unable to mount root")
                    || line.contains("Run /init")
                    || line.contains("Freeing unused kernel")
                    || line.contains("No working init found")
                {
                    break (
                        true,
                        format!(
                            "a kernel booted to its root mount under -accel kvm in {:.1}s",
                            start.elapsed().as_secs_f64()
                        ),
                    );
                }
                if !line.trim().is_empty() {
                    last = line;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = spawned.child.wait().ok();
                break (
                    false,
                    format!(
                        "qemu -accel kvm exited ({}) before the kernel reached its root mount{}; last output: {}",
                        status.map(|s| s.to_string()).unwrap_or_default(),
                        if seen_linux { "" } else { " (no `Linux version` banner)" },
                        if last.is_empty() { "(none)".into() } else { last.clone() }
                    ),
                );
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if start.elapsed() >= timeout {
                    break (
                        false,
                        format!(
                            "a kernel under qemu -accel kvm did not reach its root mount within {}s{}; last output: {}",
                            timeout.as_secs(),
                            if seen_linux { "" } else { " (not even the `Linux version` banner)" },
                            if last.is_empty() { "(none)".into() } else { last.clone() }
                        ),
                    );
                }
            }
        }
    };
    // The probe is over either way: a QEMU that already exited cannot be
    // killed, and its status is in the verdict.
    let _ = spawned.child.kill();
    let _ = spawned.wait();
    Ok(verdict)
}

/// Everything that decides the vng command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VngSpec {
    pub image: PathBuf,
    pub accel: Accel,
    pub cpus: u32,
    pub memory: String,
    /// Directory shared read-write with the guest (the run directory).
    pub rwdir: PathBuf,
    /// Shell command run in the guest.
    pub exec: String,
    /// Extra kernel command line.
    pub append: Vec<String>,
    /// vng `--numa` values, one per guest NUMA node ([`numa_layout`]);
    /// empty for QEMU's single node.
    pub numa: Vec<String>,
}

/// The vng argument vector (without the program name).
pub fn vng_args(spec: &VngSpec) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["--run".into(), spec.image.clone().into_os_string()];
    a.push("--verbose".into());
    a.push("--disable-microvm".into());
    // base.config has 9p and no virtio-fs; without this vng spends ~3 s per
    // shared directory waiting for a virtiofsd that fails to start here.
    a.push("--force-9p".into());
    a.push("--cpus".into());
    a.push(smp(spec).into());
    a.push("--memory".into());
    a.push(spec.memory.clone().into());
    match spec.accel {
        Accel::Tcg => {
            a.push("--disable-kvm".into());
            a.push("--qemu-opts=-cpu max".into());
        }
        Accel::Kvm => {
            // vng picks `-cpu host` when it uses KVM; nested SVM/VMX comes
            // from the host.
        }
    }
    for node in &spec.numa {
        a.push("--numa".into());
        a.push(node.into());
    }
    let mut rw = OsString::from("--rwdir=");
    rw.push(spec.rwdir.as_os_str());
    a.push(rw);
    for arg in &spec.append {
        a.push("--append".into());
        a.push(arg.into());
    }
    a.push("--exec".into());
    a.push(spec.exec.clone().into());
    a
}

/// vng's `--cpus`, which it hands to QEMU's `-smp` as is. With NUMA nodes
/// every vCPU is a socket of its own: QEMU's default topology puts all
/// vCPUs in one socket, whose shared last-level cache then spans nodes, and
/// the guest kernel WARNs at boot (topology_sane(): "llc-sibling ... is not
/// on the same node").
fn smp(spec: &VngSpec) -> String {
    match spec.numa.is_empty() {
        true => spec.cpus.to_string(),
        false => format!("{0},sockets={0},cores=1,threads=1", spec.cpus),
    }
}

/// vng `--numa` values giving the guest `nodes` NUMA nodes: `memory` (a
/// QEMU size: a number of MiB or one with an M/G suffix) split evenly, the
/// `cpus` vCPUs spread over the first nodes in order (a node left without a
/// vCPU is memory-only). vng wants the nodes' sizes to add up to its
/// `--memory`, so an uneven split is refused rather than rounded.
pub fn numa_layout(nodes: u32, cpus: u32, memory: &str) -> Result<Vec<String>> {
    if nodes < 2 {
        bail!("--numa {nodes}: give 2 or more nodes (one node is what a guest has without --numa)");
    }
    let mib = parse_mib(memory).with_context(|| {
        format!("--memory {memory}: --numa needs a size in MiB or with an M or G suffix, e.g. 2G")
    })?;
    if mib % u64::from(nodes) != 0 {
        bail!("--memory {memory} ({mib} MiB) does not split evenly into {nodes} NUMA nodes: choose a multiple of {nodes} MiB");
    }
    let per = mib / u64::from(nodes);
    if per < 128 {
        bail!("--memory {memory} gives each of {nodes} NUMA nodes {per} MiB: give each at least 128 MiB");
    }
    Ok((0..nodes)
        .map(|n| {
            // vCPUs [first, last) of node n; nodes past the vCPU count get none.
            let first = u64::from(n) * u64::from(cpus) / u64::from(nodes);
            let last = u64::from(n + 1) * u64::from(cpus) / u64::from(nodes);
            match (first, last) {
                (f, l) if l == f => format!("{per}M"),
                (f, l) if l == f + 1 => format!("{per}M,cpus={f}"),
                (f, l) => format!("{per}M,cpus={f}-{}", l - 1),
            }
        })
        .collect())
}

/// A QEMU memory size in MiB: `2048`, `2048M`, `2G`.
fn parse_mib(size: &str) -> Option<u64> {
    let s = size.trim();
    let (num, mul) = match s.char_indices().last()? {
        (i, 'G' | 'g') => (&s[..i], 1024),
        (i, 'M' | 'm') => (&s[..i], 1),
        _ => (s, 1),
    };
    num.parse::<u64>().ok().filter(|&n| n > 0).map(|n| n * mul)
}

/// Kernel arguments every run gets: /dev/kmsg writes from the selftests'
/// begin/end markers must not be rate limited; and the IO-APIC timer check
/// is skipped, because under TCG on a loaded host the emulated timer can
/// miss the check's short window and the kernel panics ("IO-APIC + timer
/// doesn't work!") before the suite starts, which says nothing about KVM.
pub fn default_append() -> Vec<String> {
    vec!["printk.devkmsg=on".into(), "no_timer_check".into()]
}

/// First line the guest script prints on stdout: the guest has booted and
/// its userspace runs (before the selftests print their KTAP header).
pub const GUEST_UP: &str = "# gmem-harness: guest up";

/// The files of a run directory: what the guest script writes (it shares
/// the directory read-write with the guest) and what the harness captures
/// beside it. These names are the protocol between the script and
/// [`GuestArtifacts::read`]; nothing else spells them.
pub mod files {
    /// The script the guest runs.
    pub const GUEST_SCRIPT: &str = "guest.sh";
    /// The vng command line, shell-quoted.
    pub const COMMAND: &str = "command";
    /// The selftests' exit status, as recorded in the guest.
    pub const EXIT_CODE: &str = "exit-code";
    /// /proc/sys/kernel/tainted before the selftests run.
    pub const TAINT_BEFORE: &str = "taint-before";
    /// /proc/sys/kernel/tainted after they ran.
    pub const TAINT_AFTER: &str = "taint-after";
    /// The selftests' stdout (the KTAP stream), as the guest saw it.
    pub const KTAP_LOG: &str = "ktap.log";
    /// `uname -r` of the guest.
    pub const GUEST_UNAME: &str = "guest-uname";
    /// `dmesg` of the guest after the run.
    pub const GUEST_DMESG: &str = "guest-dmesg.log";
    /// vng's stdout, vng's stderr (the console), and both interleaved.
    pub const STDOUT_LOG: &str = "stdout.log";
    pub const CONSOLE_LOG: &str = "console.log";
    pub const GUEST_LOG: &str = "guest.log";
}

/// The script the guest runs.
pub fn guest_script(run_dir: &Path, program: &Path, args: &[String]) -> String {
    use files::*;
    let run = util::sh_quote(&run_dir.display().to_string());
    let mut cmdline = util::sh_quote(&program.display().to_string());
    for a in args {
        cmdline.push(' ');
        cmdline.push_str(&util::sh_quote(a));
    }
    // The selftests' stdout is also written to $RUN/ktap.log and their exit
    // status to $RUN/exit-code: without udev in the shared root,
    // virtme-ng-init finds no /dev/virtio-ports/virtme.* links and falls back
    // to running the script on the serial console, where the output mixes
    // with kernel messages and vng cannot return the exit status.
    format!(
        "#!/bin/sh\n\
         # Generated by cargo xtask test: runs inside the guest.\n\
         RUN={run}\n\
         echo 'gmem-harness: guest up' > /dev/kmsg 2>/dev/null\n\
         echo '{GUEST_UP}'\n\
         cat /proc/sys/kernel/tainted > \"$RUN/{TAINT_BEFORE}\" 2>/dev/null\n\
         uname -r > \"$RUN/{GUEST_UNAME}\" 2>/dev/null\n\
         {{ {cmdline}; echo $? > \"$RUN/{EXIT_CODE}\"; }} | tee \"$RUN/{KTAP_LOG}\"\n\
         rc=$(cat \"$RUN/{EXIT_CODE}\" 2>/dev/null || echo 125)\n\
         echo \"gmem-harness: tests done rc=$rc\" > /dev/kmsg 2>/dev/null\n\
         cat /proc/sys/kernel/tainted > \"$RUN/{TAINT_AFTER}\" 2>/dev/null\n\
         dmesg > \"$RUN/{GUEST_DMESG}\" 2>&1\n\
         exit $rc\n"
    )
}

/// What the guest script left in a run directory. A file the guest never
/// wrote (it did not boot, or stopped half-way), or wrote empty, is None.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestArtifacts {
    pub exit_code: Option<i32>,
    pub taint_before: Option<u64>,
    pub taint_after: Option<u64>,
    pub ktap_log: Option<String>,
    pub uname: Option<String>,
    pub dmesg: Option<String>,
}

impl GuestArtifacts {
    pub fn read(dir: &Path) -> GuestArtifacts {
        let text = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .ok()
                .filter(|t| !t.trim().is_empty())
        };
        let taint = |name: &str| text(name).and_then(|t| t.trim().parse().ok());
        GuestArtifacts {
            exit_code: text(files::EXIT_CODE).and_then(|t| t.trim().parse().ok()),
            taint_before: taint(files::TAINT_BEFORE),
            taint_after: taint(files::TAINT_AFTER),
            ktap_log: text(files::KTAP_LOG),
            uname: text(files::GUEST_UNAME).map(|t| t.trim().to_string()),
            dmesg: text(files::GUEST_DMESG),
        }
    }
}

/// What a guest run produced.
#[derive(Debug, Clone)]
pub struct GuestRun {
    pub exit: Option<i32>,
    pub stdout: String,
    pub console: String,
    /// Seconds from start to the first KTAP line (`KTAP version 1`).
    pub first_ktap_s: Option<f64>,
    /// Seconds from start to the guest script's first line (or the KTAP
    /// header when there is no guest script, e.g. --host).
    pub up_s: Option<f64>,
    pub duration: Duration,
    /// Set when the harness killed the guest.
    pub killed: Option<Killed>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Killed {
    BootTimeout(u64),
    RunTimeout(u64),
    /// The suite had started and then printed nothing for this long.
    Stalled(u64),
}

/// Run a command (vng) with boot and whole-run deadlines, and, when `stall`
/// is given, a deadline on the suite's silence: once the KTAP header came,
/// the guest is killed when its stdout (the suite) stays quiet for that
/// long. A kernel that hangs under a case then costs the stall time, not
/// the rest of the whole-run timeout; the kernel's own console messages
/// (stall and lockup reports of the hang itself) do not count as progress.
/// stdout and stderr are saved to `<run_dir>/stdout.log`, `console.log` and
/// interleaved into `guest.log`; `echo_ktap` prints KTAP lines as they come.
pub fn run_guest(
    program: &str,
    args: &[OsString],
    run_dir: &Path,
    boot_timeout: Duration,
    run_timeout: Duration,
    stall: Option<Duration>,
    echo: bool,
) -> Result<GuestRun> {
    // vng stays in our process group so that Ctrl-C reaches it and its
    // QEMU; on a timeout the harness kills the whole process tree itself.
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    let start = Instant::now();
    let spawned = util::spawn_lines(&mut command).with_context(|| {
        format!("starting {program} (is virtme-ng installed? `pip install virtme-ng`)")
    })?;
    let pid = spawned.child.id();
    let open = |name: &str| {
        std::fs::File::create(run_dir.join(name))
            .with_context(|| format!("creating {}", run_dir.join(name).display()))
    };
    let mut f_out = open(files::STDOUT_LOG)?;
    let mut f_con = open(files::CONSOLE_LOG)?;
    let mut f_all = open(files::GUEST_LOG)?;
    let mut stdout = String::new();
    let mut console = String::new();
    let mut first_ktap: Option<f64> = None;
    let mut up: Option<f64> = None;
    let mut killed = None;
    let mut last_suite_line = start;
    loop {
        let elapsed = start.elapsed();
        if up.is_none() && elapsed >= boot_timeout {
            killed = Some(Killed::BootTimeout(boot_timeout.as_secs()));
            break;
        }
        if elapsed >= run_timeout {
            killed = Some(Killed::RunTimeout(run_timeout.as_secs()));
            break;
        }
        if let Some(stall) = stall.filter(|_| first_ktap.is_some()) {
            if last_suite_line.elapsed() >= stall {
                killed = Some(Killed::Stalled(stall.as_secs()));
                break;
            }
        }
        match spawned.lines.recv_timeout(Duration::from_millis(250)) {
            Ok((stream, line)) => {
                let is_console = stream == util::Stream::Stderr;
                let t = start.elapsed().as_secs_f64();
                let _ = writeln!(f_all, "{}{line}", if is_console { "" } else { "| " });
                let trimmed = results::strip_kmsg_prefix(line.trim());
                if up.is_none() && (trimmed == "KTAP version 1" || trimmed == GUEST_UP) {
                    up = Some(t);
                }
                if first_ktap.is_none() && trimmed == "KTAP version 1" {
                    first_ktap = Some(t);
                }
                // The suite's output reaches the console without the
                // kernel's timestamp; the host lane's comes on stdout.
                let suite_line = !is_console
                    || (!line.trim_start().starts_with('[')
                        && (trimmed.starts_with("ok ")
                            || trimmed.starts_with("not ok ")
                            || trimmed.starts_with('#')
                            || trimmed.starts_with("KTAP")
                            || trimmed.starts_with("1..")));
                if suite_line {
                    last_suite_line = Instant::now();
                }
                if echo && is_console && suite_line {
                    println!("  | {line}");
                }
                if is_console {
                    let _ = writeln!(f_con, "{line}");
                    console.push_str(&line);
                    console.push('\n');
                } else {
                    let _ = writeln!(f_out, "{line}");
                    if echo {
                        println!("  | {line}");
                    }
                    stdout.push_str(&line);
                    stdout.push('\n');
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if killed.is_some() {
        kill_tree(pid);
    }
    let status = spawned.wait()?;
    Ok(GuestRun {
        exit: status.code(),
        stdout,
        console,
        first_ktap_s: first_ktap,
        up_s: up,
        duration: start.elapsed(),
        killed,
    })
}

/// SIGTERM, then SIGKILL, to `pid` and all its descendants (vng, its
/// helpers and QEMU), found through /proc.
fn kill_tree(pid: u32) {
    let Ok(sh) = Shell::new() else { return };
    for signal in ["-TERM", "-KILL"] {
        let mut pids: Vec<String> = descendants(pid)
            .into_iter()
            .map(|p| p.to_string())
            .collect();
        pids.push(pid.to_string());
        let _ = cmd!(sh, "kill {signal} {pids...}")
            .quiet()
            .ignore_status()
            .ignore_stderr()
            .run();
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// All descendants of `root` (children first found, grandchildren after).
pub fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.filter_map(|e| e.ok()) {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // The command name may hold spaces and parentheses: fields
            // after the last ')' are "state ppid ...".
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            if let Some(ppid) = rest
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
            {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut out = Vec::new();
    let mut frontier = vec![root];
    while let Some(p) = frontier.pop() {
        for (child, _) in parent_of.iter().filter(|(_, pp)| *pp == p) {
            out.push(*child);
            frontier.push(*child);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for vng: `script` run by sh, its stderr being the console.
    fn fake_guest(script: &str, stall: Option<Duration>) -> GuestRun {
        let dir = tempfile::tempdir().unwrap();
        let args: Vec<OsString> = vec!["-c".into(), script.into()];
        run_guest(
            "sh",
            &args,
            dir.path(),
            Duration::from_secs(20),
            Duration::from_secs(20),
            stall,
            false,
        )
        .unwrap()
    }

    #[test]
    fn a_suite_gone_silent_is_killed_at_the_stall_timeout() {
        // The kernel keeps talking (a stall report every 0.2 s) while the
        // suite says nothing after its first case.
        let run = fake_guest(
            "echo 'KTAP version 1' >&2; echo 'ok 1 a' >&2; \
             while :; do echo '[   21.1] rcu: INFO: rcu_sched self-detected stall' >&2; sleep 0.2; done",
            Some(Duration::from_secs(1)),
        );
        assert_eq!(run.killed, Some(Killed::Stalled(1)));
        assert!(run.duration < Duration::from_secs(10), "{:?}", run.duration);
    }

    #[test]
    fn a_suite_that_keeps_printing_is_not_stalled() {
        let run = fake_guest(
            "echo 'KTAP version 1' >&2; for i in 1 2 3 4 5 6; do sleep 0.4; echo \"ok $i c$i\" >&2; done",
            Some(Duration::from_secs(1)),
        );
        assert_eq!(run.killed, None);
        assert_eq!(run.exit, Some(0));
    }

    #[test]
    fn silence_before_the_ktap_header_is_the_boot_timeouts_business() {
        let run = fake_guest(
            "sleep 2; echo 'KTAP version 1' >&2",
            Some(Duration::from_secs(1)),
        );
        assert_eq!(run.killed, None);
    }
}
