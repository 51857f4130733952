//! loopkit's integration tests: one binary (libtest-mimic), so a test that cannot run here
//! (missing tool, no QEMU) is reported as *ignored with its reason*, never as passed.
//! Each module contributes `trials()`; oracles are independent tools (mkfs, genisoimage, Python
//! `cryptography`, aespipe, gpg, cryptsetup, dvdisaster, the kernel in a VM), never loopkit.

mod attach_state;
mod batch;
mod bench_remap;
mod cryptsetup_lines;
mod ecc_repair;
mod ecc_strip;
mod ecc_verify;
mod ext_compat;
mod ext_damage;
mod extents;
mod fresh_machine;
mod fs_corrupt;
mod fs_extract;
mod fs_fixtures;
mod fs_manifest;
mod fs_verify;
mod hostile_names;
mod layers;
mod legacy;
mod legacy_ciphers;
mod luks_read;
mod luks_semantics;
mod migrate_modes;
mod migrate_safety;
mod mounts;
mod open_source;
mod payload_kinds;
mod remap_engine;
mod setup_script;
mod ublk_abi;
mod util;
mod vm;
mod vm_attach;
mod vm_legacy;
mod vm_legacy_ciphers;
mod vm_migrate;
mod vm_remap_identity;
mod vm_remap_safety;
mod vm_smoke;

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let mut trials = Vec::new();
    trials.extend(util::trials());
    trials.extend(setup_script::trials());
    trials.extend(layers::trials());
    trials.extend(legacy::trials());
    trials.extend(legacy_ciphers::trials());
    trials.extend(vm_smoke::trials());
    trials.extend(vm_legacy::trials());
    trials.extend(vm_legacy_ciphers::trials());
    trials.extend(fs_manifest::trials());
    trials.extend(fs_verify::trials());
    trials.extend(fs_extract::trials());
    trials.extend(fs_corrupt::trials());
    trials.extend(ext_damage::trials());
    trials.extend(ext_compat::trials());
    trials.extend(ecc_verify::trials());
    trials.extend(ecc_strip::trials());
    trials.extend(ecc_repair::trials());
    trials.extend(luks_read::trials());
    trials.extend(luks_semantics::trials());
    trials.extend(migrate_modes::trials());
    trials.extend(migrate_safety::trials());
    trials.extend(open_source::trials());
    trials.extend(payload_kinds::trials());
    trials.extend(vm_migrate::trials());
    trials.extend(extents::trials());
    trials.extend(remap_engine::trials());
    trials.extend(bench_remap::trials());
    trials.extend(vm_attach::trials());
    trials.extend(vm_remap_safety::trials());
    trials.extend(vm_remap_identity::trials());
    trials.extend(batch::trials());
    trials.extend(cryptsetup_lines::trials());
    trials.extend(ublk_abi::trials());
    trials.extend(hostile_names::trials());
    trials.extend(attach_state::trials());
    trials.extend(fresh_machine::trials());
    let conclusion = libtest_mimic::run(&args, trials);
    legacy::cleanup();
    conclusion.exit();
}
