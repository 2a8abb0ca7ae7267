//! What a kernel is meant to report (`patches/<series>.expect.toml`), and
//! the two checks built on it: the suite's `# caps` report must match, and a
//! `# SKIP` must name something that kernel lacks.
//!
//! A skip reason starts with `lacks TOKEN: ` (written by the selftests'
//! `caps::Lack`; selftests/README.md, "Skips"): `/dev/kvm`, `vm_type=NAME`,
//! `KVM_CAP_X`, `KVM_CAP_X&0xMASK`, `env=WHAT`, `boot=PARAM=VALUE`, `numa=N`,
//! `param=MODULE.NAME`, `version>=M.N`, `config=CONFIG_X`, or alternatives
//! joined by `|`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use protocol::ktap;
use serde::Deserialize;

use super::Ktap;

/// One kind of kernel (`series`, `upstream-6.12`): see the file's header.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelExpect {
    /// The table's name in the file (filled in by [`Expectations::load`]).
    #[serde(skip)]
    pub kind: String,
    pub description: String,
    /// Fragments a build must include for the table to apply.
    #[serde(default)]
    pub fragments: Vec<String>,
    pub vm_types: Vec<String>,
    pub system: BTreeMap<String, i64>,
    pub vm: BTreeMap<String, BTreeMap<String, i64>>,
    /// Module parameters root can change at run time on this kernel
    /// (`module.name`); a case that needs one to race against may skip
    /// only where it is not listed.
    #[serde(default)]
    pub writable_params: Vec<String>,
    /// The kernel's MAJOR.MINOR: a case that needs a newer kernel (`lacks
    /// version>=M.N`) may skip only where this is older.
    pub version: KernelVersion,
    /// Config options the kernel is built without (`CONFIG_X`): a case
    /// that needs one (`lacks config=CONFIG_X`) may skip only for these.
    #[serde(default)]
    pub configs_off: Vec<String>,
}

/// A kernel's MAJOR.MINOR, ordered as versions are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::str::FromStr for KernelVersion {
    type Err = String;

    fn from_str(text: &str) -> Result<KernelVersion, String> {
        let parsed = text
            .split_once('.')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)));
        match parsed {
            Some((major, minor)) => Ok(KernelVersion { major, minor }),
            None => Err(format!(
                "`{text}` is not a kernel version MAJOR.MINOR (e.g. 6.18)"
            )),
        }
    }
}

impl TryFrom<String> for KernelVersion {
    type Error = String;

    fn try_from(text: String) -> Result<KernelVersion, String> {
        text.parse()
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Every table of an expectation file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    pub path: PathBuf,
    pub kinds: BTreeMap<String, KernelExpect>,
}

/// The expectation file of series `name` under `patches_dir`.
pub fn path_for(patches_dir: &Path, name: &str) -> PathBuf {
    patches_dir.join(format!("{name}.expect.toml"))
}

impl Expectations {
    pub fn load(path: &Path) -> Result<Expectations> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the expected capabilities {}", path.display()))?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Expectations> {
        let mut kinds: BTreeMap<String, KernelExpect> = toml::from_str(text)
            .with_context(|| format!("{}: not a valid expectation file", path.display()))?;
        for (kind, e) in kinds.iter_mut() {
            e.kind = kind.clone();
            let here = || format!("{}: [{kind}]", path.display());
            for t in e.vm.keys() {
                if !e.vm_types.contains(t) {
                    bail!(
                        "{}: [vm.{t}] is not in vm_types {:?}: add it there or drop the table",
                        here(),
                        e.vm_types
                    );
                }
            }
            for t in &e.vm_types {
                if !e.vm.contains_key(t) {
                    bail!("{}: vm_types lists `{t}` but there is no [{kind}.vm.{t}] table of its capabilities", here());
                }
            }
            let all_caps = e.system.keys().chain(e.vm.values().flat_map(|m| m.keys()));
            for cap in all_caps {
                if !cap.starts_with("KVM_CAP_") {
                    bail!("{}: `{cap}` is not a capability name (KVM_CAP_...)", here());
                }
            }
        }
        if kinds.is_empty() {
            bail!("{}: no kernel table (e.g. [series])", path.display());
        }
        Ok(Expectations {
            path: path.to_path_buf(),
            kinds,
        })
    }

