// The feature probe: what a QEMU binary offers, learned over QMP (a fake monitor on a real unix
// socket here), kept per build of the binary, and checked against what a VM needs, naming the missing
// command, device or property and the binary.
import { mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { MissingFeatureError } from '../../../src/hypervisor/errors.ts';
import { QmpClient } from '../../../src/qmp/index.ts';
import { QMP_SURFACE } from '../../../src/qmp/surface.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import { featureNeeds, parseOptions, type FeatureNeeds } from '../../../src/qemu/features/needs.ts';
import { assertDevice, assertFeatures, offersMigrationToFile, probeFeatures, type QemuFeatures } from '../../../src/qemu/features/qemu-features.ts';
import { QemuFeatureStore } from '../../../src/qemu/features/store.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { FakeQmpServer, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';

const dir = mkdtempSync(join(tmpdir(), 'svmm-features-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A file standing in for the QEMU binary: the cache keys on its inode, size and mtime. */
const binary = join(dir, 'qemu-system-x86_64');
writeFileSync(binary, 'not really qemu');

let server: FakeQmpServer;
let qmp: QmpClient;

/** What the fake QEMU offers: every command the library sends unless `without` names it. */
interface FakeQemu {
  version?: [number, number, number];
  withoutCommands?: string[];
  machineType?: string;
  machineProps?: string[];
  devices?: Record<string, string[]>;
  /** Cases of the address union of `migrate`'s channels (QEMU 8.2+); no `channels` argument when absent. */
  migrationAddresses?: string[];
}

const DEFAULT_DEVICES: Record<string, string[]> = {
  'pcie-root-port': ['addr', 'chassis', 'io-reserve', 'hotplug'],
  'virtio-blk-pci': ['addr', 'drive', 'serial', 'write-cache'],
  'virtio-scsi-pci': ['addr'],
  'scsi-hd': ['drive', 'serial', 'write-cache'],
  'virtio-net-pci': ['addr', 'netdev', 'mac'],
  'vfio-pci': ['addr', 'host'],
  'vhost-vsock-pci': ['addr', 'guest-cid'],
  'virtio-serial-pci': ['addr'],
  virtserialport: ['chardev', 'name'],
  'isa-serial': ['chardev'],
  'virtio-mem-pci': ['memdev', 'requested-size', 'addr'],
  'pvpanic-pci': ['addr'],
};

function serve(fake: FakeQemu = {}): void {
  const [major, minor, micro] = fake.version ?? [10, 0, 2];
  server.handle('query-version', () => ({ qemu: { major, minor, micro }, package: 'fake' }));
  server.handle('query-qmp-schema', () => [
    ...Object.keys(QMP_SURFACE)
      .filter((name) => !fake.withoutCommands?.includes(name))
      .map((name) => ({ name, 'meta-type': 'command', 'arg-type': name === 'migrate' ? '10' : '0', 'ret-type': '1' })),
    { name: 'SHUTDOWN', 'meta-type': 'event', 'arg-type': '2' },
    { name: 'str', 'meta-type': 'builtin', 'json-type': 'string' },
    ...migrationSchema(fake.migrationAddresses),
  ]);
  server.handle('qom-get', (args) => (args?.['path'] === '/machine' && args['property'] === 'type' ? (fake.machineType ?? 'pc-q35-10.0-machine') : null));
  server.handle('qom-list-properties', () => (fake.machineProps ?? ['memory-backend', 'smm', 'acpi']).map((name) => ({ name, type: 'str' })));
  const devices = fake.devices ?? DEFAULT_DEVICES;
  server.handle('device-list-properties', (args) => {
    const props = devices[String(args?.['typename'])];
    if (!props) throw new QmpErrorReply('DeviceNotFound', `Device '${String(args?.['typename'])}' not found`);
    return props.map((name) => ({ name, type: 'str' }));
  });
}

/** `migrate`'s arguments as an introspected schema has them: opaque type names resolved step by step. */
function migrationSchema(addresses: string[] | undefined): object[] {
  const uri = { name: 'uri', type: 'str', default: null };
  if (!addresses) return [{ name: '10', 'meta-type': 'object', members: [uri] }];
  return [
    { name: '10', 'meta-type': 'object', members: [uri, { name: 'channels', type: '[11]', default: null }] },
    { name: '[11]', 'meta-type': 'array', 'element-type': '11' },
    { name: '11', 'meta-type': 'object', members: [{ name: 'channel-type', type: '13' }, { name: 'addr', type: '12' }] },
    { name: '12', 'meta-type': 'object', members: [{ name: 'transport', type: '14' }], tag: 'transport', variants: addresses.map((name, i) => ({ case: name, type: String(20 + i) })) },
    { name: '14', 'meta-type': 'enum', values: addresses },
  ];
}

const probeCommands = () => server.received.filter((c) => c.execute !== 'qmp_capabilities').map((c) => c.execute);

function needsOf(input: Partial<SandboxConfigInput> = {}): FeatureNeeds {
  const config = parseSandboxConfig({ boot: { kernel: '/k' }, ...input });
  return featureNeeds({ config, argv: buildQemuArgv(config, runtimePaths(join(dir, 'vm'))) });
}

beforeEach(async () => {
  server = await FakeQmpServer.start();
  qmp = await QmpClient.connect(server.path);
});

afterEach(async () => {
  await qmp.close();
  await server.close();
});

describe('featureNeeds', () => {
  it('lists every command the library sends, each -device driver with its properties, the machine and the hotplug drivers', () => {
    const needs = needsOf({ cpus: { boot: 1, max: 2 }, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' }, devices: [{ type: 'vsock', id: 'vsock0', guestCid: 3 }] });
    expect(needs.commands).toEqual(expect.arrayContaining(['device_add', 'query-hotpluggable-cpus', 'qom-set', 'query-qmp-schema']));
    expect(needs.commands).toHaveLength(Object.keys(QMP_SURFACE).length);
    expect([...(needs.devices.get('vhost-vsock-pci') ?? [])].sort()).toEqual(['addr', 'guest-cid']);
    expect(needs.devices.get('virtio-mem-pci')).toContain('memdev');
    // qdev options are no properties: device-list-properties never lists them.
    for (const props of needs.devices.values()) for (const option of ['driver', 'id', 'bus']) expect(props.has(option)).toBe(false);
    expect(needs.machine.name).toBe('q35');
    expect(needs.hotplugDrivers).toEqual(['virtio-blk-pci', 'virtio-scsi-pci', 'scsi-hd', 'virtio-net-pci', 'vfio-pci']);
  });

  it('adds pc-dimm to the hotplug drivers of a DIMM VM, and none without root ports', () => {
    expect(needsOf({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm', slots: 2 } }).hotplugDrivers).toContain('pc-dimm');
    expect(needsOf({ hotplug: { rootPorts: 0 } }).hotplugDrivers).toEqual([]);
  });

  it('reads option strings as the argv renders them: a doubled comma belongs to the value', () => {
    expect(parseOptions('virtio-blk-pci,drive=a,,b,serial=x,write-cache=on')).toEqual(['virtio-blk-pci', ['drive', 'serial', 'write-cache']]);
    expect(parseOptions('q35')).toEqual(['q35', []]);
  });
});

describe('probeFeatures and assertFeatures', () => {
  it('learns the version, the command names, the machine type with its properties and each driver’s properties', async () => {
    serve({ machineType: 'pc-q35-7.2-machine', version: [7, 2, 22] });
    const features = await probeFeatures(qmp, needsOf(), undefined, {});
    expect(features.version).toEqual({ major: 7, minor: 2, micro: 22 });
    expect(features.commands.has('device_add')).toBe(true);
    expect(features.commands.has('SHUTDOWN')).toBe(false);
    expect(features.machines.get('q35')).toEqual({ type: 'pc-q35-7.2-machine', props: new Set(['memory-backend', 'smm', 'acpi']) });
    expect(features.devices.get('virtio-net-pci')).toEqual(new Set(['addr', 'netdev', 'mac']));
    expect(server.received.find((c) => c.execute === 'qom-list-properties')?.arguments).toEqual({ typename: 'pc-q35-7.2-machine' });
  });

  it('a command the library sends that the schema lacks: MissingFeatureError naming the command, the binary and its version', async () => {
    serve({ withoutCommands: ['query-hotpluggable-cpus'], version: [6, 2, 0] });
    const features = await probeFeatures(qmp, needsOf(), undefined, {});
    const error = (() => {
      try {
        assertFeatures(binary, features, needsOf());
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(error).toBeInstanceOf(MissingFeatureError);
    expect(error).toMatchObject({ code: 'FEATURE_MISSING', binary, kind: 'command', feature: 'query-hotpluggable-cpus' });
    expect((error as Error).message).toBe(`${binary} (QEMU 6.2.0) lacks the QMP command query-hotpluggable-cpus, which this VM needs`);
  });

  it('a device the config uses that QEMU lacks, a property of it, or a machine property: each named', async () => {
    const needs = needsOf({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' } });
    const { 'virtio-mem-pci': _gone, ...withoutVirtioMem } = DEFAULT_DEVICES;
    serve({ devices: withoutVirtioMem });
    let features = await probeFeatures(qmp, needs, undefined, {});
    expect(features.devices.get('virtio-mem-pci')).toBeNull();
    expect(() => assertFeatures(binary, features, needs)).toThrow(expect.objectContaining({ kind: 'device', feature: 'virtio-mem-pci' }));

    serve({ devices: { ...DEFAULT_DEVICES, 'virtio-mem-pci': ['memdev', 'addr'] } });
    features = await probeFeatures(qmp, needs, undefined, {});
    expect(() => assertFeatures(binary, features, needs)).toThrow(expect.objectContaining({ kind: 'device-property', feature: 'virtio-mem-pci.requested-size' }));

    // Shared memory boots from a memory backend: -machine memory-backend=… (QEMU >= 5.0).
    const shared = needsOf({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem', backing: { type: 'shared' } } });
    expect(shared.machine.props).toEqual(new Set(['memory-backend']));
    serve({ machineProps: ['smm'], machineType: 'pc-q35-4.2-machine' });
    features = await probeFeatures(qmp, shared, undefined, {});
    expect(() => assertFeatures(binary, features, shared)).toThrow(expect.objectContaining({ kind: 'machine-property', feature: 'pc-q35-4.2-machine.memory-backend' }));
  });

  it('needs nothing of a hotplug driver QEMU lacks until it is used: then the error names it', async () => {
    const { 'vfio-pci': _gone, ...withoutVfio } = DEFAULT_DEVICES;
    serve({ devices: withoutVfio });
    const features = await probeFeatures(qmp, needsOf(), undefined, {});
    expect(() => assertFeatures(binary, features, needsOf())).not.toThrow();
    expect(() => assertDevice(binary, features, 'vfio-pci', ['host'])).toThrow(expect.objectContaining({ kind: 'device', feature: 'vfio-pci' }));
    expect(() => assertDevice(binary, features, 'virtio-blk-pci', ['drive', 'discard'])).toThrow(expect.objectContaining({ kind: 'device-property', feature: 'virtio-blk-pci.discard' }));
  });

  it('with `partial`, lets pass drivers not probed yet (the pre-spawn check of what earlier VMs learned)', () => {
    const known: QemuFeatures = {
      version: { major: 10, minor: 0, micro: 2 },
      commands: new Set(Object.keys(QMP_SURFACE)),
      devices: new Map(),
      machines: new Map(),
      migrationToFile: true,
    };
    expect(() => assertFeatures(binary, known, needsOf(), true)).not.toThrow();
    expect(() => assertFeatures(binary, known, needsOf())).toThrow(MissingFeatureError);
  });

  it('learns whether `migrate` takes a file address (its channels’ address union has a `file` case)', async () => {
    serve({ migrationAddresses: ['socket', 'exec', 'rdma', 'file'] });
    expect((await probeFeatures(qmp, needsOf(), undefined, {})).migrationToFile).toBe(true);
    serve({ migrationAddresses: ['socket', 'exec', 'rdma'] });
    expect((await probeFeatures(qmp, needsOf(), undefined, {})).migrationToFile).toBe(false);
    serve();
    expect((await probeFeatures(qmp, needsOf(), undefined, {})).migrationToFile).toBe(false);
  });

  it('reads a schema without `migrate`, or whose types do not resolve, as no file address; a schema entry without a name is an invalid reply', () => {
    expect(offersMigrationToFile([{ name: 'str', 'meta-type': 'builtin', 'json-type': 'string' }])).toBe(false);
    expect(offersMigrationToFile([{ name: 'migrate', 'meta-type': 'command', 'arg-type': '99', 'ret-type': '1' }])).toBe(false);
    expect(() => offersMigrationToFile([{ 'meta-type': 'command' }])).toThrow(expect.objectContaining({ code: 'INVALID_REPLY', command: 'query-qmp-schema' }));
  });

  it('refuses a reply that is not what the command returns', async () => {
    serve();
    server.handle('query-version', () => ({ qemu: { major: '10' } }));
    await expect(probeFeatures(qmp, needsOf(), undefined, {})).rejects.toMatchObject({ code: 'INVALID_REPLY', command: 'query-version' });
    serve();
    server.handle('qom-get', () => 'pc-q35,evil=1');
    await expect(probeFeatures(qmp, needsOf(), undefined, {})).rejects.toMatchObject({ code: 'INVALID_REPLY', command: 'qom-get' });
  });
});

describe('QemuFeatureStore', () => {
  it('probes a binary’s first VM, and a later VM of the same build not at all', async () => {
    serve();
    const store = new QemuFeatureStore();
    expect(store.known(binary)).toBeUndefined();
    const first = await store.learn(binary, qmp, needsOf());
    const sent = probeCommands().length;
    expect(probeCommands()).toEqual(expect.arrayContaining(['query-version', 'query-qmp-schema', 'qom-get', 'qom-list-properties', 'device-list-properties']));
    expect(await store.learn(binary, qmp, needsOf())).toBe(first);
    expect(probeCommands()).toHaveLength(sent);
    expect(store.known(binary)).toBe(first);
    expect(store.probes).toBe(1);
  });

  it('probes only the drivers a later VM adds', async () => {
    serve();
    const store = new QemuFeatureStore();
    await store.learn(binary, qmp, needsOf());
    server.received.length = 0;
    await store.learn(binary, qmp, needsOf({ devices: [{ type: 'vsock', id: 'vsock0', guestCid: 3 }] }));
    expect(server.received.map((c) => [c.execute, c.arguments])).toEqual([['device-list-properties', { typename: 'vhost-vsock-pci' }]]);
  });

  it('probes again once the binary changed (a new mtime), and forgets nothing else', async () => {
    serve({ version: [7, 2, 22] });
    const store = new QemuFeatureStore();
    await store.learn(binary, qmp, needsOf());
    const later = new Date(Date.now() + 120_000);
    utimesSync(binary, later, later);
    expect(store.known(binary)).toBeUndefined();
    serve({ version: [10, 0, 2] });
    server.received.length = 0;
    const upgraded = await store.learn(binary, qmp, needsOf());
    expect(upgraded.version).toEqual({ major: 10, minor: 0, micro: 2 });
    expect(probeCommands()).toContain('query-qmp-schema');
    expect(store.probes).toBe(2);
  });

  it('lets concurrent first VMs share one probe', async () => {
    serve();
    const store = new QemuFeatureStore();
    const [a, b] = await Promise.all([store.learn(binary, qmp, needsOf()), store.learn(binary, qmp, needsOf())]);
    expect(b).toBe(a);
    expect(probeCommands().filter((name) => name === 'query-qmp-schema')).toHaveLength(1);
  });

  it('keeps nothing of a probe that failed', async () => {
    serve();
    server.handle('query-qmp-schema', () => {
      throw new QmpErrorReply('GenericError', 'no schema today');
    });
    const store = new QemuFeatureStore();
    await expect(store.learn(binary, qmp, needsOf())).rejects.toMatchObject({ code: 'QMP_COMMAND_FAILED' });
    expect(store.known(binary)).toBeUndefined();
    serve();
    await expect(store.learn(binary, qmp, needsOf())).resolves.toMatchObject({ version: { major: 10 } });
  });
});
