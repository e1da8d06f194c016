/**
 * The `Hypervisor` contract and its typed errors, the QEMU and mock backends, the registry, and the
 * config schema.
 * @module sandbox-vmm
 */
export * from './errors.ts';
export type { OperationOptions } from './util/deadline.ts';
export * from './hypervisor/types.ts';
export * from './hypervisor/errors.ts';
export { templateConfigRefusal, cloneConfigRefusal } from './hypervisor/templates.ts';
export * from './hypervisor/config/index.ts';
export { ARCHITECTURES, MACHINE_TYPES, archProfile, type Architecture, type ArchProfile, type MachineType, type MemoryHotplugKind } from './hypervisor/arch-profiles.ts';
export { QemuHypervisor, type QemuHypervisorOptions } from './qemu/qemu-hypervisor.ts';
export { buildQemuArgv, type QemuArgv } from './qemu/argv/index.ts';
export type { PciPlan } from './qemu/argv/pci.ts';
export type { RootBusSlot } from './hypervisor/pci-path.ts';
export type { LaunchFd } from './qemu/launch/launcher.ts';
export type { HostProbe } from './qemu/devices/context.ts';
export { runtimePaths, type RuntimePaths } from './qemu/runtime-paths.ts';
export { reapOrphans, type OrphanReport, type ReapOptions } from './qemu/orphans.ts';
export { DEFAULT_UID_RANGE, UidRangeExhaustedError, type UidRange } from './hypervisor/identity.ts';
export { VERSION_RULES, type QemuVersion, type VersionRule } from './hypervisor/version-rules.ts';
export { accessProblem, type AccessMode, type AccessProblemFn, type StatFn } from './hypervisor/host-access.ts';
export { UidLeaseNotHeldError, LeaseDirError, type LeaseRecord } from './qemu/identity/uid-leases.ts';
export { UnsafePathError } from './util/safe-fs.ts';
export * from './mock/index.ts';
export * from './registry.ts';
