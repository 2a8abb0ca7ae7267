//! Regression test for the v12 guest_memfd bug: punching a range of the file
//! that no memslot is bound to raised mmu_invalidate_in_progress in
//! kvm_gmem_invalidate_begin() without the matching _end(), so every later
//! fault retried forever and VM destruction WARNed (kvm_destroy_vm).

use std::time::Duration;

use crate::cases::guest::{Guest, TouchError};
use crate::harness::case::{fail, Case, OrFail, Stop, TestResult, Tx};
use crate::harness::kmsg::{read_taint, KmsgReader};
use crate::kvm::caps::{Lack, Need};

pub const CASES: &[Case] = &[
    case!(v12_unbound_punch_no_livelock, needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess]),
];

const FILE_PAGES: u64 = 16;
const SLOT_PAGES: u64 = 8;
const TAINT_WARN: u64 = 1 << 9;

/// A kernel-log line reporting the dangling-invalidation WARN at VM
/// destruction (kvm_destroy_vm is often inlined into kvm_put_kvm).
pub fn is_destroy_warning(line: &str) -> bool {
    line.contains("kvm_destroy_vm") || (line.contains("WARNING:") && line.contains("kvm_put_kvm"))
}

fn v12_unbound_punch_no_livelock(tx: &Tx) -> TestResult {
    let p = tx.page();
    let limit = tx.inner_limit(Duration::from_secs(10));
    let mut log = KmsgReader::open_at_end();
    if let Err(e) = &log {
        tx.diag(format!(
            "kernel log not checked for kvm_destroy_vm warnings: {e}"
        ));
    }

    let mut problems: Vec<String> = Vec::new();
    let g = {
        let mut g = Guest::new(tx, FILE_PAGES, SLOT_PAGES)?;
        tx.diag(format!(
            "access mode {}; slot bound to file pages 0..{SLOT_PAGES} of {FILE_PAGES}; vCPU limit {:.1}s",
            g.mode_name(),
            limit.as_secs_f64()
        ));
        // Warm-up: the vCPU works before the punch (faults in page 0 only).
        let t = g.touch(0x20, 0x11, limit)?;
        if t.readback != 0x11 {
            return fail(format!(
                "warm-up access on page 0 read back {:#x}",
                t.readback
            ));
        }
        // Punch a range no memslot is bound to.
        g.gmem
            .punch(SLOT_PAGES * p, (FILE_PAGES - SLOT_PAGES) * p)
            .or_fail("punch unbound file pages")?;
        tx.diag(format!(
            "punched unbound file pages {SLOT_PAGES}..{FILE_PAGES}"
        ));
        // Touch pages the vCPU has not faulted in yet.
        for page in [3u64, SLOT_PAGES - 1] {
            let off = (page * p + 0x30) as u16;
            match g.touch(off, 0x40 + page as u8, limit) {
                Ok(t) if t.readback == 0x40 + page as u8 => {}
                Ok(t) => problems.push(format!("page {page}: guest read back {:#x}", t.readback)),
                Err(TouchError::TimedOut { limit, .. }) => {
                    problems.push(format!(
                        "livelock: the vCPU touching never-faulted page {page} did not reach its port I/O exit \
                         within {:.1}s after a PUNCH_HOLE on a range no memslot is bound to: unbalanced \
                         invalidation (kvm_gmem_invalidate_begin raised mmu_invalidate_in_progress and \
                         kvm_gmem_invalidate_end never lowered it, so every fault retries)",
                        limit.as_secs_f64()
                    ));
                    break;
                }
                Err(e) => {
                    problems.push(format!("page {page}: {e}"));
                    break;
                }
            }
        }
        g
    };

    // Destroy the VM (vCPU, VM fd, gmem file and mappings) and look only at
    // what the destruction itself did.
    if let Ok(log) = log.as_mut() {
        let _ = log.read_new(); // the harness reports anything logged so far
    }
    let taint_before = read_taint();
    drop(g);
    // Why the taint half of the destroy-time check could not be made.
    let taint_unusable = match (taint_before, read_taint()) {
        (Ok(before), Ok(after)) => {
            if before & TAINT_WARN != 0 {
                Some(format!(
                    "taint bit 9 (W) was already set before the VM was destroyed (tainted {before})"
                ))
            } else {
                if after & TAINT_WARN != 0 {
                    problems.push(format!(
                        "VM destruction raised taint bit 9 (W, 512): tainted {before} -> {after}"
                    ));
                }
                None
            }
        }
        (Err(e), _) | (_, Err(e)) => Some(format!("taint not readable: {e}")),
    };
    if let Some(why) = &taint_unusable {
        tx.diag(format!("{why}: relying on the kernel log"));
    }
    if let Ok(log) = log.as_mut() {
        let hits: Vec<String> = log
            .read_new()
            .into_iter()
            .filter(|l| is_destroy_warning(l))
            .collect();
        if !hits.is_empty() {
            for h in &hits {
                tx.diag(format!("kmsg: {h}"));
            }
            problems.push(
                "VM destruction logged a kvm_destroy_vm warning (dangling MMU invalidation)"
                    .to_string(),
            );
        }
    }

    conclude(
        &problems,
        taint_unusable.as_deref(),
        log.as_ref().err().map(String::as_str),
    )
}

