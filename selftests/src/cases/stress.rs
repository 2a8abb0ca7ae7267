//! Bounded race: PUNCH_HOLE loop vs memslot create/delete loop on the same
//! file range, then a vCPU progress check.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::caps::Need;
use crate::case::{ensure, fail, Case, TestResult, Tx};
use crate::guest::{Guest, TouchError};
use crate::kvm::ename;

pub const CASES: &[Case] = &[Case {
    area: "stress",
    name: "punch_vs_memslot_churn",
    needs: &[Need::GuestMemfd, Need::UserMemory2, Need::GuestAccess],
    run: punch_vs_memslot_churn,
}];

const PAGES: u64 = 8;
/// Longest race; with the progress check the case stays under 10 s.
const RACE: Duration = Duration::from_secs(2);

fn punch_vs_memslot_churn(tx: &Tx) -> TestResult {
    let p = tx.page();
    let limit = tx.inner_limit(Duration::from_secs(5));
    let mut g = Guest::new(tx, PAGES, PAGES)?;
    let warm = (2 * p + 0x10) as u16;
    let t = g.touch(warm, 0x9C, limit)?;
    ensure(t.readback == 0x9C, || format!("warm-up access: {t:?}"))?;

    let punches = AtomicU64::new(0);
    let churns = AtomicU64::new(0);
    let region = g.data_region();
    // Shorter when the per-case timeout is tiny, so the case always finishes.
    let race = RACE.min(tx.timeout / 4);
    let deadline = Instant::now() + race;
    let (punch_err, churn_err) = {
        let gmem = &g.gmem;
        let vm = &g.vm;
        let (punches, churns) = (&punches, &churns);
        std::thread::scope(|s| {
            let a = s.spawn(move || -> Option<String> {
                while Instant::now() < deadline {
                    if let Err(e) = gmem.punch(0, PAGES * p) {
                        return Some(format!("PUNCH_HOLE failed during the race: {}", ename(&e)));
                    }
                    punches.fetch_add(1, Ordering::Relaxed);
                }
                None
            });
            let b = s.spawn(move || -> Option<String> {
                while Instant::now() < deadline {
                    if let Err(e) = vm.delete_region(&region) {
                        return Some(format!(
                            "deleting the slot failed during the race: {}",
                            ename(&e)
                        ));
                    }
                    if let Err(e) = vm.set_region2(&region) {
                        return Some(format!(
                            "re-creating the slot failed during the race: {}",
                            ename(&e)
                        ));
                    }
                    churns.fetch_add(1, Ordering::Relaxed);
                }
                None
            });
            (
                a.join()
                    .unwrap_or_else(|_| Some("punch thread panicked".into())),
                b.join()
                    .unwrap_or_else(|_| Some("memslot thread panicked".into())),
            )
        })
    };
    tx.diag(format!(
        "{:.1}s race: {} punches, {} slot delete/create cycles",
        race.as_secs_f64(),
        punches.load(Ordering::Relaxed),
        churns.load(Ordering::Relaxed)
    ));
    if let Some(e) = punch_err.or(churn_err) {
        return fail(e);
    }
    ensure(
        punches.load(Ordering::Relaxed) > 0 && churns.load(Ordering::Relaxed) > 0,
        || "the race did not run both loops at least once".to_string(),
    )?;
    // The last loop iteration re-created the slot; the vCPU must make progress.
    for page in 0..PAGES {
        let off = (page * p + 0x10) as u16;
        match g.touch(off, 0x20 + page as u8, limit) {
            Ok(t) => {
                ensure(t.found == 0, || {
                    format!("page {page} reads {:#x} after the race punched the whole file, expected 0", t.found)
                })?;
                ensure(t.readback == 0x20 + page as u8, || format!("page {page}: read back {:#x}", t.readback))?;
            }
            Err(TouchError::TimedOut { limit, .. }) => {
                return fail(format!(
                    "no vCPU progress on page {page} within {:.1}s after the race: an invalidation was left \
                     unbalanced (mmu_invalidate_in_progress stuck raised)",
                    limit.as_secs_f64()
                ))
            }
            Err(e) => return fail(format!("page {page} after the race: {e}")),
        }
    }
    Ok(())
}
