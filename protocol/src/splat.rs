//! Which kernel log message starts a splat.
//!
//! Anchored at the start of the message (timestamps and `<N>` levels already
//! stripped): the kernel's reporting functions begin their headline with the
//! keyword (`WARNING: CPU: 0 PID: 1 at ...` from `__warn()`, `BUG: KASAN:
//! ...`, `Oops: ...`), while benign messages carry the same words after a
//! subsystem prefix (`Spectre V2 : WARNING: Unprivileged eBPF is enabled
//! ...`, `MDS: WARNING: SMT on ...`) or in other shapes (the deprecation
//! notice `WARNING: The mand mount option ...`, an audit record quoting
//! `BUG:`). Lines that only accompany a report (`DEBUG_LOCKS_WARN_ON(...)`,
//! `INFO: lockdep is turned off.`) are not headlines of their own: the
//! report they belong to has one.

/// The kind of report a headline starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SplatKind {
    Warning,
    Bug,
    Kasan,
    Ubsan,
    Lockdep,
    GeneralProtectionFault,
    Oops,
    RcuStall,
    HungTask,
    SoftLockup,
    Panic,
}

impl SplatKind {
    pub const ALL: [SplatKind; 11] = [
        SplatKind::Warning,
        SplatKind::Bug,
        SplatKind::Kasan,
        SplatKind::Ubsan,
        SplatKind::Lockdep,
        SplatKind::GeneralProtectionFault,
        SplatKind::Oops,
        SplatKind::RcuStall,
        SplatKind::HungTask,
        SplatKind::SoftLockup,
        SplatKind::Panic,
    ];

