//! The campaign's schedule. Every job (the baseline, then each mutant) is
//! built in the one scratch worktree, one build at a time, and booted, one
//! boot at a time, in job order. Pipelined, job N+1 is built while job N
//! boots: under TCG the guest keeps about one host core busy, so the other
//! core would otherwise idle through every boot. Sequential, each job is
//! booted before the next is built (what `--sequential` runs, and the
//! measure the pipeline is benchmarked against).
//!
//! The scheduler knows nothing of kernels: the build stage hands it an
//! image that must stay valid while the next build runs (the campaign's
//! copy of bzImage), the boot stage judges it on another thread. Results
//! are filed in job order, and a result that says stop (the baseline
//! failed) drops everything after it, built or not.

use std::thread::{Scope, ScopedJoinHandle};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// How a campaign orders its builds and boots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The next job builds while the current one boots.
    #[default]
    Pipelined,
    /// Build, boot, then the next job.
    Sequential,
}

impl Schedule {
    pub fn name(self) -> &'static str {
        match self {
            Schedule::Pipelined => "pipelined",
            Schedule::Sequential => "sequential",
        }
    }
}

/// One job's result as filed.
#[derive(Debug)]
pub struct Filed<R> {
    pub result: R,
    /// Seconds of this job's build that ran while an earlier job booted:
    /// what the pipeline took off the campaign's wall time for this job.
    pub overlap_s: f64,
}

/// The boot running on its thread, and which job it is.
struct Flight<'scope, R> {
    job: usize,
    handle: ScopedJoinHandle<'scope, (R, Instant)>,
}

/// The scheduler's bookkeeping: what is filed, what waits to be.
struct Book<R> {
    filed: Vec<Filed<R>>,
    /// Build failures of jobs after the one in flight: filed once it lands.
    failed: Vec<(usize, R)>,
    /// When each build that ran beside the boot in flight started and ended.
    spans: Vec<(usize, Instant, Instant)>,
    overlap_s: Vec<f64>,
    stopped: bool,
}

impl<R> Book<R> {
    fn new(jobs: usize) -> Book<R> {
        Book {
            filed: Vec::with_capacity(jobs),
            failed: Vec::new(),
            spans: Vec::new(),
            overlap_s: vec![0.0; jobs],
            stopped: false,
        }
    }

    /// Files the next job's result; false once a result says stop.
    fn file(&mut self, result: R, go_on: &impl Fn(usize, &R) -> bool) -> bool {
        if self.stopped {
            return false;
        }
        let job = self.filed.len();
        let more = go_on(job, &result);
        self.filed.push(Filed {
            result,
            overlap_s: self.overlap_s[job],
        });
        self.stopped = !more;
        more
    }

    /// Waits for the boot in flight (if any), then files it and the build
    /// failures that came after it; false once a result says stop.
    fn land<'scope>(
        &mut self,
        flight: &mut Option<Flight<'scope, R>>,
        go_on: &impl Fn(usize, &R) -> bool,
    ) -> bool {
        let Some(f) = flight.take() else {
            return !self.stopped;
        };
        let (result, ended) = f
            .handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        for (job, start, end) in self.spans.drain(..) {
            self.overlap_s[job] = end
                .min(ended)
                .saturating_duration_since(start)
                .as_secs_f64();
        }
        debug_assert_eq!(f.job, self.filed.len(), "boots land in job order");
        let mut more = self.file(result, go_on);
        for (job, r) in std::mem::take(&mut self.failed) {
            debug_assert_eq!(job, self.filed.len(), "failures are filed in job order");
            more = more && self.file(r, go_on);
        }
        more
    }
}

/// Runs `jobs` in order: `may_start(i)` before job i's build (false: it and
/// the rest are not started), `build` in the calling thread (Err: the job's
/// result without a boot), `boot` on a thread of its own, `go_on(i, r)` as
/// each result is filed (false: nothing after job i counts). Returns one
/// result per job that ran, in job order: a prefix of `jobs`.
pub fn run<J, I, R>(
    jobs: &[J],
    schedule: Schedule,
    mut may_start: impl FnMut(usize) -> bool,
    mut build: impl FnMut(usize, &J) -> Result<I, R>,
    boot: impl Fn(usize, &J, I) -> R + Sync,
    go_on: impl Fn(usize, &R) -> bool,
) -> Vec<Filed<R>>
where
    J: Sync,
    I: Send,
    R: Send,
{
    std::thread::scope(|scope| {
        let mut book = Book::new(jobs.len());
        let mut flight: Option<Flight<'_, R>> = None;
        for (i, job) in jobs.iter().enumerate() {
            if !may_start(i) {
                break;
            }
            let start = Instant::now();
            let built = build(i, job);
            if flight.is_some() {
                book.spans.push((i, start, Instant::now()));
            }
            match built {
                Err(r) if flight.is_some() => book.failed.push((i, r)),
                Err(r) => {
                    if !book.file(r, &go_on) {
                        break;
                    }
                }
                Ok(image) => {
                    if !book.land(&mut flight, &go_on) {
                        break;
                    }
                    flight = Some(launch(scope, &boot, i, job, image));
                    if schedule == Schedule::Sequential && !book.land(&mut flight, &go_on) {
                        break;
                    }
                }
            }
        }
        book.land(&mut flight, &go_on);
        book.filed
    })
}

