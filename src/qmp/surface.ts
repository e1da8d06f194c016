// What the library uses of QMP, as data: every command of QmpCommandMap with the arguments it sends
// and the result members it reads, and every event it listens for with the data it reads. The
// schema test (test/integration/qmp-schema.test.ts) holds this against each QEMU's own
// query-qmp-schema (src/qmp/schema-check.ts).
//
// Why a table next to the types and not a list kept elsewhere: its type is computed from
// QmpCommandMap, so adding a command, an argument or a result member to the map without describing
// it here fails to compile, and so does a description whose kind (string, integer, array, object)
// does not match the TypeScript type. Free-form props (blockdev-add, netdev_add, object-add) are not
// listed here: the schema test runs the real props builders and checks what they produce.
import type { KnownEventData, KnownEventName } from '../hypervisor/events.ts';
import type { PciDeviceInfo, QmpCommandMap, QmpCommandName } from './types.ts';
import { RUN_STATES } from './run-states.ts';

/**
 * A value on the wire as the library writes or reads it ('any': passed through, not looked into). An `enum` lists the values the library
 * sends or tells apart; an `object` names the members it sends or reads (of a union's base), and
 * `cases` those of a union's variants, by tag value.
 */
export type WireShape =
  | 'str'
  | 'int'
  | 'number'
  | 'bool'
  | 'any'
  | { readonly enum: readonly string[] }
  | { readonly array: WireShape }
  | { readonly object: WireMembers; readonly cases?: Readonly<Record<string, WireMembers>> };

export type WireMembers = Readonly<Record<string, WireShape>>;

/** The named keys of T, without index signatures (Props' Record<string, unknown>). */
type KnownKeys<T> = keyof { [K in keyof T as string extends K ? never : number extends K ? never : K]: T[K] };

/**
 * The shapes that may describe a TypeScript type: the kind must match, members must all be named.
 * A union of objects is described by the members its variants share, plus `cases` (not checked here).
 */
export type ShapeOf<T> = unknown extends T
  ? 'any'
  : [T] extends [string]
    ? 'str' | { readonly enum: readonly T[] }
    : [T] extends [number | bigint]
      ? 'int' | 'number'
      : [T] extends [boolean]
        ? 'bool'
        : [T] extends [readonly (infer E)[]]
          ? { readonly array: ShapeOf<E> }
          : [T] extends [object]
            ? { readonly object: MembersOf<T>; readonly cases?: Readonly<Record<string, WireMembers>> }
            : never;

type MembersOf<T> = { readonly [K in KnownKeys<T>]-?: ShapeOf<Exclude<T[K], undefined>> };

/** One command's use: its arguments (none when the command takes none) and the result members read. */
export interface CommandUse<C extends QmpCommandName> {
  readonly args: [Exclude<QmpCommandMap[C]['args'], undefined>] extends [never] ? null : MembersOf<Exclude<QmpCommandMap[C]['args'], undefined>>;
  readonly ret: ShapeOf<QmpCommandMap[C]['ret']>;
}

export type QmpSurface = { readonly [C in QmpCommandName]: CommandUse<C> };


const NONE = { object: {} } as const;

const OBJECT_PROPERTY_INFO = { array: { object: { name: 'str', type: 'str', description: 'str', 'default-value': 'any' } } } as const;

const PCI_DEVICE_INFO: ShapeOf<PciDeviceInfo> = {
  object: {
    bus: 'int',
    slot: 'int',
    function: 'int',
    class_info: { object: { desc: 'str', class: 'int' } },
    id: { object: { device: 'int', vendor: 'int', subsystem: 'int', 'subsystem-vendor': 'int' } },
    qdev_id: 'str',
    pci_bridge: {
      object: {
        bus: { object: { number: 'int', secondary: 'int', subordinate: 'int' } },
        // The bridge's own devices: PciDeviceInfo again (the checker stops where a check repeats).
        get devices() {
          return { array: PCI_DEVICE_INFO };
        },
      },
    },
    regions: { array: 'any' },
  },
};

