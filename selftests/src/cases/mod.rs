//! The case table: every case, in run order, grouped by area.

use crate::harness::case::Case;

pub mod bind;
pub mod caps;
pub mod conversions;
pub mod create;
pub mod fallocate;
pub mod guest;
pub mod hugepage;
pub mod inode;
pub mod memslot;
pub mod mm;
pub mod mmap;
pub mod multislot;
pub mod pageops;
pub mod punch;
pub mod regression;
pub mod stress;
pub mod vcpu;
pub mod vmtype;

/// All cases in run order.
pub fn all() -> Vec<&'static Case> {
    [
        caps::CASES,
        create::CASES,
        fallocate::CASES,
        mmap::CASES,
        bind::CASES,
        memslot::CASES,
        vmtype::CASES,
        inode::CASES,
        punch::CASES,
        vcpu::CASES,
        conversions::CASES,
        multislot::CASES,
        hugepage::CASES,
        regression::CASES,
        stress::CASES,
        mm::CASES,
    ]
    .iter()
    .flat_map(|c| c.iter())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kvm::VmType;

    #[test]
    fn names_are_unique_and_protocol_clean() {
        let mut seen = std::collections::HashSet::new();
        for c in all() {
            for t in VmType::ALL {
                let n = c.full_name(t);
                assert!(!n.contains('#') && !n.contains(' '), "{n}");
                assert!(n.starts_with(&format!("{}.", c.area)), "{n}");
                assert!(seen.insert(n.clone()), "duplicate {n}");
            }
        }
    }

    #[test]
    fn every_area_of_the_issue_is_covered() {
        let areas: std::collections::HashSet<_> = all().iter().map(|c| c.area).collect();
        for a in [
            "create",
            "fallocate",
            "mmap",
            "bind",
            "punch",
            "vcpu",
            "conversions",
            "multislot",
            "regression",
            "stress",
        ] {
            assert!(areas.contains(a), "{a}");
        }
    }
}
