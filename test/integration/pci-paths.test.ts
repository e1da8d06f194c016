// Guest PCI paths on the real default guest: what the library reports for cold and hot-added
// devices (virtio-blk, SCSI disks, NICs, the agent's channel) is where the guest's sysfs has them.
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import type { GuestPciPath, PluggedDevice } from '../../src/hypervisor/types.ts';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import type { GuestAgent } from '../guest/index.ts';
import { AGENT_DEVICE_ID, connectAgent, createTap, guestConfig, identityOf, rawDisk, scratchDir } from './helpers/sandbox.ts';
import { eventually } from './helpers/eventually.ts';

const PCI_ROOT = '/sys/devices/pci0000:00';
const VIRTIO_VENDOR = '0x1af4';


/** "key real-path" lines from the guest as a map. */
async function guestMap(agent: GuestAgent, command: string): Promise<Map<string, string>> {
  const out = await agent.runOk(command);
  return new Map(out.split('\n').filter(Boolean).map((line) => line.split(' ') as [string, string]));
}

/** Each disk's marker (its first 16 bytes) → the real sysfs path of /sys/block/<name>. */
const disksByMarker = (agent: GuestAgent) =>
  guestMap(agent, 'for d in /sys/block/vd* /sys/block/sd*; do [ -e "$d" ] || continue; echo "$(head -c 16 /dev/${d##*/} | tr -c A-Za-z0-9- .) $(readlink -f $d)"; done');
/** Each NIC's MAC → the real path of /sys/class/net/<if>/device. */
const nicsByMac = (agent: GuestAgent) => guestMap(agent, 'for i in /sys/class/net/*; do [ -e "$i/device" ] || continue; echo "$(cat $i/address) $(readlink -f $i/device)"; done');
/** Each virtio-serial port's name → its real sysfs path. */
const portsByName = (agent: GuestAgent) => guestMap(agent, 'for p in /sys/class/virtio-ports/*; do echo "$(cat $p/name) $(readlink -f $p)"; done');

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The guest's real path of the virtio device on the PCI function `pci`, then `rest` (a regexp source) below it. */
const under = (pci: GuestPciPath, rest = '') => new RegExp(`^${escape(`${PCI_ROOT}/${pci.sysfs}`)}/virtio\\d+${rest ? `/${rest}` : ''}$`);

/**
 * The guest's own view of the PCI function at the end of `pci`: /sys/bus/pci/devices/<address>
 * resolves to the whole reported chain, and it is a virtio function.
 */
async function expectGuestFunction(agent: GuestAgent, pci: GuestPciPath): Promise<void> {
  const address = pci.sysfs.split('/').at(-1) as string;
  const out = await agent.runOk(`readlink -f /sys/bus/pci/devices/${address}; cat /sys/bus/pci/devices/${address}/vendor`);
  expect(out.trim().split('\n')).toEqual([`${PCI_ROOT}/${pci.sysfs}`, VIRTIO_VENDOR]);
}

const find = (vm: QemuHypervisor, id: string): PluggedDevice => {
  const device = vm.devices().find((d) => d.id === id);
  if (!device) throw new Error(`${id} is not listed`);
  return device;
};

/** A guest whose cold devices need files and taps made for its QEMU's uid between createVM and startVM. */
function bootedGuest(
  config: (dir: string) => SandboxConfigInput,
  prepare: (vm: QemuHypervisor, dir: string, cleanup: (fn: () => void) => void) => void,
): { vm: () => QemuHypervisor; agent: () => GuestAgent; dir: () => string; warnings: readonly string[] } {
  const scratch = scratchDir();
  const cleanups: (() => void)[] = [];
  let vm: QemuHypervisor | undefined;
  let agent: GuestAgent | undefined;
  // The library logs a warning when QEMU's answer cannot confirm a path: none may appear.
  const warnings: string[] = [];
  const logger = pino({ level: 'warn' }, { write: (line: string) => void warnings.push(line) });
  beforeAll(async () => {
    vm = new QemuHypervisor({ deviceRemovalTimeoutMs: 15_000, logger });
    await vm.createVM(config(scratch.dir));
    prepare(vm, scratch.dir, (fn) => cleanups.push(fn));
    await vm.startVM();
    agent = await connectAgent(vm);
  });
  afterAll(async () => {
    await agent?.close();
    await vm?.stopVM();
    for (const cleanup of cleanups) cleanup();
    scratch.remove();
  });
  return { vm: () => vm as QemuHypervisor, agent: () => agent as GuestAgent, dir: () => scratch.dir, warnings };
}

