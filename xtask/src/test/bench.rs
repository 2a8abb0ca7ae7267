//! `cargo xtask bench selftests`: the suite on the host, per area, against
//! the binary's start-up cost.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use xshell::{cmd, Shell};

use super::{selftests_binary, TestArgs};
use crate::results;

/// `cargo xtask bench selftests`: the suite on the host, per-area times from
/// its `# time` diagnostics. The baseline (same run) is `--list`, i.e. the
/// binary's start-up cost.
pub fn bench_selftests() -> Result<ExitCode> {
    let mut argv = vec!["--host".to_string()];
    match std::env::var_os("XTASK_SELFTESTS") {
        Some(bin) => argv.extend([
            "--selftests".into(),
            PathBuf::from(bin).display().to_string(),
        ]),
        None => argv.push("--release".into()),
    }
    let args = TestArgs::from_cli(&argv)?;
    let bin = selftests_binary(&args)?;
    let sh = Shell::new()?;
    let t0 = Instant::now();
    cmd!(sh, "{bin} --list").quiet().ignore_status().output()?;
    let baseline = t0.elapsed();
    let t1 = Instant::now();
    let out = cmd!(sh, "{bin}").quiet().ignore_status().output()?;
    let total = t1.elapsed();
    let ktap = results::parse_ktap(&String::from_utf8_lossy(&out.stdout));
    let mut areas: Vec<(String, u64, usize)> = Vec::new();
    for c in &ktap.cases {
        let area = c.name.split('.').next().unwrap_or(&c.name).to_string();
        let ms = c.duration_ms.unwrap_or(0);
        match areas.iter_mut().find(|a| a.0 == area) {
            Some(a) => {
                a.1 += ms;
                a.2 += 1;
            }
            None => areas.push((area, ms, 1)),
        }
    }
    let (p, f, s, m) = ktap.count();
    println!(
        "selftests on the host ({}): {p} pass, {f} fail, {s} skip, {m} no result",
        bin.display()
    );
    println!(
        "\n{:<16} {:>6} {:>10} {:>10}",
        "area", "cases", "ms", "share"
    );
    let sum: u64 = areas.iter().map(|a| a.1).sum();
    for (area, ms, n) in &areas {
        println!(
            "{area:<16} {n:>6} {ms:>10} {:>9.1}%",
            100.0 * *ms as f64 / sum.max(1) as f64
        );
    }
    println!(
        "\nwhole suite {:.3}s; baseline `--list` {:.3}s; ratio {:.1}",
        total.as_secs_f64(),
        baseline.as_secs_f64(),
        total.as_secs_f64() / baseline.as_secs_f64().max(0.000_001)
    );
    Ok(ExitCode::SUCCESS)
}
