//! The suite runner: expands cases per VM type, applies the filter, probes
//! capabilities, runs each case isolated and prints KTAP.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use crate::cases;
use crate::harness::case::{Case, Stop, Tx};
use crate::harness::isolate::{run_isolated, End, Outcome};
use crate::harness::kmsg::{Health, Monitor};
use crate::harness::ktap::{KtapWriter, Verdict};
use crate::kvm::caps::Caps;
use crate::kvm::VmType;
use protocol::kmsg::Edge;
use protocol::ktap;

#[derive(Debug, Clone)]
pub struct Options {
    pub list: bool,
    /// Substrings; a case runs when any matches (all run when empty).
    pub filters: Vec<String>,
    pub timeout: Duration,
    /// Stop at the first failing case (`Bail out!`): for runs that only
    /// need to know whether anything fails, such as a mutant's.
    pub fail_fast: bool,
}

/// One case on one VM type.
pub struct Instance {
    pub case: &'static Case,
    pub vm_type: VmType,
    pub name: String,
}

pub fn instances(filters: &[String]) -> Vec<Instance> {
    let mut out = Vec::new();
    for case in cases::all() {
        for t in VmType::ALL {
            let name = case.full_name(t);
            if filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())) {
                out.push(Instance {
                    case,
                    vm_type: t,
                    name,
                });
            }
        }
    }
    out
}

/// "60s", "0.5s".
pub fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// One case's result line: what the child reported combined with the
/// kernel's health around it. (The run as a whole is judged outside the
/// guest, by xtask's results::judge, from these lines and the kernel log.)
pub fn case_verdict(outcome: &Outcome, health: &Health) -> (Verdict, Vec<String>) {
    let mut diags = Vec::new();
    let mut failed = match outcome {
        Outcome::Pass => false,
        Outcome::Skip(_) => false,
        Outcome::Fail(m) => {
            diags.extend(m.lines().map(|l| format!("{}{l}", ktap::FAIL)));
            true
        }
        Outcome::TimedOut(d) => {
            diags.push(format!(
                "{}timed out after {} (case killed with SIGKILL)",
                ktap::FAIL,
                secs(*d)
            ));
            true
        }
        Outcome::Crashed(m) => {
            diags.push(format!("{}{m}", ktap::FAIL));
            true
        }
    };
    if !health.is_clean() {
        for p in &health.problems {
            diags.push(format!("{}kernel: {p}", ktap::FAIL));
        }
        for l in &health.lines {
            diags.push(format!("{}{l}", ktap::KMSG));
        }
        failed = true;
    }
    let v = if failed {
        Verdict::Fail
    } else if let Outcome::Skip(m) = outcome {
        Verdict::Skip(m.clone())
    } else {
        Verdict::Pass
    };
    (v, diags)
}

/// Runs the suite; returns the process exit status (0 ok, 1 failures, 2 usage).
pub fn run(opts: &Options) -> u8 {
    let list = instances(&opts.filters);
    if opts.list {
        let mut out = io::stdout().lock();
        for i in &list {
            if writeln!(out, "{}", i.name).is_err() {
                return 1;
            }
        }
        return 0;
    }
    if list.is_empty() {
        eprintln!(
            "gmem-selftests: no case matches --filter {:?}; run with --list to see the case names",
            opts.filters
        );
        return 2;
    }
    let caps = Caps::probe();
    let mut monitor = Monitor::new();
    match run_instances(&list, opts, &caps, &mut monitor, io::stdout()) {
        Ok(failed) => u8::from(failed),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => 1, // reader went away
        Err(e) => {
            eprintln!("gmem-selftests: cannot write the KTAP output: {e}");
            1
        }
    }
}

/// The guest's NUMA nodes, for the record (the mbind cases need two).
fn numa_note() -> String {
    use crate::cases::mmap::{online_nodes, NODE_ONLINE};
    if !std::path::Path::new(NODE_ONLINE).exists() {
        return format!("numa: no {NODE_ONLINE} (kernel without CONFIG_NUMA)");
    }
    match online_nodes() {
        Ok(nodes) => format!("numa: {} online node(s) {nodes:?}", nodes.len()),
        Err(e) => format!("numa: {e}"),
    }
}

