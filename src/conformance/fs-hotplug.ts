// virtio-fs shares hot-plugged into a running VM: refused where the guest's memory cannot be mapped
// by a daemon (anonymous) or for 9p, and on a VM with shared memory plugged with a daemon of their
// own (listed by getPids), seen by the guest, and removed with their daemon; a share whose daemon
// cannot start leaves nothing behind.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ConfigError } from '../hypervisor/config/index.ts';
import type { HotplugDevice, Hypervisor } from '../hypervisor/types.ts';
import { rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import type { ConformanceTestApi } from './options.ts';

const anonymous: VmSpec = { cpus: { boot: 1, max: 1 }, memory: { bootMiB: 256, hotplug: 'none' }, rootPorts: 2 };
const shared: VmSpec = { ...anonymous, memory: { ...anonymous.memory, backing: { type: 'shared' } } };
const MARKER = 'conformance-marker.txt';

const share = (id: string, sharedDir: string, tag = id): HotplugDevice => ({ type: 'fs', driver: 'virtio-fs', id, tag, sharedDir });

export function defineFsHotplugTests(t: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const shareDir = h.options.shareDir;

  t.it('a virtio-fs share is refused on anonymous guest memory (ConfigError naming device.driver) and 9p is cold-only; nothing changes', async () => {
    await h.withVm(async (vm) => {
      await h.boot(vm, anonymous);
      assert.equal(vm.capabilities().fsHotplug, false, 'capabilities say a VM with anonymous memory takes no share');
      const before = { devices: vm.devices(), pids: vm.getPids() };
      const error = await rejectsWithCode<ConfigError>(vm.hotplugAddDevice(share('conformance-fs', '/'), h.op()), 'CONFIG_INVALID', 'a share on anonymous memory');
      assert.deepEqual(error.paths, ['device.driver'], error.message);
      const ninep = { type: 'fs', driver: '9p', id: 'conformance-9p', tag: 'ninep', path: '/' } as unknown as HotplugDevice;
      await rejectsWithCode(vm.hotplugAddDevice(ninep, h.op()), 'UNSUPPORTED', 'a hot-plugged 9p share');
      assert.deepEqual({ devices: vm.devices(), pids: vm.getPids() }, before, 'refusals change nothing');
    });
  }, ms);

  if (!shareDir) return;

  /** A share directory for `vm` holding a marker file. */
  const dirWithMarker = async (name: string, vm: Hypervisor): Promise<string> => {
    const dir = await shareDir(name, vm);
    writeFileSync(join(dir, MARKER), `${name}\n`);
    return dir;
  };

  t.it('on shared guest memory a share is hot-plugged with a daemon of its own, read by the guest, and removed with its daemon', async () => {
    await h.withVm(async (vm) => {
      await h.boot(vm, shared);
      assert.equal(vm.capabilities().fsHotplug, true, 'capabilities say a VM with shared memory takes shares');
      const pidsBefore = vm.getPids();
      const dir = await dirWithMarker('hot-share', vm);
      const result = await vm.hotplugAddDevice(share('conformance-fs', dir), h.op());
      assert.equal(result.type, 'fs');
      assert.deepEqual(vm.devices().find((d) => d.id === 'conformance-fs'), { id: 'conformance-fs', type: 'fs', hotplugged: true, bus: result.bus, pci: result.pci });
      const pids = vm.getPids();
      assert.equal(pids.length, pidsBefore.length + 1, 'the share\'s daemon is listed after the hypervisor');
      assert.deepEqual(pids.slice(0, pidsBefore.length), pidsBefore);
      const probes = h.options.guest;
      if (probes?.readShared) assert.equal(await probes.readShared(vm, 'conformance-fs', MARKER), 'hot-share\n', 'the guest reads the host file through the share');

      const again = await rejectsWithCode<ConfigError>(vm.hotplugAddDevice(share('conformance-fs2', dir, 'conformance-fs'), h.op()), 'CONFIG_INVALID', 'a second share with the same tag');
      assert.deepEqual(again.paths, ['device.tag'], again.message);
      assert.equal(vm.getPids().length, pidsBefore.length + 1, 'the refused share started no daemon');

      await vm.hotplugRemoveDevice('conformance-fs', h.op());
      assert.equal(vm.devices().find((d) => d.id === 'conformance-fs'), undefined);
      assert.deepEqual(vm.getPids(), pidsBefore, 'the daemon is stopped with its share');
      assert.equal(vm.devices().some((d) => d.bus === result.bus), false, 'its port is free again');
      // The id and the tag are free again (left plugged: the guest may still be taking it when the VM stops).
      const back = await vm.hotplugAddDevice(share('conformance-fs', dir), h.op());
      assert.equal(back.id, 'conformance-fs');
    });
  }, ms);

  t.it('a share whose daemon cannot start (missing directory) is HelperError; nothing is plugged or left running', async () => {
    await h.withVm(async (vm) => {
      await h.boot(vm, shared);
      const before = { devices: vm.devices(), pids: vm.getPids() };
      const dir = await shareDir('missing-parent', vm);
      await rejectsWithCode(vm.hotplugAddDevice(share('conformance-fs', join(dir, 'does-not-exist')), h.op()), 'HELPER_FAILED', 'a share of a missing directory');
      assert.deepEqual({ devices: vm.devices(), pids: vm.getPids() }, before, 'nothing plugged, no daemon left');
      // Left plugged: a removal right after the add would race the guest's own handling of it.
      const plugged = await vm.hotplugAddDevice(share('conformance-fs', await dirWithMarker('after-failure', vm)), h.op());
      assert.equal(plugged.id, 'conformance-fs', 'the id is free again');
      assert.equal(vm.getPids().length, before.pids.length + 1, 'its daemon runs');
    });
  }, ms);
}
