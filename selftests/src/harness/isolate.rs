//! Run one case in a forked child with its own timeout.
//!
//! The child reports over a pipe, one record per line:
//! `D <diagnostic>` (streamed as it happens, so a hang still shows how far it
//! got) and finally `R PASS`, `R FAIL <why>` (more lines of it as `F <line>`)
//! or `R SKIP <why>`. The parent
//! waits on the pipe and a pidfd; on timeout it SIGKILLs the child's process
//! group. A child that dies without a result line (signal, abort, exit) is
//! reported with its wait status.

use std::os::unix::io::RawFd;
use std::time::{Duration, Instant};

use crate::kvm::errno_name;

/// Installs `handler` for `sig` without SA_RESTART, so that a system call
/// the signal interrupts returns EINTR (KVM_RUN, fallocate) instead of
/// being restarted. `handler` must be async-signal-safe.
pub fn catch_signal(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction with an empty mask is valid; the caller
    // promises the handler is async-signal-safe.
    let r = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = 0;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// What a case function returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Pass,
    Fail(String),
    Skip(String),
}

/// What the parent concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
    /// Killed after the timeout.
    TimedOut(Duration),
    /// Died without reporting (signal, abort, unexpected exit).
    Crashed(String),
}

#[derive(Debug)]
pub struct Isolated {
    pub diags: Vec<String>,
    pub outcome: Outcome,
}

/// Handle the case uses to stream diagnostics to the parent.
pub struct Reporter {
    fd: RawFd,
}

impl Reporter {
    pub fn diag(&self, text: &str) {
        for line in text.lines() {
            self.send(&format!("D {line}\n"));
        }
    }

    fn send(&self, rec: &str) {
        write_all(self.fd, rec.as_bytes());
    }

    fn finish(&self, end: &End) {
        let rec = match end {
            End::Pass => "R PASS\n".to_string(),
            End::Fail(m) => {
                // Multi-line failures: one `F` record per line after the first.
                let mut it = m.lines();
                let first = it.next().unwrap_or("failed").to_string();
                let mut rec = format!("R FAIL {first}\n");
                for l in it {
                    rec.push_str(&format!("F {l}\n"));
                }
                rec
            }
            End::Skip(m) => format!("R SKIP {}\n", m.replace('\n', " ")),
        };
        self.send(&rec);
    }
}

fn write_all(fd: RawFd, mut buf: &[u8]) {
    while !buf.is_empty() {
        // SAFETY: buf is a valid slice; fd is our pipe's write end.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return;
        }
        buf = &buf[n as usize..];
    }
}

pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGABRT => "SIGABRT",
        libc::SIGKILL => "SIGKILL",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTERM => "SIGTERM",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGTRAP => "SIGTRAP",
        _ => return format!("signal {sig}"),
    };
    format!("{name} ({sig})")
}

/// Describes a wait status of a child that ended without a result line.
pub fn describe_status(status: i32) -> String {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        let what = match sig {
            libc::SIGSEGV => "segmentation fault",
            libc::SIGBUS => "bus error",
            libc::SIGABRT => "abort",
            _ => "killed",
        };
        format!("child died: {what}, {}", signal_name(sig))
    } else if libc::WIFEXITED(status) {
        format!(
            "child exited with status {} without reporting a result",
            libc::WEXITSTATUS(status)
        )
    } else {
        format!("child ended with wait status {status:#x}")
    }
}