const YANK_INSTANCE = {
  object: { type: { enum: ['chardev', 'block-node', 'migration'] } },
  cases: { chardev: { id: 'str' }, 'block-node': { 'node-name': 'str' } },
} as const;

export const QMP_SURFACE: QmpSurface = {
  qmp_capabilities: { args: { enable: { array: { enum: ['oob'] } } }, ret: NONE },
  'query-version': {
    args: null,
    ret: { object: { qemu: { object: { major: 'int', minor: 'int', micro: 'int' } }, package: 'str' } },
  },
  'query-status': { args: null, ret: { object: { running: 'bool', status: { enum: RUN_STATES } } } },
  stop: { args: null, ret: NONE },
  cont: { args: null, ret: NONE },
  quit: { args: null, ret: NONE },
  system_powerdown: { args: null, ret: NONE },
  'blockdev-add': { args: { driver: 'str', 'node-name': 'str' }, ret: NONE },
  'blockdev-del': { args: { 'node-name': 'str' }, ret: NONE },
  // device_add's arguments are free-form in the schema (checked by QEMU against the device's properties).
  device_add: { args: { driver: 'str', id: 'str' }, ret: NONE },
  device_del: { args: { id: 'str' }, ret: NONE },
  netdev_add: { args: { type: 'str', id: 'str' }, ret: NONE },
  netdev_del: { args: { id: 'str' }, ret: NONE },
  'object-add': { args: { 'qom-type': 'str', id: 'str' }, ret: NONE },
  'object-del': { args: { id: 'str' }, ret: NONE },
  'qom-get': { args: { path: 'str', property: 'str' }, ret: 'any' },
  'qom-set': { args: { path: 'str', property: 'str', value: 'any' }, ret: NONE },
  'qom-list': { args: { path: 'str' }, ret: OBJECT_PROPERTY_INFO },
  'device-list-properties': { args: { typename: 'str' }, ret: OBJECT_PROPERTY_INFO },
  // The feature probe (src/qemu/features/): a machine type's properties, and every command's name.
  'qom-list-properties': { args: { typename: 'str' }, ret: OBJECT_PROPERTY_INFO },
  'query-qmp-schema': { args: null, ret: { array: { object: { name: 'str', 'meta-type': 'str' } } } },
  'query-hotpluggable-cpus': {
    args: null,
    ret: { array: { object: { type: 'str', 'vcpus-count': 'int', props: { object: {} }, 'qom-path': 'str' } } },
  },
  'query-cpus-fast': {
    args: null,
    ret: { array: { object: { 'cpu-index': 'int', 'qom-path': 'str', 'thread-id': 'int', target: 'str', props: { object: {} } } } },
  },
  'query-memory-devices': {
    args: null,
    ret: {
      array: {
        object: { type: { enum: ['dimm', 'nvdimm'] }, data: { object: {} } },
        cases: {
          dimm: { data: { object: { id: 'str', addr: 'int', size: 'int', slot: 'int', node: 'int', memdev: 'str', hotplugged: 'bool', hotpluggable: 'bool' } } },
          'virtio-mem': {
            data: { object: { id: 'str', memaddr: 'int', 'requested-size': 'int', size: 'int', 'max-size': 'int', 'block-size': 'int', node: 'int', memdev: 'str' } },
          },
        },
      },
    },
  },
  'query-pci': { args: null, ret: { array: { object: { bus: 'int', devices: { array: PCI_DEVICE_INFO } } } } },
  'query-block': {
    args: null,
    ret: {
      array: {
        object: {
          device: 'str',
          qdev: 'str',
          locked: 'bool',
          removable: 'bool',
          inserted: {
            object: {
              file: 'str',
              'node-name': 'str',
              ro: 'bool',
              drv: 'str',
              image: { object: { filename: 'str', format: 'str', 'virtual-size': 'int' } },
              cache: { object: { writeback: 'bool', direct: 'bool', 'no-flush': 'bool' } },
            },
          },
        },
      },
    },
  },
  'query-blockstats': {
    args: { 'query-nodes': 'bool' },
    ret: {
      array: {
        object: {
          device: 'str',
          'node-name': 'str',
          qdev: 'str',
          stats: {
            object: {
              rd_bytes: 'int',
              wr_bytes: 'int',
              rd_operations: 'int',
              wr_operations: 'int',
              flush_operations: 'int',
              rd_total_time_ns: 'int',
              wr_total_time_ns: 'int',
              flush_total_time_ns: 'int',
            },
          },
        },
      },
    },
  },
  'query-balloon': { args: null, ret: { object: { actual: 'int' } } },
  getfd: { args: { fdname: 'str' }, ret: NONE },
  'migrate-set-capabilities': { args: { capabilities: { array: { object: { capability: { enum: ['x-ignore-shared'] }, state: 'bool' } } } }, ret: NONE },
  migrate: { args: { uri: 'str' }, ret: NONE },
  'migrate-incoming': { args: { uri: 'str' }, ret: NONE },
  'query-migrate': { args: null, ret: { object: { status: 'str', 'error-desc': 'str' } } },
  'chardev-add': {
    args: {
      id: 'str',
      // Simple unions: each variant's members sit under `data` (looked up in the variants).
      backend: {
        object: { type: { enum: ['socket'] }, data: { object: { addr: { object: { type: { enum: ['unix'] }, data: { object: { path: 'str' } } } }, server: 'bool' } } },
      },
    },
    ret: NONE,
  },
  'chardev-remove': { args: { id: 'str' }, ret: NONE },
  closefd: { args: { fdname: 'str' }, ret: NONE },
  'add-fd': { args: { 'fdset-id': 'int', opaque: 'str' }, ret: { object: { 'fdset-id': 'int', fd: 'int' } } },
  'remove-fd': { args: { 'fdset-id': 'int', fd: 'int' }, ret: NONE },
  yank: { args: { instances: { array: YANK_INSTANCE } }, ret: NONE },
  'query-yank': { args: null, ret: { array: YANK_INSTANCE } },
};