describe('guest PCI paths: virtio-blk, NICs and the channel, cold and hot; SCSI on a hot-added controller', () => {
  const COLD_MAC = '52:54:00:a0:00:01';
  const HOT_MAC = '52:54:00:a0:00:02';
  const guest = bootedGuest(
    (dir) =>
      guestConfig({
        devices: [
          { type: 'channel', id: AGENT_DEVICE_ID, name: 'agent.0' },
          { type: 'block', id: 'cold-blk', path: `${dir}/cold-blk.img` },
          { type: 'net', id: 'cold-nic', tap: { ifname: 'svmmpci0' }, mac: COLD_MAC },
        ],
      }),
    (vm, dir, cleanup) => {
      rawDisk(dir, 'cold-blk.img', 'MARKER-COLD-BLK0', identityOf(vm));
      cleanup(createTap('svmmpci0', identityOf(vm).uid));
      cleanup(createTap('svmmpci1', identityOf(vm).uid));
    },
  );

  it('cold devices on the root bus: the disk, the NIC and the channel are where their paths say', async () => {
    const [vm, agent] = [guest.vm(), guest.agent()];
    const blk = find(vm, 'cold-blk');
    const nic = find(vm, 'cold-nic');
    const channel = find(vm, AGENT_DEVICE_ID);
    for (const d of [blk, nic, channel]) expect(d.pci.path).toMatch(/^[0-9a-f]{2}$/);
    expect(new Set([blk.pci.path, nic.pci.path, channel.pci.path]).size).toBe(3);

    expect((await disksByMarker(agent)).get('MARKER-COLD-BLK0')).toMatch(under(blk.pci, 'block/vd[a-z]+'));
    expect((await nicsByMac(agent)).get(COLD_MAC)).toMatch(under(nic.pci));
    expect((await portsByName(agent)).get('agent.0')).toMatch(under(channel.pci, 'virtio-ports/vport\\d+p\\d+'));
    for (const d of [blk, nic, channel]) await expectGuestFunction(agent, d.pci);
  });

  it('hot-added devices sit behind their root ports, at the bus numbers the guest gave the ports', async () => {
    const [vm, agent] = [guest.vm(), guest.agent()];
    const dir = guest.dir();
    const blk = await vm.hotplugAddDevice({ type: 'block', id: 'hot-blk', path: rawDisk(dir, 'hot-blk.img', 'MARKER-HOT-BLK01', identityOf(vm)) });
    const nic = await vm.hotplugAddDevice({ type: 'net', id: 'hot-nic', tap: { ifname: 'svmmpci1' }, mac: HOT_MAC });
    const scsi = await vm.hotplugAddDevice({ type: 'block', id: 'hot-scsi', driver: 'virtio-scsi', path: rawDisk(dir, 'hot-scsi.img', 'MARKER-HOT-SCSI1', identityOf(vm)) });

    // Three root ports, each on a slot of its own: two hops each in Kata's exact form (function 0
    // on both), distinct slots on the root bus, distinct buses behind them.
    for (const r of [blk, nic, scsi]) {
      expect(r.pci.path).toMatch(/^[0-9a-f]{2}\/00$/);
      expect(r.pci.sysfs).toMatch(/^0000:00:[0-9a-f]{2}\.0\/0000:[0-9a-f]{2}:00\.0$/);
      expect(find(vm, r.id).pci).toEqual(r.pci);
    }
    expect(new Set([blk, nic, scsi].map((r) => r.pci.path.split('/')[0])).size).toBe(3);
    expect(new Set([blk, nic, scsi].map((r) => r.pci.sysfs.split('/')[1]?.slice(0, 7))).size).toBe(3);
    expect(scsi.scsi).toEqual({ target: 0, lun: 0 });
    expect(find(vm, 'hot-scsi').scsi).toEqual({ target: 0, lun: 0 });

    const disks = await eventually(() => disksByMarker(agent), (d) => d.has('MARKER-HOT-BLK01') && d.has('MARKER-HOT-SCSI1'));
    expect(disks.get('MARKER-HOT-BLK01')).toMatch(under(blk.pci, 'block/vd[a-z]+'));
    expect(disks.get('MARKER-HOT-SCSI1')).toMatch(under(scsi.pci, 'host\\d+/target\\d+:0:0/\\d+:0:0:0/block/sd[a-z]+'));
    const nics = await eventually(() => nicsByMac(agent), (n) => n.has(HOT_MAC));
    expect(nics.get(HOT_MAC)).toMatch(under(nic.pci));
    for (const r of [blk, nic, scsi]) await expectGuestFunction(agent, r.pci);

    // A port freed and taken again reports the same path. It is handed out after the port never used.
    await vm.hotplugRemoveDevice('hot-blk');
    const filler = await vm.hotplugAddDevice({ type: 'block', id: 'hot-fill', path: rawDisk(dir, 'hot-fill.img', 'MARKER-HOT-FILL1', identityOf(vm)) });
    expect(filler.bus).not.toBe(blk.bus);
    const again = await vm.hotplugAddDevice({ type: 'block', id: 'hot-blk2', path: rawDisk(dir, 'hot-blk2.img', 'MARKER-HOT-BLK02', identityOf(vm)) });
    expect(again.bus).toBe(blk.bus);
    expect(again.pci).toEqual(blk.pci);
    const after = await eventually(() => disksByMarker(agent), (d) => d.has('MARKER-HOT-BLK02'));
    expect(after.get('MARKER-HOT-BLK02')).toMatch(under(again.pci, 'block/vd[a-z]+'));
    await vm.hotplugRemoveDevice('hot-fill');
  });

  it('QEMU confirmed every path it was asked about (the library logged no doubt)', () => {
    expect(guest.warnings).toEqual([]);
  });
});