/// Parses the records received from a child. Returns diagnostics and the
/// result, if any.
pub fn parse_records(data: &[u8]) -> (Vec<String>, Option<End>) {
    let text = String::from_utf8_lossy(data);
    let mut diags = Vec::new();
    let mut end = None;
    for line in text.lines() {
        if let Some(d) = line.strip_prefix("D ") {
            diags.push(d.to_string());
        } else if line == "D" {
            diags.push(String::new());
        } else if line == "R PASS" {
            end = Some(End::Pass);
        } else if let Some(m) = line.strip_prefix("R FAIL ") {
            end = Some(End::Fail(m.to_string()));
        } else if let Some(more) = line.strip_prefix("F ") {
            if let Some(End::Fail(m)) = end.as_mut() {
                m.push('\n');
                m.push_str(more);
            }
        } else if let Some(m) = line.strip_prefix("R SKIP ") {
            end = Some(End::Skip(m.to_string()));
        } else if !line.is_empty() {
            diags.push(format!("(unparsed child output) {line}"));
        }
    }
    (diags, end)
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Forks; the child runs `child` and `_exit(0)`s, so it never returns into
/// the caller's code. The parent gets the child's pid, or fork's errno.
fn fork_child(child: impl FnOnce()) -> Result<libc::pid_t, i32> {
    // SAFETY: fork; the child only runs `child` and _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(errno());
    }
    if pid == 0 {
        child();
        // SAFETY: leave without running atexit handlers or flushing the
        // parent's inherited stdio buffers.
        unsafe { libc::_exit(0) };
    }
    Ok(pid)
}