/** The commands the library sends with `exec-oob` (execute's `oob` option, documented for yank). */
export const QMP_OOB_COMMANDS = ['yank'] as const satisfies readonly QmpCommandName[];

/** The QEMU events of the hypervisor contract's typed events (DEVICE_EJECTED is the library's own). */
type TypedQemuEvent = Exclude<KnownEventName, 'DEVICE_EJECTED'>;

/**
 * The events the library listens for, with the data members it reads. The contract's typed events
 * come from KnownEventData (compile-checked); the backend's own are named where they are listened
 * for, and a unit test (test/unit/qmp/surface.test.ts) fails when src/ listens for one not here
 * (or sends a command the typed map lacks, through execute's untyped overload).
 */
export const QMP_EVENTS: { readonly [E in TypedQemuEvent]: MembersOf<KnownEventData[E]> } & Readonly<Record<string, WireMembers>> = {
  VSERPORT_CHANGE: { id: 'str', open: 'bool' },
  SHUTDOWN: { guest: 'bool', reason: 'str' },
  GUEST_PANICKED: { action: 'str' },
  // Hot-unplug done (hotplug/devices.ts, cpus.ts, ejections.ts).
  DEVICE_DELETED: { device: 'str', path: 'str' },
  // virtio-mem reached a new size (hotplug/memory.ts).
  MEMORY_DEVICE_SIZE_CHANGE: { id: 'str', size: 'int', 'qom-path': 'str' },
  // A migration's status changed, with the `events` capability (template/migration.ts: a clone's restore ends on it).
  MIGRATION: { status: 'str' },
  // Waited for by the conformance suite (src/conformance/readiness.ts).
  STOP: {},
  RESUME: {},
  SUSPEND: {},
};