    /// The table for `kind` when a build from `fragments` meets its
    /// requirements; None when the file has no such table or the build
    /// lacks a fragment the table needs.
    pub fn for_build(&self, kind: &str, fragments: &[String]) -> Option<&KernelExpect> {
        self.kinds
            .get(kind)
            .filter(|e| e.fragments.iter().all(|f| fragments.contains(f)))
    }
}

/// One alternative of a skip's `lacks` token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lack {
    Kvm,
    VmType(String),
    Cap(String),
    Bits(String, u64),
    Env(String),
    /// A boot parameter the run was not given (`boot=PARAM=VALUE`).
    Boot(String),
    /// A guest with this many NUMA nodes (`numa=N`).
    Numa(u32),
    /// A module parameter writable at run time (`param=module.name`).
    Param(String),
    /// A kernel of at least this version (`version>=M.N`).
    Version(KernelVersion),
    /// A kernel built with this option (`config=CONFIG_X`).
    Config(String),
    /// A token of no known shape.
    Unknown(String),
}

/// The alternatives a skip reason says are missing, or None when the
/// reason does not start with `lacks TOKEN: `.
pub fn parse_lacks(reason: &str) -> Option<Vec<Lack>> {
    let (token, _why) = ktap::split_skip_reason(reason)?;
    Some(
        token
            .split('|')
            .map(|t| {
                if t == "/dev/kvm" {
                    Lack::Kvm
                } else if let Some(v) = t.strip_prefix(ktap::LACK_VM_TYPE) {
                    Lack::VmType(v.into())
                } else if let Some(v) = t.strip_prefix(ktap::LACK_ENV) {
                    Lack::Env(v.into())
                } else if let Some(v) = t.strip_prefix(ktap::LACK_BOOT) {
                    Lack::Boot(v.into())
                } else if let Some(v) = t.strip_prefix(ktap::LACK_NUMA) {
                    v.parse().map_or(Lack::Unknown(t.into()), Lack::Numa)
                } else if let Some(v) = t.strip_prefix(ktap::LACK_PARAM) {
                    Lack::Param(v.into())
                } else if let Some(v) = t.strip_prefix(ktap::LACK_VERSION) {
                    v.parse().map_or(Lack::Unknown(t.into()), Lack::Version)
                } else if let Some(v) = t.strip_prefix(ktap::LACK_CONFIG) {
                    match v.starts_with("CONFIG_") {
                        true => Lack::Config(v.into()),
                        false => Lack::Unknown(t.into()),
                    }
                } else if let Some((cap, mask)) = t.split_once('&') {
                    match mask
                        .strip_prefix("0x")
                        .and_then(|m| u64::from_str_radix(m, 16).ok())
                    {
                        Some(m) if cap.starts_with("KVM_CAP_") => Lack::Bits(cap.into(), m),
                        _ => Lack::Unknown(t.into()),
                    }
                } else if t.starts_with("KVM_CAP_") {
                    Lack::Cap(t.into())
                } else {
                    Lack::Unknown(t.into())
                }
            })
            .collect(),
    )
}

impl KernelExpect {
    /// Why a case on `vm_type` must not skip for `reason` on this kernel,
    /// in a guest given `numa_nodes` NUMA nodes (`--numa N`; None: one);
    /// None when the skip is one this kernel is meant to have.
    pub fn unexpected_skip(
        &self,
        vm_type: &str,
        reason: &str,
        numa_nodes: Option<u32>,
    ) -> Option<String> {
        let Some(lacks) = parse_lacks(reason) else {
            return Some(format!(
                "skipped without naming what it lacks (`lacks TOKEN: ...`) on a {} kernel",
                self.kind
            ));
        };
        // With alternatives the case could use any one: the skip is due
        // only when the kernel is meant to have none of them.
        let mut present = Vec::new();
        for lack in &lacks {
            match self.has(vm_type, lack, numa_nodes) {
                Ok(false) => {}
                Ok(true) => present.push(lack_name(lack)),
                Err(why) => return Some(why),
            }
        }
        if present.is_empty() {
            None
        } else {
            Some(format!(
                "skipped for {} which a {} kernel must have on a {vm_type} VM",
                present.join(" | "),
                self.kind
            ))
        }
    }

