// The mock reports the guest PCI paths the QEMU backend derives for the same config and the same
// hotplugs: the same layout rules, the same strings.
import { describe, expect, it } from 'vitest';
import { ConfigError, parseSandboxConfig, type DeviceConfigInput, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import { emptyHotplugState } from '../../../src/qemu/hotplug/state.ts';
import { PciPaths } from '../../../src/qemu/pci-paths.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { MockHypervisor } from '../../../src/mock/index.ts';
import type { MockHotplugState } from '../../../src/mock/machine.ts';
import { locateMockDevice } from '../../../src/mock/pci.ts';

const devices: DeviceConfigInput[] = [
  { type: 'channel', id: 'agent', name: 'agent.0' },
  { type: 'block', id: 'vblk', path: '/img/vblk' },
  { type: 'vfio', id: 'gpu0', hostAddress: '0000:01:00.0' },
  { type: 'block', id: 'sc0', driver: 'virtio-scsi', path: '/img/sc0' },
  { type: 'channel', id: 'log', name: 'log.0' },
  { type: 'net', id: 'nic', tap: { ifname: 'tap0' } },
  { type: 'block', id: 'sc1', driver: 'virtio-scsi', path: '/img/sc1' },
  { type: 'vfio', id: 'gpu1', hostAddress: '0000:02:00.0' },
  { type: 'rng', id: 'rng' },
  { type: 'pvpanic', id: 'panic' },
];

const configs: [string, SandboxConfigInput][] = [
  ['no devices, no root ports', { boot: { kernel: '/k' }, hotplug: { rootPorts: 0 } }],
  ['a root image, virtio-mem, 9 root ports and every kind', { boot: { kernel: '/k', image: '/img/root' }, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' }, hotplug: { rootPorts: 9 }, devices }],
  ['dimm memory, 2 root ports, every kind', { boot: { kernel: '/k' }, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' }, hotplug: { rootPorts: 2 }, devices }],
];

describe('mock guest PCI paths', () => {
  it.each(configs)('cold devices match the QEMU backend: %s', (_name, input) => {
    const config = parseSandboxConfig({ machine: { accel: 'tcg' }, ...input });
    const qemu = new PciPaths(buildQemuArgv(config, runtimePaths('/run/vm'), { isBlockDevice: () => false, isBlockDeviceFd: () => false }).pci, config.devices);
    for (const device of config.devices) expect(locateMockDevice(device, config, undefined), device.id).toEqual(qemu.locate(device, emptyHotplugState()));
  });

  it('hot devices and a hot SCSI controller match the QEMU backend', () => {
    const config = parseSandboxConfig({ machine: { accel: 'tcg' }, boot: { kernel: '/k' }, hotplug: { rootPorts: 10 }, devices: [{ type: 'rng', id: 'rng' }] });
    const qemu = new PciPaths(buildQemuArgv(config, runtimePaths('/run/vm'), { isBlockDevice: () => false, isBlockDeviceFd: () => false }).pci, config.devices);
    const disk = (id: string, driver: 'virtio-blk' | 'virtio-scsi') =>
      ({ type: 'block', id, path: `/img/${id}`, driver, format: 'raw', readOnly: false, cache: 'writeback', aio: 'threads' }) as const;
    const placed = [
      { id: 'a', device: disk('a', 'virtio-blk'), bus: 'rp9' },
      { id: 'b', device: disk('b', 'virtio-scsi'), bus: 'scsi0.0' },
    ];
    const infrastructure = [{ id: 'scsi0', bus: 'rp8' }];
    const qemuState = { ...emptyHotplugState(), devices: placed.map((d) => ({ ...d, backends: [] })), infrastructure };
    const mockState: MockHotplugState = {
      devices: placed.map((d) => ({ ...d, guestAsked: false, released: false })),
      infrastructure,
      cpus: [],
      virtioMemMiB: 0,
      virtioMemPluggedMiB: 0,
      dimms: [],
      vcpuRemoved: false,
      vcpuAdds: 0,
    };
    for (const { device } of placed) expect(locateMockDevice(device, config, mockState), device.id).toEqual(qemu.locate(device, qemuState));
    expect(locateMockDevice(disk('a', 'virtio-blk'), config, mockState).pci).toEqual({ path: '0a/00', sysfs: '0000:00:0a.0/0000:0a:00.0' });
  });
});

describe('the root bus budget', () => {
  /** 24 hotplug ports, a root image and virtio-mem leave 4 slots: `extra` devices after 4 that fit. */
  const crowded = (extra: DeviceConfigInput[]): SandboxConfigInput => ({
    machine: { accel: 'tcg' },
    boot: { kernel: '/k', image: '/img/root' },
    memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' },
    hotplug: { rootPorts: 24 },
    devices: [{ type: 'rng', id: 'rng0' }, { type: 'channel', id: 'agent', name: 'agent.0' }, { type: 'vfio', id: 'gpu0', hostAddress: '0000:01:00.0' }, { type: 'rng', id: 'rng1' }, ...extra],
  });
  const refusal = (build: () => unknown): ConfigError => {
    try {
      build();
    } catch (error) {
      if (error instanceof ConfigError) return error;
      throw error;
    }
    throw new Error('the config was accepted');
  };

  it('the mock refuses at createVM, with the builder\'s error, a config the builder refuses; and takes one that fits', async () => {
    const qemu = (input: SandboxConfigInput) => buildQemuArgv(parseSandboxConfig(input), runtimePaths('/run/vm'), { isBlockDevice: () => false, isBlockDeviceFd: () => false });
    expect(() => qemu(crowded([]))).not.toThrow();
    const fits = new MockHypervisor({ host: false });
    await fits.createVM(crowded([]));
    await fits.stopVM();
    for (const extra of [{ type: 'rng', id: 'rng2' }, { type: 'vfio', id: 'gpu1', hostAddress: '0000:02:00.0' }, { type: 'block', id: 'sc', driver: 'virtio-scsi', path: '/img/sc' }] as const) {
      const expected = refusal(() => qemu(crowded([extra])));
      expect(expected.paths).toEqual(['devices']);
      const vm = new MockHypervisor({ host: false });
      const error = await vm.createVM(crowded([extra])).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error, extra.id).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).message).toBe(expected.message);
    }
  });
});