/// Starts job `i`'s boot on a thread of its own.
fn launch<'scope, 'env, J, I, R>(
    scope: &'scope Scope<'scope, 'env>,
    boot: &'env (impl Fn(usize, &J, I) -> R + Sync),
    i: usize,
    job: &'env J,
    image: I,
) -> Flight<'scope, R>
where
    J: Sync,
    I: Send + 'env,
    R: Send + 'env,
{
    Flight {
        job: i,
        handle: scope.spawn(move || (boot(i, job, image), Instant::now())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Duration;

    /// What a fake stage did, in the order it happened.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ev {
        BuildStart(usize),
        BuildEnd(usize),
        BootStart(usize),
        BootEnd(usize),
    }

    /// A fake job: how long its stages take, whether its build fails, and
    /// whether its result stops the campaign.
    #[derive(Debug, Clone, Copy, Default)]
    struct Fake {
        build_ms: u64,
        boot_ms: u64,
        build_fails: bool,
        stops: bool,
    }

    fn job(build_ms: u64, boot_ms: u64) -> Fake {
        Fake {
            build_ms,
            boot_ms,
            ..Fake::default()
        }
    }

    /// Runs fakes through the scheduler; the events and the filed results
    /// (`"b3"` built and booted, `"f3"` failed to build).
    struct Trace {
        events: Vec<Ev>,
        filed: Vec<(String, f64)>,
        /// The image each boot got: the number its build wrote then.
        booted_images: Vec<(usize, usize)>,
    }

    fn trace(jobs: &[Fake], schedule: Schedule, start_limit: usize) -> Trace {
        let events = Mutex::new(Vec::new());
        let booted = Mutex::new(Vec::new());
        let log = |e: Ev| events.lock().unwrap().push(e);
        // What a build leaves in the (shared) build directory: the next
        // build overwrites it, the copy the boot gets must not change.
        let workdir = Mutex::new(usize::MAX);
        let filed = run(
            jobs,
            schedule,
            |i| i < start_limit,
            |i, j: &Fake| {
                log(Ev::BuildStart(i));
                *workdir.lock().unwrap() = i;
                std::thread::sleep(Duration::from_millis(j.build_ms));
                log(Ev::BuildEnd(i));
                if j.build_fails {
                    Err(format!("f{i}"))
                } else {
                    Ok(*workdir.lock().unwrap())
                }
            },
            |i, j: &Fake, image: usize| {
                log(Ev::BootStart(i));
                std::thread::sleep(Duration::from_millis(j.boot_ms));
                booted.lock().unwrap().push((i, image));
                log(Ev::BootEnd(i));
                format!("b{i}")
            },
            |i, _r: &String| !jobs[i].stops,
        );
        Trace {
            events: events.into_inner().unwrap(),
            filed: filed.into_iter().map(|f| (f.result, f.overlap_s)).collect(),
            booted_images: booted.into_inner().unwrap(),
        }
    }

    fn names(t: &Trace) -> Vec<&str> {
        t.filed.iter().map(|(r, _)| r.as_str()).collect()
    }

    fn pos(t: &Trace, e: Ev) -> usize {
        t.events
            .iter()
            .position(|x| *x == e)
            .unwrap_or_else(|| panic!("{e:?} never happened: {:?}", t.events))
    }

    /// At most one build and one boot at any time, each boot after its own
    /// build and after the previous boot.
    fn one_build_and_one_boot_at_a_time(t: &Trace) {
        let (mut building, mut booting) = (0, 0);
        let mut last_boot = None;
        for e in &t.events {
            match *e {
                Ev::BuildStart(_) => building += 1,
                Ev::BuildEnd(_) => building -= 1,
                Ev::BootStart(i) => {
                    booting += 1;
                    assert!(pos(t, Ev::BuildEnd(i)) < pos(t, Ev::BootStart(i)));
                    assert!(last_boot < Some(i), "boots in job order: {:?}", t.events);
                    last_boot = Some(i);
                }
                Ev::BootEnd(_) => booting -= 1,
            }
            assert!(building <= 1 && booting <= 1, "{:?}", t.events);
        }
    }

    #[test]
    fn pipelined_the_next_build_runs_while_the_current_job_boots() {
        let jobs = [job(5, 60), job(5, 60), job(5, 60), job(5, 60)];
        let t = trace(&jobs, Schedule::Pipelined, usize::MAX);
        one_build_and_one_boot_at_a_time(&t);
        assert_eq!(names(&t), ["b0", "b1", "b2", "b3"]);
        for i in 1..4 {
            assert!(
                pos(&t, Ev::BuildStart(i)) < pos(&t, Ev::BootEnd(i - 1)),
                "job {i} builds during job {}'s boot: {:?}",
                i - 1,
                t.events
            );
        }
        assert_eq!(t.filed[0].1, 0.0, "nothing boots beside the first build");
        for (r, overlap) in &t.filed[1..] {
            assert!(*overlap > 0.0, "{r}'s build overlapped a boot");
        }
        // Each boot got the image its own build made, though the next
        // build had overwritten the build directory by then.
        assert_eq!(t.booted_images, [(0, 0), (1, 1), (2, 2), (3, 3)]);
    }

    #[test]
    fn sequential_boots_each_job_before_the_next_build() {
        let jobs = [job(5, 20), job(5, 20), job(5, 20)];
        let t = trace(&jobs, Schedule::Sequential, usize::MAX);
        one_build_and_one_boot_at_a_time(&t);
        assert_eq!(names(&t), ["b0", "b1", "b2"]);
        for i in 1..3 {
            assert!(pos(&t, Ev::BootEnd(i - 1)) < pos(&t, Ev::BuildStart(i)));
        }
        assert!(t.filed.iter().all(|(_, o)| *o == 0.0), "no overlap");
    }

    #[test]
    fn a_failed_build_is_filed_in_job_order_and_the_next_build_goes_ahead() {
        let mut jobs = [job(5, 80), job(5, 0), job(5, 20), job(5, 20)];
        jobs[1].build_fails = true;
        let t = trace(&jobs, Schedule::Pipelined, usize::MAX);
        one_build_and_one_boot_at_a_time(&t);
        assert_eq!(names(&t), ["b0", "f1", "b2", "b3"]);
        assert!(
            !t.events.contains(&Ev::BootStart(1)),
            "no boot of a failed build"
        );
        // Job 1 failed during job 0's boot; job 2 built then too.
        assert!(pos(&t, Ev::BuildEnd(2)) < pos(&t, Ev::BootEnd(0)));
        assert!(t.filed[1].1 > 0.0 && t.filed[2].1 > 0.0);
    }

    #[test]
    fn a_result_that_stops_drops_every_later_job_built_or_not() {
        // The baseline boots slowly and fails; job 1 is built meanwhile and
        // never booted, job 2 never starts.
        let mut jobs = [job(5, 40), job(5, 5), job(5, 5)];
        jobs[0].stops = true;
        let t = trace(&jobs, Schedule::Pipelined, usize::MAX);
        assert_eq!(names(&t), ["b0"]);
        assert!(t.events.contains(&Ev::BuildEnd(1)));
        assert!(!t.events.contains(&Ev::BootStart(1)));
        assert!(!t.events.contains(&Ev::BuildStart(2)));

        // A failed baseline build stops before anything else starts.
        let mut jobs = [job(5, 5), job(5, 5)];
        jobs[0].build_fails = true;
        jobs[0].stops = true;
        for schedule in [Schedule::Pipelined, Schedule::Sequential] {
            let t = trace(&jobs, schedule, usize::MAX);
            assert_eq!(names(&t), ["f0"]);
            assert_eq!(t.events, [Ev::BuildStart(0), Ev::BuildEnd(0)]);
        }

        // A failure filed after the boot in flight can stop too, and the
        // boot in flight is still filed first.
        let mut jobs = [job(5, 40), job(5, 5), job(5, 5)];
        jobs[1].build_fails = true;
        jobs[1].stops = true;
        let t = trace(&jobs, Schedule::Pipelined, usize::MAX);
        assert_eq!(names(&t), ["b0", "f1"]);
        assert!(!t.events.contains(&Ev::BootStart(2)));
    }

    #[test]
    fn a_job_may_start_refused_is_not_built_and_the_boot_in_flight_lands() {
        let jobs = [job(5, 30), job(5, 30), job(5, 30), job(5, 30)];
        for schedule in [Schedule::Pipelined, Schedule::Sequential] {
            let t = trace(&jobs, schedule, 2);
            one_build_and_one_boot_at_a_time(&t);
            assert_eq!(names(&t), ["b0", "b1"], "{schedule:?}");
            assert!(!t.events.contains(&Ev::BuildStart(2)));
            assert_eq!(t.events.last(), Some(&Ev::BootEnd(1)));
        }
    }

    #[test]
    fn the_overlap_is_the_part_of_a_build_beside_a_boot() {
        // Job 1 builds for 400 ms beside job 0's 40 ms boot: about 40 ms of
        // it overlapped, the rest the campaign waited for.
        let jobs = [job(5, 40), job(400, 5)];
        let t = trace(&jobs, Schedule::Pipelined, usize::MAX);
        let overlap = t.filed[1].1;
        assert!(overlap > 0.030 && overlap < 0.350, "{overlap}");
    }
}