    /// Whether this kernel is meant to have `lack` on `vm_type`; Err when
    /// the file cannot tell (a capability it does not list).
    fn has(&self, vm_type: &str, lack: &Lack, numa_nodes: Option<u32>) -> Result<bool, String> {
        let value = |cap: &str| -> Result<i64, String> {
            if !self.vm_types.iter().any(|t| t == vm_type) {
                return Ok(0); // no such VM: nothing on it
            }
            self.vm
                .get(vm_type)
                .and_then(|m| m.get(cap))
                .copied()
                .ok_or_else(|| {
                    format!(
                        "skipped for {cap}, which [{}.vm.{vm_type}] does not list: say in the expectation file what this kernel reports",
                        self.kind
                    )
                })
        };
        match lack {
            Lack::Kvm => Ok(true),
            Lack::VmType(t) => Ok(self.vm_types.contains(t)),
            Lack::Cap(c) => Ok(value(c)? > 0),
            Lack::Bits(c, mask) => Ok(value(c)?.max(0) as u64 & mask == *mask),
            // The guest runs the suite as root with /dev/kmsg and /proc: a
            // missing piece of the environment is a defect of the run.
            Lack::Env(_) => Ok(true),
            // A boot with a non-default parameter (one the kernel makes
            // read-only) is another lane's job: the default boot lacks it.
            Lack::Boot(_) => Ok(false),
            // A guest with several NUMA nodes is the job of a run given
            // them (`--numa N`, a kernel with the numa fragment); a default
            // boot has one node.
            Lack::Numa(n) => Ok(numa_nodes.is_some_and(|got| got >= *n)),
            // Whether root may change a parameter at run time is the
            // kernel's choice (6.1 declares kvm.tdp_mmu 0644, 6.3 made it
            // 0444): the table says which ones this kernel keeps writable.
            Lack::Param(p) => Ok(self.writable_params.contains(p)),
            Lack::Version(v) => Ok(self.version >= *v),
            Lack::Config(c) => Ok(!self.configs_off.contains(c)),
            Lack::Unknown(t) => Err(format!(
                "skipped for `{t}`, which is no `lacks` token the judge knows"
            )),
        }
    }

    /// Differences between the suite's `# caps` report and this table.
    pub fn caps_mismatches(&self, ktap: &Ktap) -> Vec<String> {
        let mut out = Vec::new();
        if ktap.caps.is_empty() {
            out.push(format!(
                "the suite printed no `# caps` report to check against [{}]",
                self.kind
            ));
            return out;
        }
        let mut compare = |scope: &str, want: &BTreeMap<String, i64>| match ktap.caps.get(scope) {
            None => out.push(format!("no `# caps {scope}` line in the report")),
            Some(None) => out.push(format!(
                "{scope} VMs are unavailable; a {} kernel must have them",
                self.kind
            )),
            Some(Some(got)) => {
                for (cap, want) in want {
                    match got.get(cap) {
                        Some(v) if v == want => {}
                        Some(v) => out.push(format!(
                            "{cap} is {v:#x} on {scope}, a {} kernel reports {want:#x}",
                            self.kind
                        )),
                        None => out.push(format!("{cap} not in the `# caps {scope}` report")),
                    }
                }
            }
        };
        compare("system", &self.system);
        for t in &self.vm_types {
            if let Some(want) = self.vm.get(t) {
                compare(t, want);
            }
        }
        for (scope, got) in &ktap.caps {
            if scope != "system" && got.is_some() && !self.vm_types.contains(scope) {
                out.push(format!(
                    "{scope} VMs can be created; a {} kernel has no such VM type",
                    self.kind
                ));
            }
        }
        out
    }
}

