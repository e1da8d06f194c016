// Every `code` an error of this library can carry, in one list: SandboxVmmError takes only these,
// so a new error class cannot invent a code that callers' `switch` statements do not know about.

/** The codes, grouped by where they come from. `SandboxVmmErrorCode` is their union. */
export const ERROR_CODES = [
  // Any long operation (src/errors.ts).
  'TIMEOUT',
  'ABORTED',
  'INVALID_ARGUMENT',
  // The config (ConfigError) and the host paths QEMU's user must reach.
  'CONFIG_INVALID',
  // The Hypervisor contract (src/hypervisor/errors.ts), thrown by every backend.
  'INVALID_STATE',
  'VM_START_FAILED',
  'VM_EXITED',
  'VM_STOPPING',
  'VM_UNHEALTHY',
  'NO_FREE_SLOT',
  'DEVICE_EXISTS',
  'DEVICE_NOT_FOUND',
  'HOTPLUG_FAILED',
  'DEVICE_REMOVAL_TIMEOUT',
  'RESOURCE_LIMIT',
  'RESIZE_INCOMPLETE',
  'UNSUPPORTED',
  'ATTACH_FAILED',
  'HELPER_FAILED',
  'INVALID_REPLY',
  // The hypervisor binary lacks a command, device or property (the QEMU backend's feature probe).
  'FEATURE_MISSING',
  // Templates (hypervisor/templates.ts).
  'TEMPLATE_REFUSED',
  // The registry.
  'UNKNOWN_HYPERVISOR',
  'HYPERVISOR_KIND_TAKEN',
  // The QEMU backend's host side: per-VM uid leases (an exhausted range is RESOURCE_LIMIT) and paths.
  'UID_LEASE_NOT_HELD',
  'LEASE_DIR_UNSAFE',
  'UNSAFE_PATH',
  // The QMP client (src/qmp/errors.ts).
  'QMP_COMMAND_FAILED',
  'QMP_TIMEOUT',
  'QMP_DISCONNECTED',
  'QMP_PROTOCOL',
  'QMP_CONNECT_FAILED',
  'QMP_FD_PASSING_FAILED',
] as const;

/** The `code` of any error this library throws: switch on it (`isSandboxVmmError(e) && e.code`). */
export type SandboxVmmErrorCode = (typeof ERROR_CODES)[number];
