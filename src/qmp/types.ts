// The QMP wire messages, and typed arguments and results for the commands the QEMU backend uses.
// Any other command goes through QmpClient.executeUntyped, by name.
//
// Integers: any integer outside ±(2^53 − 1) in a reply or event is read as an exact bigint, and a
// bigint argument is written as its digits. Fields typed QmpInt below are the 64-bit ones whose
// values may get there (sizes and addresses); fields of small ranges (bus, slot, node, ids) are
// typed number. Untyped values (qom-get's result, event data) may hold bigints too.

/** A 64-bit QAPI integer (int64, uint64, size): a number within the safe range, else a bigint. */
export type QmpInt = number | bigint;

/** QEMU's version, as the greeting and `query-version` report it. */
export interface QmpVersion {
  qemu: { major: number; minor: number; micro: number };
  package: string;
}

/** What QEMU sends first on a QMP connection: its version and the capabilities it offers (e.g. `oob`). */
export interface QmpGreeting {
  version: QmpVersion;
  capabilities: string[];
}

/** An asynchronous event from QEMU: its name, data and time. */
export interface QmpEvent {
  event: string;
  data: Record<string, unknown>;
  /** When QEMU sent it; -1/-1 when unknown (QEMU could not read the clock, or the peer left it out). */
  timestamp: { seconds: number; microseconds: number };
}

/** A QEMU run state, as query-status reports it. */
export type RunState =
  | 'debug'
  | 'inmigrate'
  | 'internal-error'
  | 'io-error'
  | 'paused'
  | 'postmigrate'
  | 'prelaunch'
  | 'finish-migrate'
  | 'restore-vm'
  | 'running'
  | 'save-vm'
  | 'shutdown'
  | 'suspended'
  | 'watchdog'
  | 'guest-panicked'
  | 'colo';

/** query-status's result as read (QEMU 10 no longer has `singlestep`, deprecated since 8.1: not read). */
export interface StatusInfo {
  running: boolean;
  status: RunState;
}

/** One vCPU slot, as `query-hotpluggable-cpus` lists it. */
export interface HotpluggableCpu {
  type: string;
  'vcpus-count': number;
  props: Record<string, number>;
  /** Present when a vCPU is plugged in this slot. */
  'qom-path'?: string;
}

/** One vCPU, as `query-cpus-fast` lists it (its host thread id included). */
export interface CpuInfoFast {
  'cpu-index': number;
  'qom-path': string;
  'thread-id': number;
  target: string;
  props?: Record<string, number>;
}

/** One memory device (DIMM or virtio-mem), as `query-memory-devices` lists it. */
export type MemoryDeviceInfo =
  | { type: 'dimm' | 'nvdimm'; data: { id?: string; addr: QmpInt; size: QmpInt; slot: number; node: number; memdev: string; hotplugged: boolean; hotpluggable: boolean } }
  | { type: 'virtio-mem'; data: { id?: string; memaddr: QmpInt; 'requested-size': QmpInt; size: QmpInt; 'max-size': QmpInt; 'block-size': QmpInt; node: number; memdev: string } }
  | { type: string; data: Record<string, unknown> };

/** One PCI device, as `query-pci` lists it (a bridge with the devices behind it). */
export interface PciDeviceInfo {
  bus: number;
  slot: number;
  function: number;
  class_info: { desc?: string; class: number };
  id: { device: number; vendor: number; subsystem?: number; 'subsystem-vendor'?: number };
  qdev_id: string;
  pci_bridge?: { bus: { number: number; secondary: number; subordinate: number }; devices?: PciDeviceInfo[] };
  regions: unknown[];
}

/** One PCI bus and its devices, as `query-pci` lists them. */
export interface PciInfo {
  bus: number;
  devices: PciDeviceInfo[];
}

/** One block device, as `query-block` lists it. */
export interface BlockInfo {
  device: string;
  qdev?: string;
  locked: boolean;
  removable: boolean;
  inserted?: {
    file: string;
    'node-name'?: string;
    ro: boolean;
    drv: string;
    image: { filename: string; format: string; 'virtual-size': QmpInt };
    cache: { writeback: boolean; direct: boolean; 'no-flush': boolean };
  };
}

/** A block backend's I/O counters (the fields the library reads; QEMU sends more). */
export interface BlockDeviceStats {
  rd_bytes: QmpInt;
  wr_bytes: QmpInt;
  rd_operations: QmpInt;
  wr_operations: QmpInt;
  flush_operations: QmpInt;
  rd_total_time_ns: QmpInt;
  wr_total_time_ns: QmpInt;
  flush_total_time_ns: QmpInt;
}

/** One entry of `query-blockstats`: a block backend and its counters. */
export interface BlockStats {
  /** The legacy drive name; empty for a backend made with -blockdev. */
  device?: string;
  /** The root node's name, when it has one (the library names every disk's: drv-<id>). */
  'node-name'?: string;
  /** The QOM path of the device the backend is attached to. */
  qdev?: string;
  stats: BlockDeviceStats;
}

/** What `query-balloon` returns. */
export interface BalloonInfo {
  /** The guest's memory as the balloon leaves it, in bytes. */
  actual: QmpInt;
}

/** One entry of query-qmp-schema: only its name and kind are typed, the rest is read where needed. */
export interface SchemaInfo {
  name: string;
  'meta-type': string;
  [member: string]: unknown;
}

/** One property of a QOM object or device type, as `qom-list` and `device-list-properties` list it. */
export interface ObjectPropertyInfo {
  name: string;
  type: string;
  description?: string;
  'default-value'?: unknown;
}

