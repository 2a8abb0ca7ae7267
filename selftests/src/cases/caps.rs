//! Capability answers agree with what the kernel actually does.

use crate::harness::case::{ensure, fail, Case, TestResult, Tx};
use crate::kvm::caps::{listed_in_vm_types, Need};
use crate::kvm::{Vm, KVM_CAP_VM_TYPES};

pub const CASES: &[Case] = &[
    case!(vm_types_matches_create_vm, needs: &[Need::Kvm]),
    case!(gmem_caps_consistent, needs: &[Need::GuestMemfd]),
];

/// KVM_CAP_VM_TYPES lists this type exactly when KVM_CREATE_VM accepts it.
fn vm_types_matches_create_vm(tx: &Tx) -> TestResult {
    let kvm = kvm_ioctls::Kvm::new()
        .map_err(|e| crate::harness::case::Stop::Fail(format!("open /dev/kvm: {e}")))?;
    let vm_types = kvm.check_extension_raw(KVM_CAP_VM_TYPES as libc::c_ulong);
    let listed = listed_in_vm_types(tx.vm_type, vm_types);
    let created = Vm::create(tx.vm_type);
    tx.diag(format!(
        "KVM_CAP_VM_TYPES {vm_types:#x}: {} {}; KVM_CREATE_VM: {}",
        tx.vm_type.uapi_name(),
        if listed { "listed" } else { "not listed" },
        match &created {
            Ok(_) => "ok".to_string(),
            Err(e) => e.to_string(),
        }
    ));
    match (listed, created.is_ok()) {
        (true, true) | (false, false) => Ok(()),
        (true, false) => fail(format!(
            "{} is listed in KVM_CAP_VM_TYPES but cannot be created",
            tx.vm_type.uapi_name()
        )),
        (false, true) => fail(format!(
            "{} can be created but KVM_CAP_VM_TYPES does not list it",
            tx.vm_type.uapi_name()
        )),
    }
}

/// A VM type with guest_memfd must let userspace bind it (USER_MEMORY2), and
/// PRIVATE attributes come with memory-fault exits.
fn gmem_caps_consistent(tx: &Tx) -> TestResult {
    let c = tx.vm_caps();
    ensure(c.user_memory2 > 0, || {
        "KVM_CAP_GUEST_MEMFD without KVM_CAP_USER_MEMORY2: no way to bind it".to_string()
    })?;
    if c.has_private() {
        ensure(c.memory_fault_info > 0, || {
            "KVM_MEMORY_ATTRIBUTE_PRIVATE without KVM_CAP_MEMORY_FAULT_INFO".to_string()
        })?;
    }
    Ok(())
}
