//! Kconfig fragments under kconfigs/: merge in order (later wins) and check
//! which requested options survived olddefconfig. (Issue #3.)