/// Waits for the child `pid` (retrying on EINTR): its wait status, or
/// waitpid's errno.
fn wait_child(pid: libc::pid_t) -> Result<i32, i32> {
    let mut st = 0;
    loop {
        // SAFETY: st is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, 0) };
        if r == pid {
            return Ok(st);
        }
        let e = errno();
        if r < 0 && e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Runs `f` in a throwaway child and returns the signal that killed it, if
/// any (for "this access must SIGBUS").
pub fn dies_with_signal<F: FnOnce()>(f: F) -> Result<Option<i32>, String> {
    let pid = fork_child(|| {
        // The signal is expected: no core dump for it.
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
        f();
    })
    .map_err(|e| format!("fork: {}", errno_name(e)))?;
    let st = wait_child(pid).map_err(|e| format!("waitpid: {}", errno_name(e)))?;
    Ok(libc::WIFSIGNALED(st).then(|| libc::WTERMSIG(st)))
}

/// Runs `f` in a throwaway child that exits with the code `f` returns, and
/// waits at most `timeout` for it: `Some(code)` (-1 for a child a signal
/// killed), or `None` when it is still running (a system call stuck in the
/// kernel). A child that does not end is left behind (the runner kills the
/// case's process group); it holds copies of the caller's file descriptors.
pub fn exits_within<F: FnOnce() -> i32>(timeout: Duration, f: F) -> Result<Option<i32>, String> {
    let pid = fork_child(|| {
        let code = f();
        // SAFETY: leave the child at once, as fork_child would.
        unsafe { libc::_exit(code) };
    })
    .map_err(|e| format!("fork: {}", errno_name(e)))?;
    let deadline = Instant::now() + timeout;
    loop {
        let mut st = 0;
        // SAFETY: st is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Ok(Some(if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                -1
            }));
        }
        if r < 0 && errno() != libc::EINTR {
            return Err(format!("waitpid: {}", errno_name(errno())));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `f` in a forked child and waits at most `timeout` for it.
///
/// The caller must be single-threaded or accept the usual fork caveats: the
/// child only runs `f` and `_exit`s.
pub fn run_isolated<F>(timeout: Duration, f: F) -> Isolated
where
    F: FnOnce(&Reporter) -> End,
{
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();

    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Isolated {
            diags: vec![],
            outcome: Outcome::Crashed(format!("pipe2 failed: errno {}", errno())),
        };
    }
    let (rd, wr) = (fds[0], fds[1]);

    let child = || {
        // SAFETY: plain syscalls on our own process and fds.
        unsafe {
            libc::close(rd);
            libc::setpgid(0, 0);
        }
        let rep = Reporter { fd: wr };
        std::panic::set_hook(Box::new(move |info| {
            let r = Reporter { fd: wr };
            r.diag(&format!("panic: {info}"));
        }));
        let end = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&rep))) {
            Ok(end) => end,
            Err(p) => End::Fail(format!("case panicked: {}", panic_text(&*p))),
        };
        rep.finish(&end);
    };
    let pid = match fork_child(child) {
        Ok(pid) => pid,
        Err(e) => {
            // SAFETY: closing our own fds.
            unsafe {
                libc::close(rd);
                libc::close(wr);
            }
            return Isolated {
                diags: vec![],
                outcome: Outcome::Crashed(format!("fork failed: errno {e}")),
            };
        }
    };

    // Parent.
    // SAFETY: closing our copy of the write end; setpgid mirrors the child's
    // own call so the group exists before we might kill it.
    unsafe {
        libc::close(wr);
        libc::setpgid(pid, pid);
        let fl = libc::fcntl(rd, libc::F_GETFL);
        libc::fcntl(rd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    // SAFETY: pidfd_open(pid, 0) has no memory arguments.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;

    let start = Instant::now();
    let deadline = start + timeout;
    let mut data = Vec::new();
    let mut status: Option<i32> = None;
    let mut pipe_open = true;

    let drain = |data: &mut Vec<u8>| -> bool {
        let mut buf = [0u8; 4096];
        loop {
            // SAFETY: buf is valid for its length.
            let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                data.extend_from_slice(&buf[..n as usize]);
            } else if n == 0 {
                return false; // EOF
            } else {
                let e = errno();
                if e == libc::EINTR {
                    continue;
                }
                return true; // EAGAIN: still open
            }
        }
    };

    // Reap only after killing the group: while the child is a zombie its
    // pid (and so its process group id) cannot be reused.
    let try_reap = |status: &mut Option<i32>| {
        // SAFETY: info is a valid out buffer.
        let exited = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                && info.si_pid() == pid
        };
        if !exited {
            return;
        }
        // SAFETY: signalling our own (unreaped) child's group.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        if let Ok(st) = wait_child(pid) {
            *status = Some(st);
        }
    };

    let mut timed_out = false;
    while status.is_none() {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        let left = deadline - now;
        // Without a pidfd, poll the pipe in short slices and check waitpid.
        let slice = if pidfd >= 0 {
            left
        } else {
            left.min(Duration::from_millis(20))
        };
        let ms = slice.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut pfds = [
            libc::pollfd {
                fd: if pipe_open { rd } else { -1 },
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: pfds is a valid array of two pollfd.
        let r = unsafe { libc::poll(pfds.as_mut_ptr(), 2, ms) };
        if r < 0 && errno() != libc::EINTR {
            break;
        }
        if pipe_open && pfds[0].revents != 0 {
            pipe_open = drain(&mut data);
        }
        if pidfd < 0 || pfds[1].revents != 0 {
            try_reap(&mut status);
        }
    }

    if status.is_none() {
        // Timed out (or poll failed): kill the whole group, then reap.
        // SAFETY: signals to our (unreaped) child's group and the child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
            libc::kill(pid, libc::SIGKILL);
        }
        status = Some(wait_child(pid).unwrap_or(0));
    }
    if pipe_open {
        drain(&mut data);
    }
    // SAFETY: closing fds we own.
    unsafe {
        libc::close(rd);
        if pidfd >= 0 {
            libc::close(pidfd);
        }
    }

    let (diags, end) = parse_records(&data);
    let outcome = if timed_out {
        Outcome::TimedOut(timeout)
    } else {
        match end {
            Some(End::Pass) => Outcome::Pass,
            Some(End::Fail(m)) => Outcome::Fail(m),
            Some(End::Skip(m)) => Outcome::Skip(m),
            None => Outcome::Crashed(describe_status(status.unwrap_or(0))),
        }
    };
    Isolated { diags, outcome }
}

/// The suite forks from a single thread; libtest runs tests on many.
/// Unit tests that fork take this lock so no child inherits a lock (panic
/// hook, stdio) that another forking test held at fork time.
#[cfg(test)]
pub(crate) fn test_fork_lock() -> std::sync::MutexGuard<'static, ()> {
    static FORK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    FORK_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Test fixture: writes to a fresh PROT_NONE page, so the calling (forked)
