//! Transparent huge pages, for the case that asks which page size KVM maps
//! a THP-backed memslot with: whether the kernel has THP, and whether a
//! mapping is backed by a huge page.

/// The THP mode sysfs file; absent without CONFIG_TRANSPARENT_HUGEPAGE.
pub const ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// The selected THP mode (`always`, `madvise`, `never`), `None` when the
/// kernel has no THP.
pub fn mode() -> Option<String> {
    let text = std::fs::read_to_string(ENABLED).ok()?;
    selected(&text).map(str::to_string)
}

/// The bracketed word of a sysfs choice list (`always [madvise] never`).
fn selected(text: &str) -> Option<&str> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

/// `AnonHugePages` of the mapping that contains `addr`, in KiB, from
/// /proc/self/smaps.
pub fn anon_huge_kib(addr: u64) -> Result<u64, String> {
    let text = std::fs::read_to_string("/proc/self/smaps")
        .map_err(|e| format!("read /proc/self/smaps: {e}"))?;
    smaps_field_kib(&text, addr, "AnonHugePages")
        .ok_or_else(|| format!("/proc/self/smaps: no AnonHugePages for a mapping at {addr:#x}"))
}

/// `field:  N kB` of the smaps entry whose range holds `addr`.
fn smaps_field_kib(text: &str, addr: u64, field: &str) -> Option<u64> {
    let mut inside = false;
    for line in text.lines() {
        // An entry starts with `start-end perms offset dev inode [path]`.
        if let Some((start, end)) = line
            .split_whitespace()
            .next()
            .and_then(|r| r.split_once('-'))
            .and_then(|(a, b)| {
                Some((
                    u64::from_str_radix(a, 16).ok()?,
                    u64::from_str_radix(b, 16).ok()?,
                ))
            })
        {
            inside = (start..end).contains(&addr);
            continue;
        }
        if inside {
            if let Some(rest) = line.strip_prefix(field).and_then(|r| r.strip_prefix(':')) {
                return rest.trim().strip_suffix("kB")?.trim().parse().ok();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selected_mode() {
        assert_eq!(selected("always [madvise] never\n"), Some("madvise"));
        assert_eq!(selected("[always] madvise never"), Some("always"));
        assert_eq!(selected("always madvise never"), None);
    }

    #[test]
    fn smaps_entry_of_an_address() {
        let text = "\
7f0000000000-7f0000200000 rw-p 00000000 00:00 0
Size:               2048 kB
AnonHugePages:         0 kB
7f0000200000-7f0000400000 rw-p 00000000 00:00 0
Size:               2048 kB
AnonHugePages:      2048 kB
VmFlags: rd wr mr mw me ac hg
";
        assert_eq!(
            smaps_field_kib(text, 0x7f00_0000_0000, "AnonHugePages"),
            Some(0)
        );
        assert_eq!(
            smaps_field_kib(text, 0x7f00_0020_0000, "AnonHugePages"),
            Some(2048)
        );
        assert_eq!(
            smaps_field_kib(text, 0x7f00_003f_ffff, "AnonHugePages"),
            Some(2048)
        );
        assert_eq!(
            smaps_field_kib(text, 0x7f00_0040_0000, "AnonHugePages"),
            None
        );
    }
}