describe('guest PCI paths: SCSI disks on a cold controller, cold and hot', () => {
  const guest = bootedGuest(
    (dir) =>
      guestConfig({
        devices: [
          { type: 'channel', id: AGENT_DEVICE_ID, name: 'agent.0' },
          { type: 'block', id: 'cold-scsi0', driver: 'virtio-scsi', path: `${dir}/cold-scsi0.img` },
          { type: 'block', id: 'cold-scsi1', driver: 'virtio-scsi', path: `${dir}/cold-scsi1.img` },
        ],
      }),
    (vm, dir) => {
      rawDisk(dir, 'cold-scsi0.img', 'MARKER-COLD-SC00', identityOf(vm));
      rawDisk(dir, 'cold-scsi1.img', 'MARKER-COLD-SC01', identityOf(vm));
    },
  );

  it('every disk reports the controller on the root bus, and its own SCSI address', async () => {
    const [vm, agent] = [guest.vm(), guest.agent()];
    const dir = guest.dir();
    const hot = await vm.hotplugAddDevice({ type: 'block', id: 'hot-scsi', driver: 'virtio-scsi', path: rawDisk(dir, 'hot-scsi.img', 'MARKER-HOT-SCSI2', identityOf(vm)) });
    const cold0 = find(vm, 'cold-scsi0');
    const cold1 = find(vm, 'cold-scsi1');
    expect(cold0.pci.path).toMatch(/^[0-9a-f]{2}$/);
    expect([cold1.pci, hot.pci]).toEqual([cold0.pci, cold0.pci]);
    expect([cold0.scsi, cold1.scsi, hot.scsi]).toEqual([
      { target: 0, lun: 0 },
      { target: 1, lun: 0 },
      { target: 2, lun: 0 },
    ]);

    const disks = await eventually(() => disksByMarker(agent), (d) => d.has('MARKER-HOT-SCSI2'));
    const at = (t: number) => `host\\d+/target\\d+:0:${t}/\\d+:0:${t}:0/block/sd[a-z]+`;
    expect(disks.get('MARKER-COLD-SC00')).toMatch(under(cold0.pci, at(0)));
    expect(disks.get('MARKER-COLD-SC01')).toMatch(under(cold0.pci, at(1)));
    expect(disks.get('MARKER-HOT-SCSI2')).toMatch(under(hot.pci, at(2)));
    await expectGuestFunction(agent, cold0.pci);
  });

  it('QEMU confirmed every path it was asked about (the library logged no doubt)', () => {
    expect(guest.warnings).toEqual([]);
  });
});
