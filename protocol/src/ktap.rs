//! The KTAP v1 lines the suite prints beyond the standard ones, as the text
//! after `# ` (see `selftests/README.md`, "Output").

/// First line of the stream.
pub const VERSION_LINE: &str = "KTAP version 1";
/// `# begin NAME`: a case is about to run (names the culprit when the
/// stream stops mid-case).
pub const BEGIN: &str = "begin ";
/// `# time NAME MS`: a case's wall time.
pub const TIME: &str = "time ";
/// `# area-time AREA MS`: one area's wall time.
pub const AREA_TIME: &str = "area-time ";
/// `# suite-time MS`: the whole run's wall time.
pub const SUITE_TIME: &str = "suite-time ";
/// `# totals: pass P fail F skip S`.
pub const TOTALS: &str = "totals:";
/// `# caps SCOPE KVM_CAP_X=V ...` or `# caps SCOPE unavailable`.
pub const CAPS: &str = "caps ";
/// The word of a `# caps` line for a VM type that cannot be created.
pub const CAPS_UNAVAILABLE: &str = "unavailable";
/// `# kmsg: LINE`: a kernel log line that failed the case.
pub const KMSG: &str = "kmsg: ";
/// `# FAIL: why`: the reason a case failed.
pub const FAIL: &str = "FAIL: ";
/// A skip reason starts with `lacks TOKEN: ` (what is missing, for
/// programs), then the explanation.
pub const LACKS: &str = "lacks ";
/// Skip tokens other than `KVM_CAP_X[&MASK]` and `/dev/kvm` start with one
/// of these: a VM type, something outside KVM, a boot-time parameter, a
/// number of guest NUMA nodes, a module parameter writable at run time, a
/// newer kernel, a kernel config option.
pub const LACK_VM_TYPE: &str = "vm_type=";
pub const LACK_ENV: &str = "env=";
pub const LACK_BOOT: &str = "boot=";
pub const LACK_NUMA: &str = "numa=";
/// A module parameter root can change at run time (`param=kvm.tdp_mmu`):
/// a kernel that makes it read-only has nothing for the case to race.
pub const LACK_PARAM: &str = "param=";
/// A kernel of at least this version (`version>=6.19`): what the case
/// checks arrived then and no capability announces it.
pub const LACK_VERSION: &str = "version>=";
/// A kernel built with this option (`config=CONFIG_KVM_SMM`): the case
/// tests what the option adds.
pub const LACK_CONFIG: &str = "config=";

/// `lacks TOKEN: why`, the one way a skip reason is written.
pub fn skip_reason(token: &str, why: &str) -> String {
    format!("{LACKS}{token}: {why}")
}

/// The token and the explanation of a `lacks TOKEN: why` skip reason.
pub fn split_skip_reason(reason: &str) -> Option<(&str, &str)> {
    let rest = reason.strip_prefix(LACKS)?;
    match rest.split_once(": ") {
        Some((token, why)) => Some((token, why)),
        None => Some((rest, "")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skip_reasons_round_trip() {
        let r = skip_reason("vm_type=sw_protected", "no sw_protected VM: EINVAL");
        assert_eq!(r, "lacks vm_type=sw_protected: no sw_protected VM: EINVAL");
        assert_eq!(
            split_skip_reason(&r),
            Some(("vm_type=sw_protected", "no sw_protected VM: EINVAL"))
        );
        assert_eq!(split_skip_reason("lacks /dev/kvm"), Some(("/dev/kvm", "")));
        assert_eq!(split_skip_reason("free text"), None);
    }
}
