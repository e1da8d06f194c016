// Hotplug and resize on the real default guest under TCG, each proven from inside the guest.
import { closeSync, openSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { QemuHypervisor } from '../../src/qemu/qemu-hypervisor.ts';
import type { HotplugResult } from '../../src/hypervisor/types.ts';
import {
  DeviceExistsError,
  DeviceNotFoundError,
  DeviceRemovalTimeoutError,
  HotplugError,
  NoFreeSlotError,
  ResizeIncompleteError,
  ResourceLimitError,
  UnsupportedOperationError,
} from '../../src/hypervisor/errors.ts';
import type { GuestAgent } from '../guest/index.ts';
import { createTap, guestConfig, guestPerSuite, identityOf, qcow2Disk, rawDisk, scratchDir, tapOwner } from './helpers/sandbox.ts';
import { eventually } from './helpers/eventually.ts';


/** Block devices in the guest and the first bytes of each. */
async function guestDisks(agent: GuestAgent): Promise<Map<string, string>> {
  const out = await agent.runOk('for d in /sys/block/vd* /sys/block/sd*; do [ -e "$d" ] || continue; n=${d##*/}; echo "$n $(head -c 16 /dev/$n | tr -c "A-Za-z0-9-" .)"; done');
  const disks = new Map<string, string>();
  for (const line of out.split('\n').filter(Boolean)) {
    const [name, ...rest] = line.split(' ');
    if (name) disks.set(name, rest.join(' '));
  }
  return disks;
}

describe('hotplug on a running guest (virtio-mem)', () => {
  const scratch = scratchDir();
  const removeTaps: (() => void)[] = [];
  let vm: QemuHypervisor;
  let agent: GuestAgent;
  guestPerSuite(
    guestConfig({ cpus: { boot: 1, max: 3 }, hotplug: { rootPorts: 4 } }),
    { deviceRemovalTimeoutMs: 15_000 },
    (booted) => ({ vm, agent } = booted),
    [() => removeTaps.forEach((remove) => remove()), scratch.remove],
  );

  it('a hot-added raw virtio-blk disk appears in the guest with the host marker, and is gone after removal', async () => {
    const before = await guestDisks(agent);
    const path = rawDisk(scratch.dir, 'raw.img', 'MARKER-RAW-0001', identityOf(vm));
    const result = await vm.hotplugAddDevice({ type: 'block', id: 'raw0', path });
    expect(result).toEqual({ id: 'raw0', type: 'block', bus: 'rp0', pci: { path: '02/00', sysfs: '0000:00:02.0/0000:01:00.0' } });
    const after = await eventually(() => guestDisks(agent), (d) => d.size === before.size + 1);
    const added = [...after].filter(([name]) => !before.has(name));
    expect(added).toHaveLength(1);
    expect(added[0]?.[1]).toBe('MARKER-RAW-0001.');
    expect(vm.devices().find((d) => d.id === 'raw0')).toMatchObject({ hotplugged: true, bus: 'rp0' });

    await vm.hotplugRemoveDevice('raw0');
    expect((await guestDisks(agent)).size).toBe(before.size);
    expect(vm.devices().find((d) => d.id === 'raw0')).toBeUndefined();
  });

  it('a read-only qcow2 disk is read-only in the guest', async () => {
    const path = qcow2Disk(scratch.dir, 'ro.qcow2', 'MARKER-QCOW2-RO', identityOf(vm));
    const before = await guestDisks(agent);
    await vm.hotplugAddDevice({ type: 'block', id: 'ro0', path, format: 'qcow2', readOnly: true });
    const after = await eventually(() => guestDisks(agent), (d) => d.size === before.size + 1);
    const [name, marker] = [...after].find(([n]) => !before.has(n)) ?? [];
    expect(marker).toBe('MARKER-QCOW2-RO.');
    expect((await agent.runOk(`cat /sys/block/${name}/ro`)).trim()).toBe('1');
    await vm.hotplugRemoveDevice('ro0');
  });

  it('a scsi-hd disk goes on the virtio-scsi controller and back out', async () => {
    const before = await guestDisks(agent);
    const path = rawDisk(scratch.dir, 'scsi.img', 'MARKER-SCSI-001', identityOf(vm));
    const result = await vm.hotplugAddDevice({ type: 'block', id: 'scsi-a', path, driver: 'virtio-scsi' });
    expect(result.bus).toBe('scsi0.0');
    const after = await eventually(() => guestDisks(agent), (d) => [...d.keys()].some((n) => n.startsWith('sd')));
    expect([...after].find(([n]) => n.startsWith('sd'))?.[1]).toBe('MARKER-SCSI-001.');
    await vm.hotplugRemoveDevice('scsi-a');
    const gone = await eventually(() => guestDisks(agent), (d) => d.size === before.size);
    expect(gone.size).toBe(before.size);
  });

  it('a hot-added NIC appears in the guest with its MAC, and is gone after removal', async () => {
    // As a runtime does: the tap is made for the VM's own uid, which only it has.
    removeTaps.push(createTap('svmmhp0', identityOf(vm).uid));
    expect(tapOwner('svmmhp0')).toBe(identityOf(vm).uid);
    const mac = '52:54:00:12:34:56';
    await vm.hotplugAddDevice({ type: 'net', id: 'nic0', tap: { ifname: 'svmmhp0' }, mac });
    const ifaces = await eventually(() => agent.netInterfaces(), (list) => list.some((i) => i.mac === mac));
    expect(ifaces.map((i) => i.mac)).toContain(mac);
    await vm.hotplugRemoveDevice('nic0');
    const after = await agent.netInterfaces();
    expect(after.map((i) => i.mac)).not.toContain(mac);
  });

  it('rejects a reused id, an unknown id, a tap fd that is not open and a cold-plug-only kind', async () => {
    await expect(vm.hotplugAddDevice({ type: 'block', id: 'agent', path: rawDisk(scratch.dir, 'dup.img', 'x', identityOf(vm)) })).rejects.toBeInstanceOf(DeviceExistsError);
    await expect(vm.hotplugRemoveDevice('nope')).rejects.toBeInstanceOf(DeviceNotFoundError);
    const closed = openSync('/dev/null', 'r');
    closeSync(closed);
    await expect(vm.hotplugAddDevice({ type: 'net', id: 'fdnic', tap: { fd: closed } })).rejects.toMatchObject({ code: 'CONFIG_INVALID', paths: ['device.tap.fd'] });
    const rng = { type: 'rng', id: 'rng0' } as unknown as Parameters<QemuHypervisor['hotplugAddDevice']>[0];
    await expect(vm.hotplugAddDevice(rng)).rejects.toThrow(/rng devices can only be cold-plugged/);
  });

  it('a failed hotplug (QEMU rejects the disk) leaves nothing half-plugged and frees the slot', async () => {
    // Every port taken but one: the failing disk can only be given that one, and the retry finds it
    // free only if the failure gave it back.
    const fillers: HotplugResult[] = [];
    for (let i = 0; i < 4; i++) {
      const added = await vm.hotplugAddDevice({ type: 'block', id: `fill${i}`, path: rawDisk(scratch.dir, `fill${i}.img`, 'x', identityOf(vm)) }).catch((e: unknown) => e);
      if (added instanceof NoFreeSlotError) break;
      if (added instanceof Error) throw added;
      fillers.push(added as HotplugResult);
    }
    const probe = fillers.pop() as HotplugResult;
    await vm.hotplugRemoveDevice(probe.id);
    const missing = `${scratch.dir}/deleted.img`;
    const error = (await vm.hotplugAddDevice({ type: 'block', id: 'bad0', path: missing }).catch((e: unknown) => e)) as HotplugError;
    expect(error).toBeInstanceOf(HotplugError);
    expect(error.step).toBe('blockdev-add');
    expect(error.message).toContain('deleted.img');
    expect(vm.devices().find((d) => d.id === 'bad0')).toBeUndefined();
    // The same id and the same port are usable again.
    const ok = await vm.hotplugAddDevice({ type: 'block', id: 'bad0', path: rawDisk(scratch.dir, 'ok.img', 'x', identityOf(vm)) });
    expect(ok.bus).toBe(probe.bus);
    for (const d of [ok, ...fillers]) await vm.hotplugRemoveDevice(d.id);
  });

  it('concurrent hotplugs never share a port, and exhaustion is a typed error until a port is freed', async () => {
    // rp0..rp3 minus the SCSI controller's port leaves three.
    const free = 4 - vm.devices().filter((d) => d.hotplugged).length - 1;
    const paths = Array.from({ length: free + 1 }, (_, i) => rawDisk(scratch.dir, `c${i}.img`, `C${i}`, identityOf(vm)));
    const results = await Promise.allSettled(paths.map((path, i) => vm.hotplugAddDevice({ type: 'block', id: `c${i}`, path })));
    const ok = results.filter((r) => r.status === 'fulfilled').map((r) => r.value.bus);
    const failed = results.filter((r) => r.status === 'rejected').map((r) => r.reason as unknown);
    expect(ok).toHaveLength(free);
    expect(new Set(ok).size).toBe(free);
    expect(failed).toHaveLength(1);
    expect(failed[0]).toBeInstanceOf(NoFreeSlotError);
    const placed = results.findIndex((r) => r.status === 'fulfilled');
    await vm.hotplugRemoveDevice(`c${placed}`);
    const retry = results.findIndex((r) => r.status === 'rejected');
    await vm.hotplugAddDevice({ type: 'block', id: `c${retry}`, path: paths[retry] ?? '' });
    for (const d of vm.devices().filter((dev) => dev.hotplugged)) await vm.hotplugRemoveDevice(d.id);
  });

  it('virtio-mem grows and shrinks the guest memory, and limits are typed errors', async () => {
    const baseKiB = await agent.memTotalKiB();
    const grown = await vm.resizeMemory(768);
    expect(grown).toEqual({ previousMiB: 256, currentMiB: 768 });
    const bigKiB = await eventually(() => agent.memTotalKiB(), (kib) => kib >= baseKiB + 500 * 1024);
    expect(bigKiB - baseKiB).toBeGreaterThanOrEqual(500 * 1024);
    expect(bigKiB - baseKiB).toBeLessThanOrEqual(512 * 1024);

    const shrunk = await vm.resizeMemory(256);
    expect(shrunk).toEqual({ previousMiB: 768, currentMiB: 256 });
    const backKiB = await eventually(() => agent.memTotalKiB(), (kib) => kib <= baseKiB);
    expect(backKiB).toBe(baseKiB);

    await expect(vm.resizeMemory(4096)).rejects.toBeInstanceOf(ResourceLimitError);
    await expect(vm.resizeMemory(128)).rejects.toBeInstanceOf(ResourceLimitError);
  });

  it('a virtio-mem resize the guest cannot follow reports how far it got when its time runs out', async () => {
    await vm.pauseVM();
    const error = (await vm.resizeMemory(768, { timeoutMs: 1_500 }).catch((e: unknown) => e)) as ResizeIncompleteError;
    expect(error).toBeInstanceOf(ResizeIncompleteError);
    expect(error).toMatchObject({ targetMiB: 768, reachedMiB: 256 });
    await vm.resumeVM();
    // The request stays with the device: a new resize replaces it.
    expect(await vm.resizeMemory(256, { timeoutMs: 60_000 })).toEqual({ previousMiB: 768, currentMiB: 256 });
    const kib = await eventually(() => agent.memTotalKiB(), (k) => k < 200 * 1024);
    expect(kib).toBeLessThan(200 * 1024);
  });

  it('vCPUs come online in the guest; removing them under tcg is refused below QEMU 10 and allowed within the add budget from 10, keeping QEMU sound', async () => {
    // The version rules (hypervisor/version-rules.ts): the budget is there exactly from QEMU 10 under tcg.
    const budget = vm.capabilities().cpuHotAddBudget;
    expect(vm.capabilities().cpuHotUnplug).toBe(budget !== undefined);
    if (budget) expect(budget).toEqual({ limit: 2, used: 0 });
    expect(await vm.resizeVCPUs(3)).toEqual({ previous: 1, current: 3 });
    expect(await eventually(() => agent.onlineCpus(), (n) => n === 3)).toBe(3);
    expect((await vm.getThreadIds()).size).toBe(3);
    await expect(vm.resizeVCPUs(4)).rejects.toBeInstanceOf(ResourceLimitError);
    await expect(vm.resizeVCPUs(0)).rejects.toBeInstanceOf(ResourceLimitError);
    if (budget) {
      expect(await vm.resizeVCPUs(1)).toEqual({ previous: 3, current: 1 });
      expect(await eventually(() => agent.onlineCpus(), (n) => n === 1)).toBe(1);
      expect(vm.capabilities().cpuHotAddBudget).toEqual({ limit: 2, used: 2 });
    } else {
      const refused = await vm.resizeVCPUs(1).catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(UnsupportedOperationError);
      expect((refused as Error).message).toMatch(/tcg/);
      expect(await agent.onlineCpus()).toBe(3);
    }
    // Devices still come and go.
    await vm.hotplugAddDevice({ type: 'block', id: 'after-cpus', path: rawDisk(scratch.dir, 'after.img', 'A', identityOf(vm)) });
    await vm.hotplugRemoveDevice('after-cpus');
  });
});

describe('vCPU removal under tcg, opted in (hotplug.tcgVcpuUnplug)', () => {
  const scratch = scratchDir();
  let vm: QemuHypervisor;
  let agent: GuestAgent;
  guestPerSuite(
    guestConfig({ cpus: { boot: 1, max: 3 }, hotplug: { rootPorts: 2, tcgVcpuUnplug: true } }),
    { deviceRemovalTimeoutMs: 30_000 },
    (booted) => ({ vm, agent } = booted),
    [scratch.remove],
  );

  it('the online CPU count in the guest follows resizeVCPUs up and down', async () => {
    expect(vm.capabilities().cpuHotUnplug).toBe(true);
    expect(await vm.resizeVCPUs(3)).toEqual({ previous: 1, current: 3 });
    expect(await eventually(() => agent.onlineCpus(), (n) => n === 3)).toBe(3);
    expect(await vm.resizeVCPUs(1)).toEqual({ previous: 3, current: 1 });
    expect(await eventually(() => agent.onlineCpus(), (n) => n === 1)).toBe(1);
    expect([...(await vm.getThreadIds()).keys()]).toEqual([0]);
  });

  it('afterwards refuses device changes below QEMU 10 (they would crash it), from 10 on only a vCPU add past the budget; stays healthy', async () => {
    const disk = rawDisk(scratch.dir, 'late.img', 'L', identityOf(vm));
    // The version rules (hypervisor/version-rules.ts): a QEMU >= 10 under tcg reports its add budget.
    if (vm.capabilities().cpuHotAddBudget) {
      await vm.hotplugAddDevice({ type: 'block', id: 'late', path: disk });
      await vm.hotplugRemoveDevice('late');
      // Both adds of the budget (max 3 - boot 1) were spent going to 3 vCPUs.
      await expect(vm.resizeVCPUs(2)).rejects.toMatchObject({ code: 'RESOURCE_LIMIT', budget: 2, used: 2 });
    } else {
      await expect(vm.hotplugAddDevice({ type: 'block', id: 'late', path: disk })).rejects.toBeInstanceOf(UnsupportedOperationError);
      await expect(vm.resizeVCPUs(2)).rejects.toBeInstanceOf(UnsupportedOperationError);
    }
    // What does not add or remove a device still works.
    const baseKiB = await agent.memTotalKiB();
    await vm.resizeMemory(512);
    expect(await eventually(() => agent.memTotalKiB(), (k) => k >= baseKiB + 250 * 1024)).toBeGreaterThanOrEqual(baseKiB + 250 * 1024);
    await vm.pauseVM();
    await vm.resumeVM();
    await vm.check();
    expect(await agent.runOk('echo alive')).toBe('alive\n');
  });
});

describe('DIMM memory and removals the guest does not complete', () => {
  const scratch = scratchDir();
  let vm: QemuHypervisor;
  let agent: GuestAgent;
  guestPerSuite(
    guestConfig({ memory: { bootMiB: 256, maxMiB: 1024, hotplug: 'dimm', slots: 4 }, hotplug: { rootPorts: 1 } }),
    { deviceRemovalTimeoutMs: 1_500 },
    (booted) => ({ vm, agent } = booted),
    [scratch.remove],
  );

  it('grows with pc-dimm (the guest onlines it) and refuses to shrink', async () => {
    const baseKiB = await agent.memTotalKiB();
    expect(await vm.resizeMemory(512)).toEqual({ previousMiB: 256, currentMiB: 512 });
    const kib = await eventually(() => agent.memTotalKiB(), (k) => k >= baseKiB + 250 * 1024);
    expect(kib - baseKiB).toBe(256 * 1024);
    await expect(vm.resizeMemory(256)).rejects.toBeInstanceOf(UnsupportedOperationError);
  });

  it('a removal the guest does not complete times out with a typed error and the VM stays usable', async () => {
    await vm.hotplugAddDevice({ type: 'block', id: 'stuck', path: rawDisk(scratch.dir, 'stuck.img', 'S', identityOf(vm)) });
    await vm.pauseVM();
    const error = await vm.hotplugRemoveDevice('stuck').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DeviceRemovalTimeoutError);
    expect(vm.devices().find((d) => d.id === 'stuck')).toBeDefined();
    // One root port, still taken by the device that did not go away.
    await expect(vm.hotplugAddDevice({ type: 'block', id: 'other', path: rawDisk(scratch.dir, 'o.img', 'O', identityOf(vm)) })).rejects.toBeInstanceOf(NoFreeSlotError);
    await vm.resumeVM();
    expect(await agent.runOk('echo usable')).toBe('usable\n');
    await vm.check();
    // Once the guest runs again it completes the removal; a retry then finishes the bookkeeping.
    await vm.hotplugRemoveDevice('stuck', { timeoutMs: 20_000 }).catch(async (e: unknown) => {
      if (!(e instanceof DeviceRemovalTimeoutError)) throw e;
      await vm.hotplugRemoveDevice('stuck');
    });
    expect(vm.devices().find((d) => d.id === 'stuck')).toBeUndefined();
  });
});
