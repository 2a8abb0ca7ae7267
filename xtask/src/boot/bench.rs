//! `cargo xtask bench boot`: boot to the first KTAP line against the
//! round trip of a guest running `true`, under each usable accelerator.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use super::{
    choose_accel, default_append, run_guest, vng_args, Accel, AccelChoice, AccelRequest, VngSpec,
};
use crate::util;

/// `cargo xtask bench boot`: boot-to-first-KTAP-line of the newest built
/// kernel (or $XTASK_KERNEL) under TCG, and under KVM when the probe says
/// it works. The baseline, measured in the same run, is the round trip of
/// the same kernel running `true`.
pub fn bench_boot() -> Result<ExitCode> {
    let image = match std::env::var_os("XTASK_KERNEL") {
        Some(p) => PathBuf::from(p),
        None => newest_image().context("no built kernel under target/kbuild; run `cargo xtask build-kernel` or set XTASK_KERNEL")?,
    };
    let dir = util::target_dir().join("results").join("bench-boot");
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    let mut accels = vec![AccelChoice {
        accel: Accel::Tcg,
        reason: "always measured".into(),
    }];
    let kvm = choose_accel(AccelRequest::Auto, &image)?;
    println!(
        "kernel {}\naccel probe: {} ({})",
        image.display(),
        kvm.accel.name(),
        kvm.reason
    );
    if kvm.accel == Accel::Kvm {
        accels.push(kvm);
    }
    for choice in accels {
        // Baseline: boot and run `true`.
        let spec = VngSpec {
            image: image.clone(),
            accel: choice.accel,
            cpus: 2,
            memory: "2G".into(),
            rwdir: dir.clone(),
            exec: "true".into(),
            append: default_append(),
            numa: Vec::new(),
        };
        let boot = |spec: &VngSpec| {
            let timeout = Duration::from_secs(600);
            run_guest("vng", &vng_args(spec), &dir, timeout, timeout, None, false)
        };
        let base = boot(&spec)?;
        // Measured: a KTAP header printed by the guest as the first thing.
        let script = dir.join("ktap.sh");
        std::fs::write(&script, "#!/bin/sh\necho 'KTAP version 1'\necho '1..0'\n")?;
        let spec = VngSpec {
            exec: format!("sh {}", util::sh_quote(&script.display().to_string())),
            ..spec
        };
        let run = boot(&spec)?;
        let first = run.first_ktap_s.context(
            "the guest never printed its KTAP header; see target/results/bench-boot/guest.log",
        )?;
        rows.push((
            choice.accel.name(),
            first,
            base.duration.as_secs_f64(),
            run.duration.as_secs_f64(),
        ));
    }
    println!(
        "\n{:<6} {:>18} {:>20} {:>10} {:>8}",
        "accel", "first KTAP line", "baseline (`true`)", "ratio", "goal"
    );
    for (a, first, base, _) in &rows {
        println!(
            "{a:<6} {first:>17.1}s {base:>19.1}s {:>10.3} {:>8}",
            first / base.max(0.001),
            if *a == "tcg" { "<= 25s" } else { "" }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The most recently built bzImage under target/kbuild.
pub fn newest_image() -> Option<PathBuf> {
    let root = util::kernel_work_dir().join("kbuild");
    walkdir::WalkDir::new(root)
        .max_depth(6)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "bzImage" && e.path().ends_with("arch/x86/boot/bzImage"))
        .filter_map(|e| {
            e.metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .map(|t| (t, e.into_path()))
        })
        .max_by_key(|(t, _)| *t)
        .map(|(_, p)| p)
}
