// Guest PCI paths of the QEMU backend: derived from the builder's PCI plan, read from query-pci
// replies (untrusted), and confirmed after a hotplug against a fake QMP server on a real socket.
import { readFileSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { parseSandboxConfig, type SandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { InvalidReplyError } from '../../../src/hypervisor/errors.ts';
import { guestPciPath } from '../../../src/hypervisor/pci-path.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import type { PciPlan } from '../../../src/qemu/argv/pci.ts';
import type { HostProbe } from '../../../src/qemu/devices/index.ts';
import { emptyHotplugState, type HotplugState } from '../../../src/qemu/hotplug/state.ts';
import { PciPaths, topologyFromQueryPci } from '../../../src/qemu/pci-paths.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { QmpClient } from '../../../src/qmp/index.ts';
import type { Logger } from '../../../src/util/logger.ts';
import { deviceOptions } from '../../helpers/qemu-options.ts';
import { FakeQmpServer, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';

const noBlockDevices: HostProbe = { isBlockDevice: () => false, isBlockDeviceFd: () => false };

function build(input: Partial<SandboxConfigInput>): { config: SandboxConfig; plan: PciPlan; args: string[] } {
  const config = parseSandboxConfig({ machine: { accel: 'tcg' }, boot: { kernel: '/k' }, ...input });
  const { args, pci } = buildQemuArgv(config, runtimePaths('/run/vm'), noBlockDevices);
  return { config, plan: pci, args };
}

// slot 1 virtio-mem; slots 2-4 root ports rp0-rp2; then the cold devices in order, each on a slot:
// the virtio-serial controller (5), the disk (6), the SCSI controller (7), the NIC (8), the VFIO
// device's own port rp3 (9), the rng (10).
const layout: Partial<SandboxConfigInput> = {
  memory: { bootMiB: 256, maxMiB: 1024, hotplug: 'virtio-mem' },
  hotplug: { rootPorts: 3 },
  devices: [
    { type: 'channel', id: 'agent', name: 'agent.0' },
    { type: 'block', id: 'vblk', path: '/img/vblk' },
    { type: 'block', id: 'sc0', driver: 'virtio-scsi', path: '/img/sc0' },
    { type: 'block', id: 'sc1', driver: 'virtio-scsi', path: '/img/sc1' },
    { type: 'net', id: 'nic', tap: { ifname: 'tap0' } },
    { type: 'vfio', id: 'gpu', hostAddress: '0000:01:00.0' },
    { type: 'rng', id: 'rng' },
  ],
};

function hotState(devices: { id: string; bus: string; scsi?: boolean }[], infrastructure: { id: string; bus: string }[] = []): HotplugState {
  const state = emptyHotplugState();
  state.devices = devices.map(({ id, bus, scsi }) => ({
    id,
    bus,
    backends: [],
    device: { type: 'block', id, path: `/img/${id}`, driver: scsi ? 'virtio-scsi' : 'virtio-blk', format: 'raw', readOnly: false, cache: 'writeback', aio: 'threads' },
  }));
  state.infrastructure = infrastructure;
  return state;
}

const located = (paths: PciPaths, config: SandboxConfig, state: HotplugState = emptyHotplugState()) =>
  Object.fromEntries([...config.devices, ...state.devices.map((d) => d.device)].map((d) => [d.id, paths.locate(d, state)]));

describe('paths from the PCI plan', () => {
  it('the plan records the address the argv gives each device, controller and root port', () => {
    const { plan, args } = build(layout);
    const addrs = new Map(deviceOptions(args).map((d) => [d.get('id'), d.get('addr')]));
    expect(plan.rootBus.size).toBe(10);
    for (const [id, at] of plan.rootBus) {
      expect(addrs.get(id), id).toBe(`0x${at.slot.toString(16)}`);
    }
    expect([...plan.rootBus].filter(([, at]) => at.bridge).map(([id]) => id)).toEqual(['rp0', 'rp1', 'rp2', 'rp3']);
    expect(plan.behindPort).toEqual(new Map([['gpu', 'rp3']]));
    expect(new Map(deviceOptions(args).map((d) => [d.get('id'), d.get('bus')])).get('gpu')).toBe('rp3');
  });

  it('cold devices: their own function, the controller they hang off, or slot 0 behind their own port', () => {
    const { config, plan } = build(layout);
    expect(located(new PciPaths(plan, config.devices), config)).toEqual({
      agent: { pci: { path: '05', sysfs: '0000:00:05.0' } },
      vblk: { pci: { path: '06', sysfs: '0000:00:06.0' } },
      sc0: { pci: { path: '07', sysfs: '0000:00:07.0' }, scsi: { target: 0, lun: 0 } },
      sc1: { pci: { path: '07', sysfs: '0000:00:07.0' }, scsi: { target: 1, lun: 0 } },
      nic: { pci: { path: '08', sysfs: '0000:00:08.0' } },
      // The fourth bridge in slot order: bus 4.
      gpu: { pci: { path: '09/00', sysfs: '0000:00:09.0/0000:04:00.0' } },
      rng: { pci: { path: '0a', sysfs: '0000:00:0a.0' } },
    });
  });

  it('hot devices: slot 0 behind the root port they took; a SCSI disk reports the controller, cold or hot', () => {
    const { config, plan } = build(layout);
    const state = hotState([
      { id: 'h1', bus: 'rp1' },
      { id: 'h0', bus: 'rp0' },
      { id: 'hs', bus: 'scsi0.0', scsi: true },
    ]);
    const paths = new PciPaths(plan, config.devices);
    expect(paths.locate(state.devices[0]?.device as never, state)).toEqual({ pci: { path: '03/00', sysfs: '0000:00:03.0/0000:02:00.0' } });
    expect(paths.locate(state.devices[1]?.device as never, state)).toEqual({ pci: { path: '02/00', sysfs: '0000:00:02.0/0000:01:00.0' } });
    // On the cold controller; its address is known only once QEMU is asked.
    expect(paths.locate(state.devices[2]?.device as never, state)).toEqual({ pci: { path: '07', sysfs: '0000:00:07.0' } });

    const bare = build({ hotplug: { rootPorts: 2 } });
    const withController = hotState([{ id: 'hs', bus: 'scsi0.0', scsi: true }], [{ id: 'scsi0', bus: 'rp1' }]);
    expect(new PciPaths(bare.plan, []).locate(withController.devices[0]?.device as never, withController)).toEqual({
      pci: { path: '02/00', sysfs: '0000:00:02.0/0000:02:00.0' },
    });
  });

  it('a root image takes slot 1, before everything else', () => {
    const { config, plan } = build({ boot: { kernel: '/k', image: '/img/root' }, hotplug: { rootPorts: 1 }, devices: [{ type: 'rng', id: 'rng' }] });
    expect(plan.rootBus.get('rootfs')).toEqual({ slot: 1, bridge: false });
    expect(plan.rootBus.get('rp0')).toEqual({ slot: 2, bridge: true });
    expect(located(new PciPaths(plan, config.devices), config)).toEqual({ rng: { pci: { path: '03', sysfs: '0000:00:03.0' } } });
  });
});

/** A QEMU 7.2-shaped query-pci entry (class, ids and regions are not read). */
function fn(bus: number, slot: number, func: number, qdevId: string, bridge?: { secondary: number; devices?: unknown[] }): Record<string, unknown> {
  const entry: Record<string, unknown> = { bus, slot, function: func, class_info: { class: 256 }, id: { device: 1, vendor: 0x1af4 }, qdev_id: qdevId, regions: [] };
  if (bridge) entry['pci_bridge'] = { bus: { number: bus, secondary: bridge.secondary, subordinate: bridge.secondary }, devices: bridge.devices ?? [] };
  return entry;
}

describe('topologyFromQueryPci', () => {
  it('reads a reply recorded from QEMU 7.2 (SeaBIOS numbered the ports; "hot" device_add-ed on rp1)', () => {
    // qemu-system-x86_64 -machine q35 -nodefaults … pcie-root-port rp0 at 0x2, rp1 at 0x3,
    // virtio-blk-pci "cold" at 0x4, then device_add virtio-blk-pci id=hot bus=rp1, then query-pci.
    // The reply also lists the unnamed ICH9 functions at 1f.0, 1f.2 and 1f.3.
    const reply: unknown = JSON.parse(readFileSync(new URL('./fixtures/query-pci-qemu-7.2.json', import.meta.url), 'utf8'));
    const topology = topologyFromQueryPci(reply);
    expect(topology.bridgeBuses).toEqual(
      new Map([
        ['rp0', 1],
        ['rp1', 2],
      ]),
    );
    expect(guestPciPath(topology.hops.get('hot') ?? [])).toEqual({ path: '03/00', sysfs: '0000:00:03.0/0000:02:00.0' });
    expect(guestPciPath(topology.hops.get('cold') ?? [])).toEqual({ path: '04', sysfs: '0000:00:04.0' });
    expect([...topology.hops.keys()]).toEqual(['rp0', 'rp1', 'hot', 'cold']);
  });

  it('reads each function by qdev id with the hops to it, and the bus numbers the firmware gave bridges', () => {
    const topology = topologyFromQueryPci([
      {
        bus: 0,
        devices: [
          fn(0, 0, 0, ''),
          fn(0, 2, 0, 'rp0', { secondary: 1, devices: [fn(1, 0, 0, 'disk')] }),
          fn(0, 3, 0, 'rp1', { secondary: 2 }),
          fn(0, 4, 0, 'rp2', { secondary: 0 }),
          fn(0, 5, 0, 'vserial0'),
          fn(0, 0x1f, 3, ''),
        ],
      },
    ]);
    expect(topology.bridgeBuses).toEqual(
      new Map([
        ['rp0', 1],
        ['rp1', 2],
      ]),
    );
    expect(topology.hops.get('disk')).toEqual([
      { bus: 0, slot: 2 },
      { bus: 1, slot: 0 },
    ]);
    expect(topology.hops.get('vserial0')).toEqual([{ bus: 0, slot: 5 }]);
    expect(topology.hops.has('')).toBe(false);
  });

  it('leaves out what is behind a bridge the firmware has not numbered yet', () => {
    const topology = topologyFromQueryPci([{ bus: 0, devices: [fn(0, 2, 0, 'rp0', { secondary: 0, devices: [fn(0, 0, 0, 'disk')] })] }]);
    expect(topology.hops.has('disk')).toBe(false);
    expect(topology.bridgeBuses.size).toBe(0);
  });

  /** `levels` bridges, each behind the one before, numbered consistently. */
  const nest = (levels: number, bus = 0): Record<string, unknown> =>
    levels === 0 ? fn(bus, 0, 0, 'leaf') : fn(bus, 1, 0, `b${bus}`, { secondary: bus + 1, devices: [nest(levels - 1, bus + 1)] });
  it.each([
    ['not a list', { bus: 0 }, 'list of buses'],
    ['no root bus', [{ bus: 1, devices: [] }], 'no root bus'],
    ['devices not a list', [{ bus: 0, devices: 'x' }], 'lists no devices'],
    ['a device not an object', [{ bus: 0, devices: [null] }], 'null'],
    ['slot out of range', [{ bus: 0, devices: [fn(0, 32, 0, 'x')] }], 'slot is 32'],
    ['function out of range', [{ bus: 0, devices: [fn(0, 1, 8, 'x')] }], 'function is 8'],
    ['a named device at a non-zero function', [{ bus: 0, devices: [fn(0, 2, 1, 'rp1')] }], '"rp1" is at 0:2.1'],
    ['a device behind a port at a non-zero function', [{ bus: 0, devices: [fn(0, 2, 0, 'rp0', { secondary: 1, devices: [fn(1, 0, 2, 'hot')] })] }], '"hot" is at 1:0.2'],
    ['an unnamed bridge at a non-zero function', [{ bus: 0, devices: [fn(0, 2, 3, '', { secondary: 1 })] }], 'a bridge is at 0:2.3'],
    ['bus a string', [{ bus: 0, devices: [{ ...fn(0, 1, 0, 'x'), bus: '0' }] }], 'bus is "0"'],
    ['listed on the wrong bus', [{ bus: 0, devices: [fn(3, 1, 0, 'x')] }], 'says it is on bus 3'],
    ['qdev_id not a string', [{ bus: 0, devices: [{ ...fn(0, 1, 0, 'x'), qdev_id: 7 }] }], 'qdev_id'],
    ['pci_bridge not an object', [{ bus: 0, devices: [{ ...fn(0, 1, 0, 'x'), pci_bridge: 1 }] }], 'pci_bridge'],
    ['a bridge leading back', [{ bus: 0, devices: [fn(0, 1, 0, 'x', { secondary: 2, devices: [fn(2, 0, 0, 'y', { secondary: 1 })] })] }], 'leads back to bus 1'],
    ['secondary bus out of range', [{ bus: 0, devices: [fn(0, 1, 0, 'x', { secondary: 256 })] }], 'secondary bus is 256'],
    ['nested too deep', [{ bus: 0, devices: [nest(12)] }], 'nested deeper'],
  ])('refuses a reply with %s', (_name, reply, problem) => {
    let error: unknown;
    try {
      topologyFromQueryPci(reply);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(InvalidReplyError);
    expect((error as InvalidReplyError).command).toBe('query-pci');
    expect((error as Error).message).toContain(problem);
  });
});

describe('confirming a hot-added device from QEMU', () => {
  let server: FakeQmpServer;
  let qmp: QmpClient;
  let warn: ReturnType<typeof vi.fn>;
  let logger: Logger;

  beforeEach(async () => {
    server = await FakeQmpServer.start();
    qmp = await QmpClient.connect(server.path);
    warn = vi.fn();
    logger = { warn } as unknown as Logger;
  });

  afterEach(async () => {
    await qmp.close();
    await server.close();
  });

  const sent = () => server.received.filter((c) => c.execute !== 'qmp_capabilities').map((c) => [c.execute, c.arguments]);

  /** The layout's ports rp0-rp3, numbered by a firmware that started at bus 5, `hot` behind rp1. */
  const reply = (hot: Record<string, unknown>[]) => [
    {
      bus: 0,
      devices: [
        fn(0, 2, 0, 'rp0', { secondary: 5 }),
        fn(0, 3, 0, 'rp1', { secondary: 6, devices: hot }),
        fn(0, 4, 0, 'rp2', { secondary: 7 }),
        fn(0, 7, 0, 'scsi0'),
        fn(0, 9, 0, 'rp3', { secondary: 8, devices: [fn(8, 0, 0, 'gpu')] }),
      ],
    },
  ];

  it("takes the bus numbers QEMU reports over the firmware rule, for the new device and the ports' other devices", async () => {
    const { config, plan } = build(layout);
    const state = hotState([{ id: 'h1', bus: 'rp1' }]);
    const paths = new PciPaths(plan, config.devices);
    server.handle('query-pci', () => reply([fn(6, 0, 0, 'h1')]));
    await paths.confirm(qmp, state.devices[0]?.device as never, {}, logger);
    expect(sent()).toEqual([['query-pci', undefined]]);
    expect(paths.locate(state.devices[0]?.device as never, state)).toEqual({ pci: { path: '03/00', sysfs: '0000:00:03.0/0000:06:00.0' } });
    expect(located(paths, config, state)['gpu']).toEqual({ pci: { path: '09/00', sysfs: '0000:00:09.0/0000:08:00.0' } });
    expect(warn).not.toHaveBeenCalled();
  });

  it('where QEMU put the device wins over where the plan says it went', async () => {
    const { config, plan } = build(layout);
    const state = hotState([{ id: 'h1', bus: 'rp1' }]);
    const paths = new PciPaths(plan, config.devices);
    server.handle('query-pci', () => reply([fn(6, 3, 0, 'h1')]));
    await paths.confirm(qmp, state.devices[0]?.device as never, {}, logger);
    expect(paths.locate(state.devices[0]?.device as never, state).pci).toEqual({ path: '03/03', sysfs: '0000:00:03.0/0000:06:03.0' });
  });

  it("a SCSI disk: the controller's path, and the address QEMU gave the disk (qom-get)", async () => {
    const { config, plan } = build(layout);
    const state = hotState([{ id: 'hs', bus: 'scsi0.0', scsi: true }]);
    const paths = new PciPaths(plan, config.devices);
    server.handle('query-pci', () => reply([]));
    server.handle('qom-get', (args) => (args?.['property'] === 'scsi-id' ? 2 : 0));
    await paths.confirm(qmp, state.devices[0]?.device as never, {}, logger);
    expect(sent()).toEqual([
      ['query-pci', undefined],
      ['qom-get', { path: '/machine/peripheral/hs', property: 'scsi-id' }],
      ['qom-get', { path: '/machine/peripheral/hs', property: 'lun' }],
    ]);
    expect(paths.locate(state.devices[0]?.device as never, state)).toEqual({ pci: { path: '07', sysfs: '0000:00:07.0' }, scsi: { target: 2, lun: 0 } });
  });

  it.each([
    ['QEMU refuses query-pci', () => new QmpErrorReply('CommandNotFound', 'no query-pci'), undefined],
    ['the reply is not a topology', () => ({ bus: 0 }), undefined],
    ['the SCSI address is not a number', () => [{ bus: 0, devices: [] }], 'two'],
    ['the SCSI address is out of range', () => [{ bus: 0, devices: [] }], 256],
  ])('when %s, the planned path is reported and the problem logged', async (_name, queryPci, scsiId) => {
    const { config, plan } = build({ hotplug: { rootPorts: 2 } });
    const state = hotState([{ id: 'h0', bus: 'rp0' }, { id: 'hs', bus: 'scsi0.0', scsi: true }], [{ id: 'scsi0', bus: 'rp1' }]);
    const paths = new PciPaths(plan, config.devices);
    server.handle('query-pci', () => {
      const answer = queryPci();
      if (answer instanceof QmpErrorReply) throw answer;
      return answer;
    });
    server.handle('qom-get', () => scsiId);
    const device = state.devices[scsiId === undefined ? 0 : 1]?.device;
    await paths.confirm(qmp, device as never, {}, logger);
    expect(paths.locate(device as never, state)).toEqual({
      pci: scsiId === undefined ? { path: '01/00', sysfs: '0000:00:01.0/0000:01:00.0' } : { path: '02/00', sysfs: '0000:00:02.0/0000:02:00.0' },
    });
    expect(warn).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls[0]?.[0]).toMatchObject({ device: device?.id });
  });

  it('a device re-added under the same id never keeps what QEMU said about its predecessor', async () => {
    const { config, plan } = build(layout);
    const paths = new PciPaths(plan, config.devices);
    const first = hotState([{ id: 'h', bus: 'rp1' }]);
    server.handle('query-pci', () => reply([fn(6, 0, 0, 'h')]));
    await paths.confirm(qmp, first.devices[0]?.device as never, {}, logger);
    expect(paths.locate(first.devices[0]?.device as never, first).pci.path).toBe('03/00');

    const second = hotState([{ id: 'h', bus: 'rp2' }]);
    server.handle('query-pci', () => {
      throw new QmpErrorReply('GenericError', 'busy');
    });
    await paths.confirm(qmp, second.devices[0]?.device as never, {}, logger);
    // rp2's bus as QEMU reported it earlier (7), the slot the plan gives.
    expect(paths.locate(second.devices[0]?.device as never, second).pci).toEqual({ path: '04/00', sysfs: '0000:00:04.0/0000:07:00.0' });
  });
});