/// The case's verdict: any problem fails it; with neither the kernel log
/// nor a usable taint bit the destroy-time WARN check was not made, and
/// half a check is no pass, so it skips saying so.
fn conclude(
    problems: &[String],
    taint_unusable: Option<&str>,
    log_error: Option<&str>,
) -> TestResult {
    if !problems.is_empty() {
        return fail(problems.join("\n"));
    }
    if let (Some(taint_why), Some(log_why)) = (taint_unusable, log_error) {
        return Err(Stop::lacking(
            Lack::Env("/dev/kmsg".into()),
            format!(
                "the kvm_destroy_vm WARN check needs the kernel log or a clear taint bit 9: \
                 {log_why}; {taint_why}"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{conclude, is_destroy_warning};
    use crate::harness::case::Stop;

    #[test]
    fn without_log_and_taint_the_case_cannot_pass() {
        assert_eq!(conclude(&[], None, None), Ok(()));
        assert_eq!(
            conclude(&[], Some("W already set"), None),
            Ok(()),
            "the log decides"
        );
        assert_eq!(
            conclude(&[], None, Some("EACCES")),
            Ok(()),
            "the taint decides"
        );
        match conclude(&[], Some("W already set"), Some("/dev/kmsg: EACCES")) {
            Err(Stop::Skip(r)) => {
                let r = r.as_str();
                assert!(r.starts_with("lacks env=/dev/kmsg: "), "{r}");
                assert!(r.contains("EACCES") && r.contains("W already set"), "{r}");
            }
            other => panic!("expected a skip, got {other:?}"),
        }
        let livelock = vec!["livelock: ...".to_string()];
        assert!(matches!(
            conclude(&livelock, Some("x"), Some("y")),
            Err(Stop::Fail(_))
        ));
    }

    #[test]
    fn destroy_warning_lines() {
        assert!(is_destroy_warning(
            "WARNING: CPU: 1 PID: 48 at arch/x86/kvm/../../../virt/kvm/kvm_main.c:1351 kvm_put_kvm+0x12e/0x24e"
        ));
        assert!(is_destroy_warning(
            "WARNING: CPU: 0 PID: 9 at virt/kvm/kvm_main.c:1331 kvm_destroy_vm+0x1f0/0x200"
        ));
        assert!(is_destroy_warning(" kvm_destroy_vm+0x1f0/0x200"));
        assert!(!is_destroy_warning("WARNING: CPU: 1 PID: 48 at include/linux/kvm_host.h:2089 is_page_fault_stale+0x6b/0x97"));
        assert!(!is_destroy_warning(" ? kvm_put_kvm+0x12e/0x24e"));
    }
}
