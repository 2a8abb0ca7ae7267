//! The bits of `/proc/sys/kernel/tainted`, as `taint_flags[]` in
//! kernel/panic.c lists them (include/linux/panic.h numbers them).
//!
//! 6.1 and 6.12 define bits 0-18 (`TAINT_FLAGS_COUNT` 19); 6.15 added bit 19
//! (`TAINT_FWCTL`, letter J), which 6.18 has. A bit this table does not know
//! is still reported, by number.

/// One taint flag: its bit, its letter in `Tainted:` lines, what it means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaintFlag {
    pub bit: u32,
    pub letter: char,
    pub meaning: &'static str,
}

const fn flag(bit: u32, letter: char, meaning: &'static str) -> TaintFlag {
    TaintFlag {
        bit,
        letter,
        meaning,
    }
}

/// Every bit 6.1 to 6.18 define, in bit order.
pub const FLAGS: [TaintFlag; 20] = [
    flag(0, 'P', "proprietary module"),
    flag(1, 'F', "forced module load"),
    flag(2, 'S', "CPU out of spec"),
    flag(3, 'R', "forced module unload"),
    flag(4, 'M', "machine check"),
    flag(5, 'B', "bad page"),
    flag(6, 'U', "user request"),
    flag(7, 'D', "kernel died (oops/BUG)"),
    flag(8, 'A', "ACPI table overridden"),
    flag(9, 'W', "kernel warning"),
    flag(10, 'C', "staging driver"),
    flag(11, 'I', "firmware workaround"),
    flag(12, 'O', "out-of-tree module"),
    flag(13, 'E', "unsigned module"),
    flag(14, 'L', "soft lockup"),
    flag(15, 'K', "live patched"),
    flag(16, 'X', "auxiliary"),
    flag(17, 'T', "randstruct"),
    flag(18, 'N', "test module"),
    flag(19, 'J', "fwctl"),
];

/// `TAINT_WARN`: what a WARN raises.
pub const WARN_BIT: u32 = 9;

/// The flag of `bit`, when the table knows it.
pub fn flag_of(bit: u32) -> Option<&'static TaintFlag> {
    FLAGS.get(bit as usize)
}

/// `L meaning` for a known bit, `unknown` otherwise.
pub fn describe_bit(bit: u32) -> String {
    match flag_of(bit) {
        Some(f) => format!("{} {}", f.letter, f.meaning),
        None => "unknown".to_string(),
    }
}

/// The bits set in `value`, lowest first.
pub fn bits(value: u64) -> impl Iterator<Item = u32> {
    (0..64).filter(move |b| value & (1u64 << b) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_in_bit_order_with_distinct_letters() {
        for (i, f) in FLAGS.iter().enumerate() {
            assert_eq!(f.bit as usize, i);
        }
        let mut letters: Vec<char> = FLAGS.iter().map(|f| f.letter).collect();
        letters.sort_unstable();
        letters.dedup();
        assert_eq!(letters.len(), FLAGS.len());
        assert_eq!(flag_of(WARN_BIT).map(|f| f.letter), Some('W'));
    }

    #[test]
    fn bits_and_descriptions() {
        assert_eq!(bits(0).count(), 0);
        assert_eq!(bits(512 | 128).collect::<Vec<_>>(), vec![7, 9]);
        assert_eq!(describe_bit(9), "W kernel warning");
        assert_eq!(describe_bit(19), "J fwctl");
        assert_eq!(describe_bit(20), "unknown");
    }
}