/// process dies of SIGSEGV, without a core dump.
#[cfg(test)]
pub(crate) fn fault_on_prot_none_page() {
    // SAFETY: a fresh anonymous mapping with no access rights; the write
    // faults, which is the point of the callers.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        let p = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        std::ptr::write_volatile(p as *mut u8, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(20);

    fn serial() -> std::sync::MutexGuard<'static, ()> {
        test_fork_lock()
    }

    #[test]
    fn pass_with_diagnostics() {
        let _g = serial();
        let r = run_isolated(T, |rep| {
            rep.diag("first\nsecond");
            End::Pass
        });
        assert_eq!(r.outcome, Outcome::Pass);
        assert_eq!(r.diags, vec!["first".to_string(), "second".to_string()]);
    }

    #[test]
    fn fail_and_skip_are_carried() {
        let _g = serial();
        let r = run_isolated(T, |_| {
            End::Fail("expected EINVAL, got EBADF\ndetail".into())
        });
        assert_eq!(
            r.outcome,
            Outcome::Fail("expected EINVAL, got EBADF\ndetail".into())
        );
        assert!(r.diags.is_empty(), "{:?}", r.diags);
        let r = run_isolated(T, |_| End::Skip("no KVM_CAP_GUEST_MEMFD".into()));
        assert_eq!(r.outcome, Outcome::Skip("no KVM_CAP_GUEST_MEMFD".into()));
    }

    #[test]
    fn spinning_case_is_killed_and_reported() {
        let _g = serial();
        let start = Instant::now();
        let r = run_isolated(Duration::from_millis(300), |rep| {
            rep.diag("about to spin");
            loop {
                std::hint::spin_loop();
            }
        });
        assert_eq!(r.outcome, Outcome::TimedOut(Duration::from_millis(300)));
        assert_eq!(
            r.diags,
            vec!["about to spin".to_string()],
            "diagnostics before the hang survive"
        );
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn sleeping_grandchild_does_not_hold_the_parent() {
        let _g = serial();
        // A helper process left behind keeps the pipe open; the pidfd still
        // tells us the case ended, and the group kill reaps the straggler.
        let start = Instant::now();
        let r = run_isolated(T, |_| {
            // A fork in the (single-threaded) case child.
            fork_child(|| std::thread::sleep(Duration::from_secs(30))).expect("fork");
            End::Pass
        });
        assert_eq!(r.outcome, Outcome::Pass);
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn segfault_is_reported() {
        let _g = serial();
        let r = run_isolated(T, |rep| {
            rep.diag("touching a PROT_NONE page");
            fault_on_prot_none_page();
            End::Pass
        });
        match &r.outcome {
            Outcome::Crashed(m) => assert!(m.contains("SIGSEGV"), "{m}"),
            o => panic!("expected a crash, got {o:?}"),
        }
        assert_eq!(r.diags, vec!["touching a PROT_NONE page".to_string()]);
    }

    #[test]
    fn panic_is_a_failure_with_its_message() {
        let _g = serial();
        let r = run_isolated(T, |_| panic!("boom {}", 42));
        match &r.outcome {
            Outcome::Fail(m) => assert!(m.contains("boom 42"), "{m}"),
            o => panic!("expected a failure, got {o:?}"),
        }
        let all = r.diags.join("\n");
        assert!(
            all.contains("panicked at") && all.contains("boom 42"),
            "{all}"
        );
    }

    #[test]
    fn exit_without_result_is_a_crash() {
        let _g = serial();
        let r = run_isolated(T, |_| unsafe { libc::_exit(3) });
        match &r.outcome {
            Outcome::Crashed(m) => assert!(m.contains("status 3"), "{m}"),
            o => panic!("expected a crash, got {o:?}"),
        }
    }

    #[test]
    fn record_parser() {
        let (d, e) = parse_records(b"D a\nD\ngarbage\nR SKIP why not\n");
        assert_eq!(
            d,
            vec![
                "a".to_string(),
                String::new(),
                "(unparsed child output) garbage".to_string()
            ]
        );
        assert_eq!(e, Some(End::Skip("why not".into())));
        let (_, e) = parse_records(b"D only\n");
        assert_eq!(e, None);
    }
}
