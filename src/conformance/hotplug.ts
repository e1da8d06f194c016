// Hotplug and memory resize conformance on one running VM: devices come and go (seen by the guest
// when it can be asked), refusals leave nothing behind, slots are accounted for under concurrency,
// and virtio-mem memory follows the resize calls within the config's limits.
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { basename } from 'node:path';
import type { ConfigError, DeviceConfigInput } from '../hypervisor/config/index.ts';
import { DEVICE_TYPES, HOTPLUGGABLE_DEVICE_TYPES } from '../hypervisor/config/index.ts';
import type { HotplugError, NoFreeSlotError, ResourceLimitError } from '../hypervisor/errors.ts';
import type { HotplugDevice, HotplugResult, Hypervisor, HypervisorCapabilities } from '../hypervisor/types.ts';
import { assertCode, COLD_DEVICE_ID, range, rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import { assertCapabilitiesFollowConfig } from './lifecycle.ts';
import type { ConformanceTestApi } from './options.ts';
import { assertBehindRootPort, assertDistinctPciPaths } from './pci-paths.ts';
import { SharedVm } from './shared-vm.ts';

const ROOT_PORTS = 3;
/** Room for vCPUs where the machine can add them. */
const spec = (caps: HypervisorCapabilities): VmSpec => ({
  cpus: { boot: 1, max: caps.cpuHotplug ? 3 : 1 },
  memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' },
  rootPorts: ROOT_PORTS,
});

type ColdOnlyType = Exclude<(typeof DEVICE_TYPES)[number], (typeof HOTPLUGGABLE_DEVICE_TYPES)[number]>;

/** A valid device of each kind that can only be cold-plugged. */
const coldOnlySamples: Record<ColdOnlyType, DeviceConfigInput> = {
  vsock: { type: 'vsock', id: 'conformance-vsock', guestCid: 3 },
  rng: { type: 'rng', id: 'conformance-rng2' },
  balloon: { type: 'balloon', id: 'conformance-balloon' },
  channel: { type: 'channel', id: 'conformance-chan', name: 'conformance.0' },
  pvpanic: { type: 'pvpanic', id: 'conformance-pvpanic' },
};

export function defineHotplugTests(api: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const shared = new SharedVm(h, spec);
  const t = shared.tidyAfterFailures(api);
  const probes = h.options.guest ?? {};
  shared.registerHooks(t);

  const add = async (vm: Hypervisor, id: string, extra: Partial<HotplugDevice> = {}): Promise<HotplugResult> =>
    vm.hotplugAddDevice({ type: 'block', id, path: await h.disk(id, vm), ...extra } as HotplugDevice, h.op());
  // Listed afresh before each removal: a device the guest ejected meanwhile has left devices() already.
  const removeAllHotplugged = async (vm: Hypervisor): Promise<void> => {
    for (let next = vm.devices().find((d) => d.hotplugged); next; next = vm.devices().find((d) => d.hotplugged)) {
      await vm.hotplugRemoveDevice(next.id, h.op());
    }
  };

  t.it('capabilities follow the config (virtio-mem grows and shrinks)', async () => {
    const vm = await shared.get();
    const caps = assertCapabilitiesFollowConfig(vm);
    assert.equal(caps.memoryHotUnplug, true, 'virtio-mem memory can shrink');
  }, ms);

  t.it('a hot-added disk is listed with its bus and seen by the guest; removal takes it out of both', async () => {
    const vm = await shared.get();
    const disks = probes.diskCount?.bind(probes);
    const before = disks ? await disks(vm) : 0;
    const result = await add(vm, 'conformance-a');
    assert.equal(result.id, 'conformance-a');
    assert.equal(result.type, 'block');
    assert.ok(typeof result.bus === 'string' && result.bus.length > 0, 'the result names the bus');
    assert.deepEqual(vm.devices().find((d) => d.id === 'conformance-a'), { id: 'conformance-a', type: 'block', hotplugged: true, bus: result.bus, pci: result.pci });
    assertBehindRootPort(result);
    assertDistinctPciPaths(vm.devices());
    if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before + 1), before + 1, 'the guest sees one more disk');

    await vm.hotplugRemoveDevice('conformance-a', h.op());
    assert.equal(vm.devices().find((d) => d.id === 'conformance-a'), undefined);
    if (h.options.events) {
      const { deviceRemoved } = h.options.events;
      assert.ok(shared.events.some((e) => deviceRemoved(e, 'conformance-a')), 'the removal was reported as an event');
    }
    if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before), before, 'the guest no longer sees the disk');
  }, ms);

  t.it('refused hotplugs and removals are typed errors and change nothing', async () => {
    const vm = await shared.get();
    const before = vm.devices();
    await add(vm, 'conformance-dup');
    await rejectsWithCode(add(vm, 'conformance-dup'), 'DEVICE_EXISTS', 'hotplug of an id already hot-plugged');
    await rejectsWithCode(add(vm, COLD_DEVICE_ID), 'DEVICE_EXISTS', 'hotplug of a cold-plugged device id');
    await rejectsWithCode(vm.hotplugRemoveDevice('conformance-nope', h.op()), 'DEVICE_NOT_FOUND', 'removal of an unknown id');
    await rejectsWithCode(vm.hotplugRemoveDevice(COLD_DEVICE_ID, h.op()), 'DEVICE_NOT_FOUND', 'removal of a cold-plugged device');
    const closedFd = openSync('/dev/null', 'r');
    closeSync(closedFd);
    const badFd = await rejectsWithCode<ConfigError>(vm.hotplugAddDevice({ type: 'net', id: 'conformance-fdnic', tap: { fds: [closedFd] } }, h.op()), 'CONFIG_INVALID', 'hotplug of a tap given as a closed fd');
    assert.deepEqual(badFd.paths, ['device.tap.fds[0]'], 'the ConfigError names the fd');
    for (const [type, sample] of Object.entries(coldOnlySamples)) {
      const error = await rejectsWithCode(vm.hotplugAddDevice(sample as unknown as HotplugDevice, h.op()), 'UNSUPPORTED', `hotplug of a ${type} device`);
      assert.ok(error.message.includes(type), `the error names the kind: ${error.message}`);
    }
    const invalid = await rejectsWithCode<ConfigError>(add(vm, 'conformance-rel', { path: 'relative.img' }), 'CONFIG_INVALID', 'hotplug of an invalid device');
    assert.ok(invalid.paths.includes('device.path'), `the ConfigError names device.path (it names ${invalid.paths.join(', ')})`);
    await vm.hotplugRemoveDevice('conformance-dup', h.op());
    assert.deepEqual(vm.devices(), before);
  }, ms);

  t.it('a disk given as an fd the caller opened is hot-plugged and removed like one given as a path; its access mode must match', async () => {
    const vm = await shared.get();
    const disks = probes.diskCount?.bind(probes);
    const before = disks ? await disks(vm) : 0;
    const path = await h.disk('conformance-fd', vm);
    const readOnlyFd = openSync(path, 'r');
    try {
      const error = await rejectsWithCode<ConfigError>(vm.hotplugAddDevice({ type: 'block', id: 'conformance-fd', fd: readOnlyFd }, h.op()), 'CONFIG_INVALID', 'a read-write disk from an O_RDONLY fd');
      assert.deepEqual(error.paths, ['device.fd']);
      assert.equal(vm.devices().find((d) => d.id === 'conformance-fd'), undefined);
    } finally {
      closeSync(readOnlyFd);
    }
    const fd = openSync(path, 'r+');
    try {
      const result = await vm.hotplugAddDevice({ type: 'block', id: 'conformance-fd', fd }, h.op());
      assert.equal(result.type, 'block');
    } finally {
      // The backend holds its own copy once the hotplug has returned.
      closeSync(fd);
    }
    if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before + 1), before + 1, 'the guest sees the disk given as an fd');
    await vm.hotplugRemoveDevice('conformance-fd', h.op());
    assert.equal(vm.devices().find((d) => d.id === 'conformance-fd'), undefined);
    if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before), before, 'the guest no longer sees it');
  }, ms);

  t.it('a hotplug that fails (missing image) is a HotplugError that leaves nothing plugged and frees its slot', async () => {
    const vm = await shared.get();
    // Every slot but one taken: the failing hotplug can only be given the last one, and the retry
    // finds it free only if the failure gave it back.
    const fillers: HotplugResult[] = [];
    for (const i of range(ROOT_PORTS - 1)) fillers.push(await add(vm, `conformance-fill${i}`));
    const missing = `${await h.disk('conformance-gone', vm)}.missing`;
    const error = await rejectsWithCode<HotplugError>(add(vm, 'conformance-bad', { path: missing }), 'HOTPLUG_FAILED', 'hotplug of a missing image');
    assert.equal(error.deviceId, 'conformance-bad');
    assert.ok(error.step.length > 0, 'the error names the failed step');
    assert.ok(error.message.includes(basename(missing)), `the error names the image: ${error.message}`);
    assert.equal(vm.devices().find((d) => d.id === 'conformance-bad'), undefined);
    const retry = await add(vm, 'conformance-bad');
    assert.ok(!fillers.some((f) => f.bus === retry.bus), `the same id and slot are usable again (got ${retry.bus})`);
    await removeAllHotplugged(vm);
  }, ms);

  t.it('concurrent hotplugs never share a slot; one too many is NoFreeSlotError until a slot frees', async () => {
    const vm = await shared.get();
    const ids = range(ROOT_PORTS + 1).map((i) => `conformance-c${i}`);
    const paths = await Promise.all(ids.map((id) => h.disk(id, vm)));
    const results = await Promise.allSettled(ids.map((id, i) => vm.hotplugAddDevice({ type: 'block', id, path: paths[i] as string }, h.op())));
    const placed = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const refused = results.flatMap((r, i) => (r.status === 'rejected' ? [{ id: ids[i] as string, error: r.reason as unknown }] : []));
    assert.equal(placed.length, ROOT_PORTS, `all ${ROOT_PORTS} slots are used`);
    assert.equal(new Set(placed.map((r) => r.bus)).size, ROOT_PORTS, 'no two devices share a slot');
    placed.forEach(assertBehindRootPort);
    assert.equal(new Set(placed.map((r) => r.pci.path)).size, ROOT_PORTS, 'no two devices share a PCI path');
    assertDistinctPciPaths(vm.devices());
    assert.deepEqual(
      placed.map((r) => vm.devices().find((d) => d.id === r.id)?.pci),
      placed.map((r) => r.pci),
      'devices() lists the paths the hotplugs returned',
    );
    assert.equal(refused.length, 1, 'exactly one hotplug is refused');
    const [{ id: refusedId, error }] = refused as [{ id: string; error: unknown }];
    const noSlot = assertCode<NoFreeSlotError>(error, 'NO_FREE_SLOT', 'the hotplug beyond the slots');
    assert.equal(noSlot.deviceId, refusedId);
    assert.equal(vm.devices().find((d) => d.id === refusedId), undefined);

    const freed = placed[0] as HotplugResult;
    await vm.hotplugRemoveDevice(freed.id, h.op());
    const retry = await vm.hotplugAddDevice({ type: 'block', id: refusedId, path: paths[ids.indexOf(refusedId)] as string }, h.op());
    assert.equal(retry.bus, freed.bus, 'the freed slot is the one handed out');
    await removeAllHotplugged(vm);
  }, ms);

  t.it('virtio-mem memory grows and shrinks (aligned up to 2 MiB) within the limits, and the guest follows', async () => {
    const vm = await shared.get();
    const memory = probes.memoryMiB?.bind(probes);
    const base = memory ? await memory(vm) : 0;
    assert.deepEqual(await vm.resizeMemory(768, h.op()), { previousMiB: 256, currentMiB: 768 });
    if (memory) {
      const grown = (await h.eventually(() => memory(vm), (mib) => mib - base >= 0.9 * 512)) - base;
      assert.ok(grown >= 0.9 * 512 && grown <= 512, `the guest gained about 512 MiB (gained ${grown})`);
    }
    assert.deepEqual(await vm.resizeMemory(771, h.op()), { previousMiB: 768, currentMiB: 772 });
    assert.deepEqual(await vm.resizeMemory(256, h.op()), { previousMiB: 772, currentMiB: 256 });
    if (memory) assert.equal(await h.eventually(() => memory(vm), (mib) => mib === base), base, 'the guest is back to its boot memory');

    const above = await rejectsWithCode<ResourceLimitError>(vm.resizeMemory(1282, h.op()), 'RESOURCE_LIMIT', 'resizeMemory above memory.maxMiB');
    assert.deepEqual([above.resource, above.requested, above.limit], ['memory', 1282, 1280]);
    const below = await rejectsWithCode<ResourceLimitError>(vm.resizeMemory(128, h.op()), 'RESOURCE_LIMIT', 'resizeMemory below memory.bootMiB');
    assert.deepEqual([below.resource, below.limit], ['memory', 256]);
    await rejectsWithCode(vm.resizeMemory(300.5, h.op()), 'RESOURCE_LIMIT', 'resizeMemory to a fraction of a MiB');
    assert.deepEqual(await vm.resizeMemory(256, h.op()), { previousMiB: 256, currentMiB: 256 });
  }, ms);

  const ejectDevice = h.options.faults?.ejectDevice;
  if (ejectDevice) {
    t.it('a device the guest ejects on its own leaves devices(), frees its slot and backend, and is reported once', async () => {
      const vm = await shared.get();
      const id = 'conformance-ejected';
      const disks = probes.diskCount?.bind(probes);
      const base = disks ? await disks(vm) : 0;
      // Every other slot taken: the ejected device's slot is then the only one a new device can get.
      for (const i of range(ROOT_PORTS - 1)) await add(vm, `conformance-fill${i}`);
      const before = disks ? await h.eventually(() => disks(vm), (n) => n === base + ROOT_PORTS - 1) : 0;
      const plugged = await add(vm, id);
      // The guest can only give up what it has.
      if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before + 1), before + 1, 'the guest sees the disk');
      await h.within(Promise.resolve(ejectDevice(vm, id)), 'the guest ejects the disk');
      const gone = await h.eventually(() => Promise.resolve(vm.devices().find((d) => d.id === id)), (d) => d === undefined);
      assert.equal(gone, undefined, 'the ejected device is no longer listed');
      if (h.options.events) {
        const { deviceEjected } = h.options.events;
        const reported = await h.eventually(() => Promise.resolve(shared.events.filter((e) => deviceEjected(e, id)).length), (n) => n > 0);
        assert.equal(reported, 1, 'the ejection was reported once');
      }
      await rejectsWithCode(vm.hotplugRemoveDevice(id, h.op()), 'DEVICE_NOT_FOUND', 'removal of an ejected device');
      if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before), before, 'the guest no longer has the disk');

      // Its slot and its id (and so its backend's name) are free: the same id lands on the same slot.
      const again = await add(vm, id);
      assert.equal(again.bus, plugged.bus, 'the freed slot is the one handed out');
      if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before + 1), before + 1, 'the guest sees the disk again');
      await vm.hotplugRemoveDevice(id, h.op());
      if (h.options.events) {
        const { deviceEjected } = h.options.events;
        assert.equal(shared.events.filter((e) => deviceEjected(e, id)).length, 1, 'a removal the caller asked for is no ejection');
      }
      if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before), before, 'the guest no longer has the disk');
      await removeAllHotplugged(vm);
    }, ms);
  }

  if (h.options.scsi) {
    t.it('SCSI disks share one controller, which takes one slot the first time', async () => {
      const vm = await shared.get();
      const disks = probes.diskCount?.bind(probes);
      const before = disks ? await disks(vm) : 0;
      const a = await add(vm, 'conformance-sa', { driver: 'virtio-scsi' });
      const b = await add(vm, 'conformance-sb', { driver: 'virtio-scsi' });
      assert.equal(a.bus, b.bus, 'both SCSI disks are on the controller');
      assert.deepEqual(a.pci, b.pci, "both SCSI disks report the controller's PCI path");
      assert.ok(a.scsi && b.scsi, 'SCSI disks report their SCSI address');
      assert.notDeepEqual(a.scsi, b.scsi, 'two SCSI disks have distinct SCSI addresses');
      assertBehindRootPort({ ...a, id: 'the SCSI controller' });
      if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before + 2), before + 2, 'the guest sees both SCSI disks');
      const ids = range(ROOT_PORTS).map((i) => `conformance-pci${i}`);
      const results = await Promise.allSettled(ids.map((id) => add(vm, id)));
      const placed = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
      assert.equal(placed.length, ROOT_PORTS - 1, 'the controller holds one of the slots');
      assert.ok(placed.every((r) => r.bus !== a.bus));
      assert.ok(placed.every((r) => r.pci.path !== a.pci.path), "no PCI disk has the SCSI controller's path");
      assertDistinctPciPaths(vm.devices());
      for (const r of results) if (r.status === 'rejected') assertCode(r.reason, 'NO_FREE_SLOT', 'a PCI disk beyond the slots');
      await removeAllHotplugged(vm);
      if (disks) assert.equal(await h.eventually(() => disks(vm), (n) => n === before), before, 'the guest no longer sees them');
    }, ms);
  }

  shared.defineStopTest(t);
}