/// Runs `list` and writes KTAP to `out`; returns whether any case failed.
pub fn run_instances<W: Write>(
    list: &[Instance],
    opts: &Options,
    caps: &Caps,
    monitor: &mut Monitor,
    out: W,
) -> io::Result<bool> {
    let timeout = opts.timeout;
    let mut k = KtapWriter::new(out);
    k.header(list.len())?;
    for line in caps.describe() {
        k.diag(&line)?;
    }
    for line in caps.report_lines() {
        k.diag(&line)?;
    }
    for n in &monitor.notes {
        k.diag(n)?;
    }
    k.diag(&numa_note())?;
    k.diag(&format!("per-case timeout {}", secs(timeout)))?;

    let mut area_ms: BTreeMap<&str, u128> = BTreeMap::new();
    let suite_start = Instant::now();
    for inst in list {
        let start = Instant::now();
        if let Some(reason) = caps.vm(inst.vm_type).skip_reason(inst.case.needs) {
            k.result(&inst.name, &Verdict::Skip(reason), 0)?;
            continue;
        }
        // Names the running case if the stream stops mid-case (guest panic).
        k.diag(&format!("{}{}", ktap::BEGIN, inst.name))?;
        monitor.mark(Edge::Begin, &inst.name);
        let before = monitor.before();
        let case = inst.case;
        let vm_type = inst.vm_type;
        let caps_ref = caps;
        let iso = run_isolated(timeout, |rep| {
            let tx = Tx {
                rep,
                vm_type,
                caps: caps_ref,
                timeout,
            };
            match (case.run)(&tx) {
                Ok(()) => End::Pass,
                Err(Stop::Fail(m)) => End::Fail(m),
                Err(Stop::Skip(m)) => End::Skip(m.into_string()),
            }
        });
        let health = monitor.after(before);
        monitor.mark(Edge::End, &inst.name);
        let ms = start.elapsed().as_millis();
        *area_ms.entry(inst.case.area).or_default() += ms;
        for d in &iso.diags {
            k.diag(d)?;
        }
        let (v, diags) = case_verdict(&iso.outcome, &health);
        for d in &diags {
            k.diag(d)?;
        }
        let failed = matches!(v, Verdict::Fail);
        let number = k.result(&inst.name, &v, ms)?;
        if failed && opts.fail_fast {
            k.bail_out(&format!(
                "--fail-fast: {} failed; {} case(s) not run",
                inst.name,
                list.len() - number
            ))?;
            k.finish()?;
            return Ok(true);
        }
    }
    for (area, ms) in &area_ms {
        k.diag(&format!("{}{area} {ms}", ktap::AREA_TIME))?;
    }
    k.diag(&format!(
        "{}{}",
        ktap::SUITE_TIME,
        suite_start.elapsed().as_millis()
    ))?;
    let t = k.finish()?;
    Ok(t.fail > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::case::TestResult;
    use crate::kvm::caps::{Lack, Need, VmCaps};

    fn passes(tx: &Tx) -> TestResult {
        tx.diag("all good");
        Ok(())
    }
    fn fails(_: &Tx) -> TestResult {
        Err(Stop::Fail("expected EINVAL, got EBADF".into()))
    }
    fn skips_at_runtime(_: &Tx) -> TestResult {
        Err(Stop::lacking(
            Lack::Env("/x".into()),
            "decided inside the case",
        ))
    }
    fn spins(_: &Tx) -> TestResult {
        loop {
            std::hint::spin_loop();
        }
    }
    fn segfaults(_: &Tx) -> TestResult {
        crate::harness::isolate::fault_on_prot_none_page();
        Ok(())
    }

    static FAKE: &[Case] = &[
        Case {
            area: "h",
            name: "passes",
            needs: &[],
            run: passes,
        },
        Case {
            area: "h",
            name: "fails",
            needs: &[],
            run: fails,
        },
        Case {
            area: "h",
            name: "skips_at_runtime",
            needs: &[],
            run: skips_at_runtime,
        },
        Case {
            area: "h",
            name: "needs_private",
            needs: &[Need::PrivateAttr],
            run: passes,
        },
        Case {
            area: "h",
            name: "spins",
            needs: &[],
            run: spins,
        },
        Case {
            area: "h",
            name: "segfaults",
            needs: &[],
            run: segfaults,
        },
    ];

    fn fake_caps() -> Caps {
        let vm = |t| VmCaps {
            vm_type: t,
            ..crate::kvm::caps::host_618()
        };
        Caps {
            release: "6.18.0".into(),
            version: Some((6, 18)),
            page_size: 4096,
            kvm_error: None,
            vm_types: 1,
            system: Vec::new(),
            vms: vec![
                vm(VmType::Default),
                VmCaps::unavailable(VmType::SwProtected, "not in VM_TYPES".into()),
            ],
        }
    }

    /// Every fake case on the default VM type.
    fn fake_instances() -> Vec<Instance> {
        FAKE.iter()
            .map(|c| Instance {
                case: c,
                vm_type: VmType::Default,
                name: c.full_name(VmType::Default),
            })
            .collect()
    }

    /// The runner end to end on fake cases: KTAP lines, verdicts, totals.
    #[test]
    fn runner_reports_every_kind_of_outcome_in_ktap() {
        let _g = crate::harness::isolate::test_fork_lock();
        let list: Vec<Instance> = fake_instances()
            .into_iter()
            .chain(std::iter::once(Instance {
                case: &FAKE[0],
                vm_type: VmType::SwProtected,
                name: FAKE[0].full_name(VmType::SwProtected),
            }))
            .collect();
        let mut out = Vec::new();
        let mut mon = Monitor::disabled("unit test");
        let failed =
            run_instances(&list, &fake_opts(false), &fake_caps(), &mut mon, &mut out).unwrap();
        assert!(failed);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "KTAP version 1");
        assert_eq!(lines[1], "1..7");
        let results: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
            .collect();
        assert_eq!(
            results,
            vec![
                "ok 1 h.passes@default",
                "not ok 2 h.fails@default",
                "ok 3 h.skips_at_runtime@default # SKIP lacks env=/x: decided inside the case",
                "ok 4 h.needs_private@default # SKIP lacks KVM_CAP_MEMORY_ATTRIBUTES&0x8: KVM_CAP_MEMORY_ATTRIBUTES lacks KVM_MEMORY_ATTRIBUTE_PRIVATE on a default VM (0x0)",
                "not ok 5 h.spins@default",
                "not ok 6 h.segfaults@default",
                "ok 7 h.passes@sw_protected # SKIP lacks vm_type=sw_protected: no sw_protected VM: not in VM_TYPES",
            ]
        );
        assert!(text.contains(
            "# begin h.passes@default\n# all good\nok 1 h.passes@default\n# time h.passes@default "
        ));
        assert!(
            !text.contains("# begin h.needs_private"),
            "skipped cases do not begin"
        );
        assert!(text.contains("# FAIL: expected EINVAL, got EBADF\nnot ok 2"));
        assert!(text.contains("# FAIL: timed out after 0.5s (case killed with SIGKILL)\nnot ok 5"));
        assert!(text.contains("# FAIL: child died: segmentation fault, SIGSEGV (11)\nnot ok 6"));
        assert_eq!(lines.last(), Some(&"# totals: pass 1 fail 3 skip 3"));
        for r in &results {
            let name = r
                .trim_start_matches("not ")
                .split_whitespace()
                .nth(2)
                .unwrap();
            assert!(
                text.contains(&format!("# time {name} ")),
                "no time line for {name}"
            );
        }
    }

    fn fake_opts(fail_fast: bool) -> Options {
        Options {
            list: false,
            filters: Vec::new(),
            timeout: Duration::from_millis(500),
            fail_fast,
        }
    }

    /// With --fail-fast the stream ends at the first failure with a
    /// `Bail out!` that says how many cases did not run.
    #[test]
    fn fail_fast_bails_out_after_the_first_failure() {
        let _g = crate::harness::isolate::test_fork_lock();
        let list = fake_instances();
        let mut out = Vec::new();
        let mut mon = Monitor::disabled("unit test");
        let failed =
            run_instances(&list, &fake_opts(true), &fake_caps(), &mut mon, &mut out).unwrap();
        assert!(failed);
        let text = String::from_utf8(out).unwrap();
        let results: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
            .collect();
        assert_eq!(
            results,
            vec!["ok 1 h.passes@default", "not ok 2 h.fails@default"]
        );
        assert!(
            text.contains(&format!(
                "Bail out! --fail-fast: h.fails@default failed; {} case(s) not run",
                list.len() - 2
            )),
            "{text}"
        );
        assert!(!text.contains("# begin h.skips_at_runtime"), "{text}");
    }

    #[test]
    fn filter_is_a_substring_and_any_matches() {
        let all = instances(&[]);
        assert!(all.len() >= 2 * 30, "{}", all.len());
        let some = instances(&["bind.".to_string()]);
        assert!(!some.is_empty() && some.iter().all(|i| i.name.starts_with("bind.")));
        let two = instances(&["@sw_protected".to_string(), "create.".to_string()]);
        assert!(two
            .iter()
            .all(|i| i.name.contains("@sw_protected") || i.name.contains("create.")));
        assert!(instances(&["no-such-case".to_string()]).is_empty());
    }

    #[test]
    fn skip_is_never_a_pass_and_splats_fail() {
        let clean = Health::default();
        let (v, _) = case_verdict(&Outcome::Skip("no cap".into()), &clean);
        assert_eq!(v, Verdict::Skip("no cap".into()));
        let (v, _) = case_verdict(&Outcome::Pass, &clean);
        assert_eq!(v, Verdict::Pass);

        let dirty = Health {
            problems: vec!["new taint 0x200".into()],
            lines: vec!["WARNING: CPU: 0 PID: 1 at kvm_destroy_vm".into()],
        };
        let (v, d) = case_verdict(&Outcome::Pass, &dirty);
        assert_eq!(v, Verdict::Fail);
        assert!(d.iter().any(|l| l.contains("taint 0x200")));
        assert!(d.iter().any(|l| l.starts_with("kmsg: WARNING")));
        let (v, _) = case_verdict(&Outcome::Skip("x".into()), &dirty);
        assert_eq!(
            v,
            Verdict::Fail,
            "a splat during a skipped case still fails it"
        );
    }

    #[test]
    fn timeouts_and_crashes_fail_with_a_reason() {
        let clean = Health::default();
        let (v, d) = case_verdict(&Outcome::TimedOut(Duration::from_secs(60)), &clean);
        assert_eq!(v, Verdict::Fail);
        assert_eq!(
            d,
            vec!["FAIL: timed out after 60s (case killed with SIGKILL)".to_string()]
        );
        let (v, d) = case_verdict(
            &Outcome::Crashed("child died: segmentation fault, SIGSEGV (11)".into()),
            &clean,
        );
        assert_eq!(v, Verdict::Fail);
        assert!(d[0].contains("SIGSEGV"));
    }
}