    /// The snake_case name used in results files.
    pub fn name(self) -> &'static str {
        match self {
            SplatKind::Warning => "warning",
            SplatKind::Bug => "bug",
            SplatKind::Kasan => "kasan",
            SplatKind::Ubsan => "ubsan",
            SplatKind::Lockdep => "lockdep",
            SplatKind::GeneralProtectionFault => "general_protection_fault",
            SplatKind::Oops => "oops",
            SplatKind::RcuStall => "rcu_stall",
            SplatKind::HungTask => "hung_task",
            SplatKind::SoftLockup => "soft_lockup",
            SplatKind::Panic => "panic",
        }
    }

    pub fn from_name(name: &str) -> Option<SplatKind> {
        SplatKind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What lockdep prints after `WARNING: ` (kernel/locking/lockdep.c and
/// lockdep's RCU checks), as prefixes.
const LOCKDEP_PREFIXES: &[&str] = &[
    "possible circular ",
    "possible recursive ",
    "possible irq lock inversion ",
    "inconsistent lock state",
    "bad unlock balance",
    "suspicious RCU usage",
    "held lock freed",
    "lock held when",
    "lock held at",
    "bad contention detected",
    "Nested lock was not taken",
    "possible deadlock",
];

/// Classifies one kernel log message; `None` when it does not start a splat.
/// The suite's own lines in the log ([`crate::kmsg::MARKER`]) never count,
/// whatever a case name contains.
pub fn classify(msg: &str) -> Option<SplatKind> {
    let msg = msg.trim_end();
    if msg.starts_with(crate::kmsg::MARKER) {
        return None;
    }
    if let Some(rest) = msg.strip_prefix("WARNING: ") {
        if is_lockdep(rest) {
            return Some(SplatKind::Lockdep);
        }
        if is_warn_location(rest) {
            return Some(SplatKind::Warning);
        }
    }
    if let Some(rest) = strip_bug(msg) {
        if rest.starts_with("KASAN:") {
            return Some(SplatKind::Kasan);
        }
        if rest.contains("soft lockup") {
            return Some(SplatKind::SoftLockup);
        }
        return Some(SplatKind::Bug);
    }
    let starts = |p: &str| msg.starts_with(p);
    if starts("kernel BUG at ") {
        Some(SplatKind::Bug)
    } else if starts("KASAN: ") {
        Some(SplatKind::Kasan)
    } else if starts("UBSAN: ") {
        Some(SplatKind::Ubsan)
    } else if starts("general protection fault") {
        Some(SplatKind::GeneralProtectionFault)
    } else if starts("Oops: ") || starts("Oops#") {
        Some(SplatKind::Oops)
    } else if is_rcu_stall(msg) {
        Some(SplatKind::RcuStall)
    } else if starts("INFO: task ") && msg.contains(" blocked for more than ") {
        Some(SplatKind::HungTask)
    } else if starts("Watchdog detected hard LOCKUP")
        || starts("NMI watchdog: Watchdog detected hard LOCKUP")
    {
        Some(SplatKind::SoftLockup)
    } else if starts("Kernel panic - not syncing") {
        Some(SplatKind::Panic)
    } else {
        None
    }
}

/// `WARNING: ` followed by lockdep's headline shapes.
fn is_lockdep(rest: &str) -> bool {
    if LOCKDEP_PREFIXES.iter().any(|p| rest.starts_with(p)) {
        return true;
    }
    let (first, after) = rest.split_once(' ').unwrap_or((rest, ""));
    // `WARNING: <class> lock order detected`
    if !first.is_empty() && after.starts_with("lock order detected") {
        return true;
    }
    // `WARNING: comm/pid still has locks held!`
    if after.starts_with("still has locks held") {
        if let Some((comm, pid)) = first.rsplit_once('/') {
            if !comm.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) {
                return true;
            }
        }
    }
    // `WARNING: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected`
    if let Some(i) = rest.find("-safe -> ") {
        return rest[i..].contains("-unsafe lock order detected");
    }
    false
}

/// `WARNING: CPU: N PID: N at ...` (`__warn()`) or `WARNING: at ...`.
fn is_warn_location(rest: &str) -> bool {
    if rest.starts_with("at ") {
        return true;
    }
    let number_then = |s: &str, then: &str| -> Option<usize> {
        let digits = s.bytes().take_while(u8::is_ascii_digit).count();
        (digits > 0 && s[digits..].starts_with(then)).then_some(digits + then.len())
    };
    let Some(r) = rest.strip_prefix("CPU: ") else {
        return false;
    };
    let Some(n) = number_then(r, " PID: ") else {
        return false;
    };
    number_then(&r[n..], " at ").is_some()
}

/// The text after `BUG: ` when the message is `BUG: ...` or `subsys: BUG:
/// ...` (`watchdog: BUG: soft lockup`), the subsystem one word of
/// `[A-Za-z0-9_./-]`.
fn strip_bug(msg: &str) -> Option<&str> {
    if let Some(rest) = msg.strip_prefix("BUG: ") {
        return Some(rest);
    }
    let (subsys, rest) = msg.split_once(": ")?;
    let word = |b: u8| b.is_ascii_alphanumeric() || b"_./-".contains(&b);
    if subsys.is_empty() || !subsys.bytes().all(word) {
        return None;
    }
    rest.strip_prefix("BUG: ")
}

/// `[rcu: ]INFO: rcu_<flavour> [self-]detected stall(s)...`.
fn is_rcu_stall(msg: &str) -> bool {
    let m = msg.strip_prefix("rcu: ").unwrap_or(msg);
    let Some(r) = m.strip_prefix("INFO: rcu_") else {
        return false;
    };
    let flavour = r
        .bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count();
    let Some(r) = r[flavour..].strip_prefix(' ') else {
        return false;
    };
    flavour > 0
        && r.strip_prefix("self-")
            .unwrap_or(r)
            .starts_with("detected stall")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(msg: &str) -> Option<SplatKind> {
        classify(msg)
    }

    /// Headlines as 6.1, 6.12 and 6.18 print them (from guest logs and the
    /// xtask fixtures), each with the kind it must get.
    #[test]
    fn real_headlines_are_splats() {
        use SplatKind::*;
        for (line, want) in [
            ("WARNING: CPU: 1 PID: 42 at virt/kvm/kvm_main.c:1331 kvm_destroy_vm+0x1f0/0x200", Warning),
            ("WARNING: CPU: 0 PID: 9 at virt/kvm/kvm_main.c:1335 kvm_destroy_vm+0x2c4/0x2d0", Warning),
            ("WARNING: at mm/slub.c:123 foo+0x1/0x2", Warning),
            ("WARNING: possible circular locking dependency detected", Lockdep),
            ("WARNING: possible recursive locking detected", Lockdep),
            ("WARNING: inconsistent lock state", Lockdep),
            ("WARNING: suspicious RCU usage", Lockdep),
            ("WARNING: bad unlock balance detected!", Lockdep),
            ("WARNING: held lock freed!", Lockdep),
            ("WARNING: lock held when returning to user space!", Lockdep),
            ("WARNING: SOFTIRQ-safe -> SOFTIRQ-unsafe lock order detected", Lockdep),
            ("WARNING: HARDIRQ-READ-safe -> HARDIRQ-unsafe lock order detected", Lockdep),
            ("WARNING: kworker/0:1/23 still has locks held!", Lockdep),
            ("WARNING: possible irq lock inversion dependency detected", Lockdep),
            ("BUG: unable to handle page fault for address: ffffc90000a3e000", Bug),
            ("BUG: sleeping function called from invalid context at mm/slab.h:742", Bug),
            ("BUG: KASAN: slab-use-after-free in kvm_gmem_release+0x1c/0x1a0", Kasan),
            ("BUG: KASAN: use-after-free in kvm_gmem_invalidate_begin+0x3a/0x100", Kasan),
            ("watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [gmem-selftests:310]", SoftLockup),
            ("kernel BUG at mm/filemap.c:1500!", Bug),
            ("UBSAN: shift-out-of-bounds in arch/x86/kvm/mmu/mmu.c:3120:14", Ubsan),
            ("general protection fault, probably for non-canonical address 0xdffffc0000000001: 0000 [#1] PREEMPT SMP KASAN", GeneralProtectionFault),
            ("Oops: general protection fault, probably for non-canonical address 0x1: 0000 [#1] SMP", Oops),
            ("Oops: 0000 [#1] SMP", Oops),
            ("rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", RcuStall),
            ("rcu: INFO: rcu_sched self-detected stall on CPU", RcuStall),
            ("INFO: rcu_sched detected stalls on CPUs/tasks:", RcuStall),
            ("INFO: task gmem-selftests:312 blocked for more than 120 seconds.", HungTask),
            ("NMI watchdog: Watchdog detected hard LOCKUP on cpu 1", SoftLockup),
            ("Kernel panic - not syncing: Fatal exception", Panic),
        ] {
            assert_eq!(kind(line), Some(want), "{line}");
        }
    }

    /// Benign lines from real boots that mention the words: the substring
    /// matching the selftests used before failed cases on some of them.
    #[test]
    fn benign_lines_are_not_splats() {
        for line in [
            "Spectre V2 : WARNING: Unprivileged eBPF is enabled with eIBRS on, data leaks possible via Spectre v2 BHB attacks!",
            "MDS: WARNING: SMT on, data leak possible.",
            "WARNING: The mand mount option has been deprecated and",
            "kvm: WARNING: something",
            "audit: type=1400 audit(0.140:2): apparmor=\"STATUS\" info=\"BUG: not really\"",
            "gmem-selftests: begin bug.regression_name_with_BUG@default",
            "gmem-selftests: WARNING: this is a userspace line mentioning BUG: and Oops: in text",
            "gmem-selftests: BUG: a case name",
            "gmem-selftests: begin bug.WARNING:",
            "Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar",
            "rcu: Hierarchical RCU implementation.",
            "kasan: KernelAddressSanitizer initialized (generic)",
            "ACPI Warning: SystemIO range 0x0000000000000B00-0x0000000000000B08 conflicts with OpRegion",
            "EXT4-fs warning (device vda): ext4_end_bio:343: I/O error 10 writing to inode 12",
            "kvm: exiting hardware virtualization",
            "WARNING: CPU: x PID: 1 at foo",
            "INFO: rcu_ detected stalls",
            "",
        ] {
            assert_eq!(kind(line), None, "{line}");
        }
    }

    /// Lines that only accompany a report: the report's own headline is
    /// what counts.
    #[test]
    fn report_bodies_are_not_headlines() {
        for line in [
            "DEBUG_LOCKS_WARN_ON(1)",
            "INFO: lockdep is turned off.",
            "------------[ cut here ]------------",
            "Call Trace:",
            "---[ end trace 0000000000000000 ]---",
        ] {
            assert_eq!(kind(line), None, "{line}");
        }
    }

    #[test]
    fn names_round_trip() {
        for k in SplatKind::ALL {
            assert_eq!(SplatKind::from_name(k.name()), Some(k));
        }
        assert_eq!(SplatKind::from_name("nope"), None);
    }
}