/** Where `add-fd` put the fd sent with it. */
export interface AddfdInfo {
  'fdset-id': number;
  /** QEMU's own number for the fd. */
  fd: number;
}

/** chardev-add's backend as the library sends it: a socket chardev connecting to a unix socket (QEMU the client). */
export interface ChardevSocketBackend {
  type: 'socket';
  data: { addr: { type: 'unix'; data: { path: string } }; server: boolean };
}

/** What `yank` acts on (`query-yank` lists those that exist). */
export type YankInstance = { type: 'chardev'; id: string } | { type: 'block-node'; 'node-name': string } | { type: 'migration' };

/** One capability of `migrate-set-capabilities`. */
export interface MigrationCapabilityStatus {
  capability: 'x-ignore-shared' | 'events';
  state: boolean;
}

/** What `query-migrate` says of the last migration (the members the library reads). */
export interface MigrationInfo {
  status?: string;
  'error-desc'?: string;
}

type Empty = Record<string, never>;
/** QEMU options objects: the keys named here are checked, everything else passes through. */
type Props = Record<string, unknown>;

/** Argument and return types of the commands the library sends. */
export interface QmpCommandMap {
  qmp_capabilities: { args: { enable?: string[] } | undefined; ret: Empty };
  'query-version': { args: undefined; ret: QmpVersion };
  'query-status': { args: undefined; ret: StatusInfo };
  stop: { args: undefined; ret: Empty };
  cont: { args: undefined; ret: Empty };
  quit: { args: undefined; ret: Empty };
  system_powerdown: { args: undefined; ret: Empty };
  'blockdev-add': { args: { driver: string; 'node-name': string } & Props; ret: Empty };
  'blockdev-del': { args: { 'node-name': string }; ret: Empty };
  device_add: { args: { driver: string; id?: string } & Props; ret: Empty };
  device_del: { args: { id: string }; ret: Empty };
  netdev_add: { args: { type: string; id: string } & Props; ret: Empty };
  netdev_del: { args: { id: string }; ret: Empty };
  'object-add': { args: { 'qom-type': string; id: string } & Props; ret: Empty };
  'object-del': { args: { id: string }; ret: Empty };
  /** The property's value, of the property's type: an integer beyond 2^53 is a bigint. */
  'qom-get': { args: { path: string; property: string }; ret: unknown };
  'qom-set': { args: { path: string; property: string; value: unknown }; ret: Empty };
  'qom-list': { args: { path: string }; ret: ObjectPropertyInfo[] };
  'device-list-properties': { args: { typename: string }; ret: ObjectPropertyInfo[] };
  'qom-list-properties': { args: { typename: string }; ret: ObjectPropertyInfo[] };
  /** The introspected schema: entries with opaque type names (src/qmp/schema-check.ts reads them). */
  'query-qmp-schema': { args: undefined; ret: SchemaInfo[] };
  'query-hotpluggable-cpus': { args: undefined; ret: HotpluggableCpu[] };
  'query-cpus-fast': { args: undefined; ret: CpuInfoFast[] };
  'query-memory-devices': { args: undefined; ret: MemoryDeviceInfo[] };
  'query-pci': { args: undefined; ret: PciInfo[] };
  'query-block': { args: undefined; ret: BlockInfo[] };
  'query-blockstats': { args: { 'query-nodes'?: boolean } | undefined; ret: BlockStats[] };
  'query-balloon': { args: undefined; ret: BalloonInfo };
  /** Names the fd sent with the command (execute's `fd` option), for netdev_add's fd/fds/vhostfds. */
  getfd: { args: { fdname: string }; ret: Empty };
  /** Templates: the migration capability that leaves RAM in a shared file out of the stream. */
  'migrate-set-capabilities': { args: { capabilities: MigrationCapabilityStatus[] }; ret: Empty };
  /** Templates: the device state written to an fd passed with getfd (`fd:<name>`). */
  migrate: { args: { uri: string }; ret: Empty };
  /** Templates: a clone started with `-incoming defer` reads the state from an inherited fd (`fd:<n>`). */
  'migrate-incoming': { args: { uri: string }; ret: Empty };
  'query-migrate': { args: undefined; ret: MigrationInfo };
  /** A hot-plugged virtio-fs share's chardev: a unix socket client of its daemon. */
  'chardev-add': { args: { id: string; backend: ChardevSocketBackend }; ret: Empty };
  'chardev-remove': { args: { id: string }; ret: Empty };
  closefd: { args: { fdname: string }; ret: Empty };
  /** Puts the fd sent with the command into an fd set, which /dev/fdset/<id> opens by access mode. */
  'add-fd': { args: { 'fdset-id'?: number; opaque?: string } | undefined; ret: AddfdInfo };
  'remove-fd': { args: { 'fdset-id': number; fd?: number }; ret: Empty };
  /** Drops the connections of the instances so that whatever hangs on them fails; send with `{ oob: true }`. */
  yank: { args: { instances: YankInstance[] }; ret: Empty };
  'query-yank': { args: undefined; ret: YankInstance[] };
}

/** The commands `QmpClient.execute` knows the arguments and result of. */
export type QmpCommandName = keyof QmpCommandMap;
/** The arguments of a known command. */
export type QmpArgs<C extends QmpCommandName> = QmpCommandMap[C]['args'];
/** The result of a known command. */
export type QmpReturn<C extends QmpCommandName> = QmpCommandMap[C]['ret'];