fn lack_name(lack: &Lack) -> String {
    match lack {
        Lack::Kvm => "/dev/kvm".into(),
        Lack::VmType(t) => format!("{t} VMs"),
        Lack::Cap(c) => c.clone(),
        Lack::Bits(c, m) => format!("{c} bits {m:#x}"),
        Lack::Env(e) => format!("{e} (environment)"),
        Lack::Boot(b) => format!("a boot with {b}"),
        Lack::Numa(n) => format!("a guest with {n} NUMA nodes"),
        Lack::Param(p) => format!("{p} writable at run time"),
        Lack::Version(v) => format!("a kernel of {v} or later"),
        Lack::Config(c) => format!("{c}=y"),
        Lack::Unknown(t) => t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::parse_ktap;

    fn series() -> KernelExpect {
        let path = path_for(&crate::util::patches_dir(), crate::series::DEFAULT_SERIES);
        Expectations::load(&path).unwrap().kinds["series"].clone()
    }

    #[test]
    fn the_project_file_has_both_kernel_kinds_and_applies_only_with_gmem() {
        let path = path_for(&crate::util::patches_dir(), crate::series::DEFAULT_SERIES);
        let e = Expectations::load(&path).unwrap();
        assert!(e.kinds.contains_key("series") && e.kinds.contains_key("upstream-6.12"));
        let gmem = vec!["base".to_string(), "gmem".to_string()];
        assert!(e.for_build("series", &gmem).is_some());
        assert!(e.for_build("series", &["base".to_string()]).is_none());
        assert!(e.for_build("no-such-kind", &gmem).is_none());
        assert_eq!(
            e.kinds["series"].vm["sw_protected"]["KVM_CAP_GUEST_MEMFD"],
            1
        );
    }

    #[test]
    fn a_writable_parameter_skip_is_due_only_where_the_table_lacks_it() {
        let path = path_for(&crate::util::patches_dir(), crate::series::DEFAULT_SERIES);
        let e = Expectations::load(&path).unwrap();
        let reason = "lacks param=kvm.tdp_mmu: read-only on this kernel";
        assert_eq!(
            parse_lacks(reason),
            Some(vec![Lack::Param("kvm.tdp_mmu".into())])
        );
        let on_series = e.kinds["series"].unexpected_skip("sw_protected", reason, None);
        assert!(
            on_series.is_some_and(|w| w.contains("kvm.tdp_mmu writable at run time")),
            "6.1 keeps kvm.tdp_mmu writable: the skip is a defect there"
        );
        assert_eq!(
            e.kinds["upstream-6.12"].unexpected_skip("sw_protected", reason, None),
            None
        );
    }

    #[test]
    fn a_version_skip_is_due_only_on_an_older_kernel() {
        let reason = "lacks version>=6.19: 6.18 has no guest_memfd mempolicy";
        assert_eq!(
            parse_lacks(reason),
            Some(vec![Lack::Version(KernelVersion {
                major: 6,
                minor: 19
            })])
        );
        let mut e = series();
        assert_eq!(e.version.to_string(), "6.1");
        assert_eq!(e.unexpected_skip("default", reason, None), None);
        e.version = "6.19".parse().unwrap();
        let why = e.unexpected_skip("default", reason, None).unwrap();
        assert!(why.contains("a kernel of 6.19 or later"), "{why}");
        e.version = "7.0".parse().unwrap();
        assert!(e.unexpected_skip("default", reason, None).is_some());
        assert_eq!(
            parse_lacks("lacks version>=6: x"),
            Some(vec![Lack::Unknown("version>=6".into())])
        );
    }

    #[test]
    fn a_config_skip_is_due_only_for_an_option_the_table_says_is_off() {
        let reason = "lacks config=CONFIG_KVM_SMM: one address space";
        assert_eq!(
            parse_lacks(reason),
            Some(vec![Lack::Config("CONFIG_KVM_SMM".into())])
        );
        let mut e = series();
        let why = e.unexpected_skip("sw_protected", reason, None).unwrap();
        assert!(why.contains("CONFIG_KVM_SMM=y"), "{why}");
        e.configs_off = vec!["CONFIG_KVM_SMM".into()];
        assert_eq!(e.unexpected_skip("sw_protected", reason, None), None);
        assert_eq!(
            parse_lacks("lacks config=KVM_SMM: x"),
            Some(vec![Lack::Unknown("config=KVM_SMM".into())])
        );
    }

    #[test]
    fn a_numa_skip_is_due_unless_the_guest_was_given_the_nodes() {
        let e = series();
        let reason = "lacks numa=2: NUMA nodes 0 and 1 not both online";
        assert_eq!(e.unexpected_skip("default", reason, None), None);
        let why = e.unexpected_skip("default", reason, Some(2)).unwrap();
        assert!(why.contains("a guest with 2 NUMA nodes"), "{why}");
        assert!(e.unexpected_skip("default", reason, Some(4)).is_some());
        assert_eq!(
            e.unexpected_skip("default", "lacks numa=4: two nodes", Some(2)),
            None
        );
    }

    /// The 6.18 NUMA lane's run (`--numa 2`): its skips, judged.
    #[test]
    fn the_618_table_accepts_what_618_lacks_and_nothing_else() {
        let path = path_for(&crate::util::patches_dir(), crate::series::DEFAULT_SERIES);
        let e = Expectations::load(&path).unwrap().kinds["upstream-6.18"].clone();
        let due = [
            (
                "default",
                "lacks version>=6.19: kernel 6.18.15+ is older than 6.19: x",
            ),
            (
                "sw_protected",
                "lacks KVM_CAP_GUEST_MEMFD_FLAGS&0x3: lacks INIT_SHARED",
            ),
            ("default", "lacks KVM_CAP_MEMORY_ATTRIBUTES&0x8: no PRIVATE"),
            ("default", "lacks boot=kvm.tdp_mmu=0: read-only"),
            ("default", "lacks param=kvm.tdp_mmu: read-only"),
        ];
        for (t, reason) in due {
            assert_eq!(e.unexpected_skip(t, reason, Some(2)), None, "{reason}");
        }
        let not_due = [
            ("default", "lacks numa=2: one node"),
            ("default", "lacks KVM_CAP_GUEST_MEMFD_FLAGS&0x3: no flags"),
            (
                "sw_protected",
                "lacks KVM_CAP_MEMORY_ATTRIBUTES&0x8: no PRIVATE",
            ),
            (
                "default",
                "lacks config=CONFIG_TRANSPARENT_HUGEPAGE: no THP",
            ),
            (
                "sw_protected",
                "lacks config=CONFIG_KVM_SMM: one address space",
            ),
        ];
        for (t, reason) in not_due {
            assert!(e.unexpected_skip(t, reason, Some(2)).is_some(), "{reason}");
        }
        assert_eq!(
            e.caps_mismatches(&parse_ktap(CAPS_618)),
            Vec::<String>::new()
        );
    }

    /// The `# caps` report of 6.18.15 built with gmem,numa (TCG, --numa 2).
    const CAPS_618: &str = "KTAP version 1\n1..1\n\
# caps system KVM_CAP_VM_TYPES=0x3 KVM_CAP_GUEST_MEMFD=0x1 KVM_CAP_USER_MEMORY2=0x1 KVM_CAP_MEMORY_ATTRIBUTES=0x8 KVM_CAP_MEMORY_FAULT_INFO=0x1 KVM_CAP_GUEST_MEMFD_FLAGS=0x3\n\
# caps default KVM_CAP_GUEST_MEMFD=1 KVM_CAP_USER_MEMORY2=1 KVM_CAP_MEMORY_ATTRIBUTES=0x0 KVM_CAP_MEMORY_FAULT_INFO=1 KVM_CAP_GUEST_MEMFD_FLAGS=0x3\n\
# caps sw_protected KVM_CAP_GUEST_MEMFD=1 KVM_CAP_USER_MEMORY2=1 KVM_CAP_MEMORY_ATTRIBUTES=0x8 KVM_CAP_MEMORY_FAULT_INFO=1 KVM_CAP_GUEST_MEMFD_FLAGS=0x1\n\
ok 1 a.b@default\n";

    #[test]
    fn every_table_of_the_project_file_names_its_kernel_version() {
        let path = path_for(&crate::util::patches_dir(), crate::series::DEFAULT_SERIES);
        let e = Expectations::load(&path).unwrap();
        for (kind, table) in &e.kinds {
            if let Some(v) = kind.strip_prefix("upstream-") {
                assert_eq!(table.version.to_string(), v, "[{kind}]");
            }
        }
        let err = Expectations::parse(
            Path::new("x.expect.toml"),
            "[k]\ndescription = \"d\"\nversion = \"6\"\nvm_types = []\n[k.system]\n[k.vm]\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("not a kernel version"),
            "{err:#}"
        );
    }

    #[test]
    fn bad_files_name_the_table_and_what_to_do() {
        let p = Path::new("x.expect.toml");
        let err = Expectations::parse(
            p,
            "[k]\ndescription = \"d\"\nversion = \"6.1\"\nvm_types = [\"default\"]\n[k.system]\n[k.vm.sw_protected]\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("[vm.sw_protected] is not in vm_types"),
            "{err:#}"
        );
        let err = Expectations::parse(
            p,
            "[k]\ndescription = \"d\"\nversion = \"6.1\"\nvm_types = [\"default\"]\n[k.system]\n[k.vm]\n",
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("no [k.vm.default] table"),
            "{err:#}"
        );
        let err = Expectations::parse(p, "[k]\ndescription = 1\n").unwrap_err();
        assert!(format!("{err:#}").contains("x.expect.toml"), "{err:#}");
    }

    #[test]
    fn lacks_tokens_parse() {
        assert_eq!(
            parse_lacks("lacks KVM_CAP_GUEST_MEMFD: KVM_CAP_GUEST_MEMFD is 0 on a x VM"),
            Some(vec![Lack::Cap("KVM_CAP_GUEST_MEMFD".into())])
        );
        assert_eq!(
            parse_lacks(
                "lacks KVM_CAP_MEMORY_ATTRIBUTES&0x8|KVM_CAP_GUEST_MEMFD_FLAGS&0x3: no way"
            ),
            Some(vec![
                Lack::Bits("KVM_CAP_MEMORY_ATTRIBUTES".into(), 8),
                Lack::Bits("KVM_CAP_GUEST_MEMFD_FLAGS".into(), 3)
            ])
        );
        assert_eq!(
            parse_lacks("lacks vm_type=sw_protected: no sw_protected VM: EINVAL"),
            Some(vec![Lack::VmType("sw_protected".into())])
        );
        assert_eq!(parse_lacks("lacks /dev/kvm: ENOENT"), Some(vec![Lack::Kvm]));
        assert_eq!(
            parse_lacks("lacks numa=2: NUMA nodes 0 and 1 not both online"),
            Some(vec![Lack::Numa(2)])
        );
        // Another lane's job, like a boot parameter: due on a default boot.
        assert_eq!(
            series().unexpected_skip("default", "lacks numa=2: one node", None),
            None
        );
        assert_eq!(
            parse_lacks("lacks boot=kvm.tdp_mmu=0: read-only"),
            Some(vec![Lack::Boot("kvm.tdp_mmu=0".into())])
        );
        assert_eq!(parse_lacks("no KVM_CAP_GUEST_MEMFD"), None);
    }

    #[test]
    fn a_skip_passes_only_for_what_the_kernel_is_meant_to_lack() {
        let e = series();
        // Default VMs have no guest_memfd on the 6.8 uAPI.
        assert_eq!(
            e.unexpected_skip(
                "default",
                "lacks KVM_CAP_GUEST_MEMFD: KVM_CAP_GUEST_MEMFD is 0 on a default VM",
                None
            ),
            None
        );
        assert_eq!(
            e.unexpected_skip(
                "default",
                "lacks KVM_CAP_MEMORY_ATTRIBUTES&0x8|KVM_CAP_GUEST_MEMFD_FLAGS&0x3: no way",
                None
            ),
            None
        );
        assert_eq!(
            e.unexpected_skip(
                "default",
                "lacks KVM_CAP_GUEST_MEMFD_FLAGS&0x1: lacks MMAP",
                None
            ),
            None
        );
        // SW_PROTECTED VMs must have it.
        let why = e
            .unexpected_skip(
                "sw_protected",
                "lacks KVM_CAP_GUEST_MEMFD: KVM_CAP_GUEST_MEMFD is 0 on a sw_protected VM",
                None,
            )
            .unwrap();
        assert!(
            why.contains("KVM_CAP_GUEST_MEMFD which a series kernel must have"),
            "{why}"
        );
        assert!(e
            .unexpected_skip(
                "sw_protected",
                "lacks vm_type=sw_protected: no sw_protected VM",
                None
            )
            .is_some());
        assert!(e
            .unexpected_skip(
                "sw_protected",
                "lacks KVM_CAP_MEMORY_ATTRIBUTES&0x8|KVM_CAP_GUEST_MEMFD_FLAGS&0x3: x",
                None
            )
            .is_some());
        assert!(e
            .unexpected_skip("default", "lacks /dev/kvm: ENOENT", None)
            .is_some());
        assert!(e
            .unexpected_skip("default", "lacks env=/dev/kmsg: unreadable", None)
            .is_some());
        let why = e
            .unexpected_skip("default", "needs KVM_CAP_GUEST_MEMFD", None)
            .unwrap();
        assert!(why.contains("without naming what it lacks"), "{why}");
        let why = e
            .unexpected_skip("default", "lacks KVM_CAP_NOT_IN_FILE: x", None)
            .unwrap();
        assert!(why.contains("does not list"), "{why}");
    }

    const CAPS_OK: &str = "KTAP version 1\n1..1\n\
# caps system KVM_CAP_VM_TYPES=0x3 KVM_CAP_GUEST_MEMFD=0x1 KVM_CAP_USER_MEMORY2=0x1 KVM_CAP_MEMORY_ATTRIBUTES=0x8 KVM_CAP_MEMORY_FAULT_INFO=0x1 KVM_CAP_GUEST_MEMFD_FLAGS=0x0\n\
# caps default KVM_CAP_GUEST_MEMFD=0 KVM_CAP_USER_MEMORY2=1 KVM_CAP_MEMORY_ATTRIBUTES=0x0 KVM_CAP_MEMORY_FAULT_INFO=1 KVM_CAP_GUEST_MEMFD_FLAGS=0x0\n\
# caps sw_protected KVM_CAP_GUEST_MEMFD=1 KVM_CAP_USER_MEMORY2=1 KVM_CAP_MEMORY_ATTRIBUTES=0x8 KVM_CAP_MEMORY_FAULT_INFO=1 KVM_CAP_GUEST_MEMFD_FLAGS=0x0\n\
ok 1 a.b@default\n";

    #[test]
    fn caps_report_is_compared_value_by_value() {
        let e = series();
        assert_eq!(
            e.caps_mismatches(&parse_ktap(CAPS_OK)),
            Vec::<String>::new()
        );
        let zero = CAPS_OK.replace(
            "caps sw_protected KVM_CAP_GUEST_MEMFD=1",
            "caps sw_protected KVM_CAP_GUEST_MEMFD=0",
        );
        let m = e.caps_mismatches(&parse_ktap(&zero));
        assert_eq!(
            m,
            vec!["KVM_CAP_GUEST_MEMFD is 0x0 on sw_protected, a series kernel reports 0x1"]
        );
        let gone = CAPS_OK.replace(
            "# caps sw_protected KVM_CAP_GUEST_MEMFD=1 KVM_CAP_USER_MEMORY2=1 KVM_CAP_MEMORY_ATTRIBUTES=0x8 KVM_CAP_MEMORY_FAULT_INFO=1 KVM_CAP_GUEST_MEMFD_FLAGS=0x0",
            "# caps sw_protected unavailable",
        );
        let m = e.caps_mismatches(&parse_ktap(&gone));
        assert!(
            m.iter()
                .any(|l| l.contains("sw_protected VMs are unavailable")),
            "{m:?}"
        );
        let m = e.caps_mismatches(&parse_ktap("KTAP version 1\n1..1\nok 1 a\n"));
        assert!(m[0].contains("no `# caps` report"), "{m:?}");
    }
}
