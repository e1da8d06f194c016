// The public surface: the Hypervisor contract and its errors, the backends, the config schema.
export * from './errors.ts';
export type { OperationOptions } from './util/deadline.ts';
export * from './hypervisor/types.ts';
export * from './hypervisor/errors.ts';
export { templateConfigRefusal, cloneConfigRefusal } from './hypervisor/templates.ts';
export * from './hypervisor/config/index.ts';
export { QemuHypervisor, type QemuHypervisorOptions } from './qemu/qemu-hypervisor.ts';
export { buildQemuArgv } from './qemu/argv/index.ts';
export { runtimePaths, type RuntimePaths } from './qemu/runtime-paths.ts';
export { reapOrphans, type OrphanReport, type ReapOptions } from './qemu/orphans.ts';
export { DEFAULT_UID_RANGE, UidRangeExhaustedError, type UidRange } from './hypervisor/identity.ts';
export { accessProblem, type AccessMode, type AccessProblemFn } from './hypervisor/host-access.ts';
export { UidLeaseNotHeldError, LeaseDirError, type LeaseRecord } from './qemu/identity/uid-leases.ts';
export { UnsafePathError } from './util/safe-fs.ts';
export * from './mock/index.ts';
export * from './registry.ts';
