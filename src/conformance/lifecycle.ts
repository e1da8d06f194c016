// Lifecycle conformance: states and their errors, start failures, stop idempotency and interruption,
// and what is left after a stop. Each test has a VM of its own.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { basename } from 'node:path';
import type { ConfigError } from '../hypervisor/config/index.ts';
import type { InvalidStateError, ResourceLimitError, VmStartError, VmStoppingError } from '../hypervisor/errors.ts';
import type { Hypervisor, HypervisorCapabilities, VmIdentity, VmState } from '../hypervisor/types.ts';
import { COLD_DEVICE_ID, rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import { assertDistinctPciPaths, assertPciPath } from './pci-paths.ts';
import type { ConformanceTestApi } from './options.ts';

/** Two boot vCPUs and no memory hotplug: resizing is refused at the limits. */
const spec: VmSpec = { cpus: { boot: 2, max: 2 }, memory: { bootMiB: 256, hotplug: 'none' }, rootPorts: 2 };

export function defineLifecycleTests(t: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;

  t.it('createVM validates the config, fills its defaults and starts nothing', async () => {
    await h.withVm(async (vm) => {
      assert.equal(vm.state, 'new', 'an instance before createVM is new');
      assert.equal(vm.id, undefined);
      assert.equal(vm.config, undefined);
      assert.deepEqual(vm.getPids(), []);

      const bad = h.config(spec);
      const error = await rejectsWithCode<ConfigError>(vm.createVM({ ...bad, cpus: { boot: 4, max: 2 } }), 'CONFIG_INVALID', 'createVM with cpus.boot > cpus.max');
      assert.ok(error.paths.includes('cpus.boot'), `the ConfigError names cpus.boot (it names ${error.paths.join(', ')})`);
      const netnsError = await rejectsWithCode<ConfigError>(
        vm.createVM({ ...bad, runtime: { ...bad.runtime, netns: '/nonexistent/netns/pod' } }),
        'CONFIG_INVALID',
        'createVM with a runtime.netns that does not exist',
      );
      assert.deepEqual(netnsError.paths, ['runtime.netns'], 'a missing network namespace is refused at createVM, naming runtime.netns');
      assert.equal(vm.config, undefined, 'a rejected config is not kept');
      assert.equal(vm.state, 'new', 'a rejected config leaves the instance new');

      const base = h.config(spec);
      const config = { ...base, devices: [...(base.devices ?? []), { type: 'channel', id: 'conformance-chan', name: 'conformance.0' } as const] };
      await vm.createVM(config, h.op());
      assert.equal(vm.state, 'created');
      assert.equal(vm.id, config.id);
      // Read through a function: the assertions above narrowed vm.config to undefined.
      const filled = configOf(vm);
      assert.deepEqual(filled?.cpus, { boot: 2, max: 2 });
      assert.equal(filled?.memory.maxMiB, 256, 'defaults are filled (memory.maxMiB = bootMiB)');
      assert.deepEqual(vm.getPids(), [], 'createVM starts nothing');
      const cold = vm.devices().find((d) => d.id === COLD_DEVICE_ID);
      assert.ok(cold, 'the cold device is listed');
      const { pci, ...listed } = cold;
      assert.deepEqual(listed, { id: COLD_DEVICE_ID, type: 'rng', hotplugged: false });
      assert.equal(assertPciPath({ ...listed, pci }).length, 1, 'a cold device is on the root bus');
      assertDistinctPciPaths(vm.devices());
      assert.deepEqual(vm.devices().filter((d) => d.hotplugged), []);
      // A channel says where its host side listens (the guest agent's socket, typically); nothing else has a socket.
      const channel = vm.devices().find((d) => d.id === 'conformance-chan');
      assert.ok(channel?.socketPath !== undefined && channel.socketPath.endsWith('.sock'), `the channel reports its socketPath (got ${String(channel?.socketPath)})`);
      for (const d of vm.devices()) assert.equal(d.socketPath !== undefined, d.type === 'channel', `only channels report a socketPath (${d.id})`);
      assertCapabilitiesFollowConfig(vm);

      await rejectsWithAnyLibraryError(vm.createVM(h.config(spec)), 'a second createVM');
      assert.equal(vm.id, config.id, 'a second createVM leaves the first config in place');

      await vm.stopVM();
      assert.equal(vm.state, 'stopped');
      assert.deepEqual(vm.getPids(), []);
      assert.equal(vm.exitInfo, undefined, 'no hypervisor ran, so none exited');
    });
  }, ms);

  t.it('each VM gets an identity of its own at createVM (when the backend drops privileges), never root, kept while it runs', async () => {
    await h.withVm(async (a) => {
      await h.withVm(async (b) => {
        assert.equal(a.identity, undefined, 'no identity before createVM');
        await a.createVM(h.config(spec), h.op());
        await b.createVM(h.config(spec), h.op());
        // Read through a function: the assertion above narrowed a.identity to undefined.
        const first = identityOf(a);
        const second = identityOf(b);
        if (first === undefined || second === undefined) {
          // The backend runs every hypervisor as the runtime's own user: then for both VMs.
          assert.deepEqual([first, second], [undefined, undefined], 'a backend gives identities to all VMs or to none');
          return;
        }
        assert.notEqual(first.uid, second.uid, 'two live VMs never share a uid');
        assert.notEqual(first.gid, second.gid, 'two live VMs never share a gid');
        for (const id of [first.uid, first.gid, second.uid, second.gid]) assert.ok(Number.isInteger(id) && id > 0, `id ${id} is not root`);
        identityOf(a)?.groups.push(4242);
        assert.deepEqual(identityOf(a), first, 'identity is a copy: a caller cannot change it');
        await a.startVM(h.op());
        assert.deepEqual(identityOf(a), first, 'startVM keeps the identity createVM gave');
      });
    });
  }, ms);

  t.it('startVM runs the VM; check, getThreadIds, pause, resume and stop work and leave nothing behind', async () => {
    await h.withVm(async (vm) => {
      await h.boot(vm, spec);
      assert.equal(vm.state, 'running');
      const pids = vm.getPids();
      assert.ok(pids.length >= 1, 'a running VM has a hypervisor pid');
      for (const pid of pids) assert.ok(Number.isInteger(pid) && pid > 0, `pid ${pid} is a positive integer`);
      assert.deepEqual(vm.getPids(), pids, 'getPids is stable while the VM runs');
      await vm.check(h.op());

      const threads = await vm.getThreadIds(h.op());
      assert.deepEqual([...threads.keys()].sort(), [0, 1], 'one thread per boot vCPU, by vCPU index');
      const tids = [...threads.values()];
      assert.ok(tids.every((tid) => Number.isInteger(tid) && tid > 0), 'thread ids are positive integers');
      assert.equal(new Set(tids).size, tids.length, 'each vCPU has its own thread');

      // No memory hotplug and cpus.max = boot: the current sizes are fine, anything else is refused.
      assert.deepEqual(await vm.resizeMemory(256, h.op()), { previousMiB: 256, currentMiB: 256 });
      await rejectsWithCode(vm.resizeMemory(384, h.op()), 'UNSUPPORTED', 'resizeMemory with memory.hotplug "none"');
      assert.deepEqual(await vm.resizeVCPUs(2, h.op()), { previous: 2, current: 2 });
      if (vm.capabilities().cpuHotplug) {
        const limit = await rejectsWithCode<ResourceLimitError>(vm.resizeVCPUs(3, h.op()), 'RESOURCE_LIMIT', 'resizeVCPUs above cpus.max');
        assert.equal(limit.limit, 2);
      } else {
        await rejectsWithCode(vm.resizeVCPUs(3, h.op()), 'UNSUPPORTED', 'resizeVCPUs where capabilities() says the machine cannot hot-plug vCPUs');
      }

      await vm.pauseVM(h.op());
      assert.equal(vm.state, 'paused');
      await vm.check(h.op());
      const again = await rejectsWithCode<InvalidStateError>(vm.pauseVM(h.op()), 'INVALID_STATE', 'pauseVM on a paused VM');
      assert.equal(again.state, 'paused');
      await vm.resumeVM(h.op());
      assert.equal(vm.state, 'running');
      assert.deepEqual(vm.getPids(), pids, 'the same hypervisor still runs after pause and resume');

      await vm.stopVM();
      assertStoppedAndClean(vm);
      assert.equal(vm.exitInfo?.expected, true, 'a stop that stopVM asked for is expected');
      await vm.stopVM();
      assert.equal(vm.state, 'stopped', 'stopVM is idempotent');
      await rejectsWithCode(vm.check(h.op()), 'INVALID_STATE', 'check after stopVM');
    });
  }, ms);

  t.it('startVM({ paused: true }) leaves the vCPUs stopped until resumeVM', async () => {
    await h.withVm(async (vm) => {
      await h.boot(vm, spec, true);
      assert.equal(vm.state, 'paused');
      assert.ok(vm.getPids().length >= 1);
      await rejectsWithCode(vm.pauseVM(h.op()), 'INVALID_STATE', 'pauseVM on a VM started paused');
      await vm.resumeVM(h.op());
      assert.equal(vm.state, 'running');
      await vm.check(h.op());
    });
  }, ms);

  t.it('`await using` stops a VM when its scope ends: one created and never started leaves nothing behind', async () => {
    let created: Hypervisor | undefined;
    let dir: string | undefined;
    try {
      {
        await using vm = await h.create();
        created = vm;
        await vm.createVM(h.config(spec), h.op());
        assert.equal(vm.state, 'created');
        dir = runtimeDirOf(vm);
      }
      assertStoppedAndClean(created);
      if (dir !== undefined) assert.equal(existsSync(dir), false, `its runtime directory ${dir} is gone`);
    } finally {
      if (created) await h.dispose(created);
    }
    // Harmless on an instance never created, or already stopped.
    for (const stopFirst of [false, true]) {
      await h.withVm(async (vm) => {
        {
          await using scoped = vm;
          if (stopFirst) await scoped.stopVM();
        }
        assert.equal(vm.state, 'stopped');
      });
    }
  }, ms);

  t.it('calls in the wrong state reject with InvalidStateError naming the state and what to call first', async () => {
    await h.withVm(async (vm) => {
      const early: [string, () => Promise<unknown>][] = [
        ['startVM', () => vm.startVM(h.op())],
        ['pauseVM', () => vm.pauseVM(h.op())],
        ['hotplugAddDevice', async () => vm.hotplugAddDevice({ type: 'block', id: 'conformance-x', path: await h.disk('wrong-state', vm) }, h.op())],
        ['resizeMemory', () => vm.resizeMemory(256, h.op())],
        ['check', () => vm.check(h.op())],
        ['waitForEvent', () => vm.waitForEvent('SHUTDOWN', undefined, h.op())],
      ];
      for (const [name, call] of early) await expectInvalidState(call(), name, 'new', 'call createVM first');
      assert.equal(vm.state, 'new', 'a refused call changes nothing');
    });
    await h.withVm(async (vm) => {
      await vm.createVM(h.config(spec), h.op());
      const calls: [string, () => Promise<unknown>][] = [
        ['pauseVM', () => vm.pauseVM(h.op())],
        ['resumeVM', () => vm.resumeVM(h.op())],
        ['hotplugAddDevice', async () => vm.hotplugAddDevice({ type: 'block', id: 'conformance-x', path: await h.disk('wrong-state', vm) }, h.op())],
        ['hotplugRemoveDevice', () => vm.hotplugRemoveDevice('conformance-x', h.op())],
        ['resizeMemory', () => vm.resizeMemory(256, h.op())],
        ['resizeVCPUs', () => vm.resizeVCPUs(2, h.op())],
        ['getThreadIds', () => vm.getThreadIds(h.op())],
        ['check', () => vm.check(h.op())],
      ];
      for (const [name, call] of calls) await expectInvalidState(call(), name, 'created', 'call startVM first');
      await expectInvalidState(vm.createVM(h.config(spec), h.op()), 'createVM', 'created', 'single-use', false);
      await vm.stopVM();
      await expectInvalidState(vm.startVM(h.op()), 'startVM', 'stopped', 'create a new instance');
      await expectInvalidState(vm.resumeVM(h.op()), 'resumeVM', 'stopped', 'create a new instance');
      await expectInvalidState(vm.createVM(h.config(spec), h.op()), 'createVM', 'stopped', 'create a new instance');
      await expectInvalidState(vm.hotplugAddDevice({ type: 'block', id: 'conformance-y', path: await h.disk('wrong-state', vm) }, h.op()), 'hotplugAddDevice', 'stopped', 'create a new instance');
    });
    await h.withVm(async (vm) => {
      await vm.stopVM();
      assert.equal(vm.state, 'stopped', 'stopVM on a new instance ends it');
      await expectInvalidState(vm.createVM(h.config(spec), h.op()), 'createVM', 'stopped', 'create a new instance');
    });
  }, ms);

  t.it('a start the hypervisor cannot complete fails with VmStartError saying why, and cleans up', async () => {
    await h.withVm(async (vm) => {
      // Only named, never opened: the VM is not created yet.
      const missing = `${await h.disk('start-missing', vm)}.missing`;
      await vm.createVM(h.config({ ...spec, devices: [{ type: 'block', id: 'conformance-gone', path: missing }] }), h.op());
      const error = await rejectsWithCode<VmStartError>(vm.startVM(h.op()), 'VM_START_FAILED', 'startVM with a missing cold-plugged disk');
      assert.ok(error.message.includes(basename(missing)), `the error names the missing disk: ${error.message}`);
      assertStoppedAndClean(vm);
      assert.ok(vm.exitInfo, 'exitInfo is set after a failed start');
    });
    await h.withVm(async (vm) => {
      await vm.createVM(h.config(spec), h.op());
      const reason = new Error('the caller gave up');
      const error = await rejectsWithCode<VmStartError>(vm.startVM({ signal: AbortSignal.abort(reason) }), 'VM_START_FAILED', 'startVM with an aborted signal');
      assert.equal((error.cause as { code?: unknown } | undefined)?.code, 'ABORTED', 'the abort is the cause');
      assertStoppedAndClean(vm);
    });
  }, ms);

  t.it('stopVM during startVM fails the start with VmStartError caused by VmStoppingError; concurrent stops share one promise', async () => {
    await h.withVm(async (vm) => {
      await vm.createVM(h.config(spec), h.op());
      const start = vm.startVM(h.op());
      const first = vm.stopVM();
      const second = vm.stopVM();
      assert.equal(second, first, 'concurrent stopVM calls share one promise');
      const error = await rejectsWithCode<VmStartError>(start, 'VM_START_FAILED', 'startVM interrupted by stopVM');
      assert.equal((error.cause as { code?: unknown } | undefined)?.code, 'VM_STOPPING', 'the stop is the cause');
      await first;
      assertStoppedAndClean(vm);
    });
  }, ms);

  t.it('stopVM interrupts a pending operation with VmStoppingError naming it, and cleans up', async () => {
    await h.withVm(async (vm) => {
      // A paused guest cannot release a device it has taken: its removal stays pending.
      await h.boot(vm, spec);
      await h.addDiskTheGuestHolds(vm, 'conformance-p', 'pending');
      await vm.pauseVM(h.op());
      const pending = vm.hotplugRemoveDevice('conformance-p', { timeoutMs: 10 * h.timeouts.operationMs });
      pending.catch(() => {});
      await h.settle();
      await vm.stopVM();
      const error = await rejectsWithCode<VmStoppingError>(pending, 'VM_STOPPING', 'a removal pending during stopVM');
      assert.ok(error.message.includes('hotplugRemoveDevice'), `the error names the operation: ${error.message}`);
      assertStoppedAndClean(vm);
      assert.equal(vm.exitInfo?.expected, true);
      await rejectsWithCode(vm.hotplugRemoveDevice('conformance-p', h.op()), 'INVALID_STATE', 'hotplugRemoveDevice after stopVM');
    });
  }, ms);
}

function identityOf(vm: Hypervisor): VmIdentity | undefined {
  return vm.identity;
}

function configOf(vm: Hypervisor): Hypervisor['config'] {
  return vm.config;
}

/** The runtime directory of a backend that has one on the host (the QEMU backend's `runtimeDir`). */
function runtimeDirOf(vm: Hypervisor): string | undefined {
  const dir = (vm as { runtimeDir?: unknown }).runtimeDir;
  return typeof dir === 'string' ? dir : undefined;
}

export function assertStoppedAndClean(vm: Hypervisor): void {
  assert.equal(vm.state, 'stopped' satisfies VmState);
  assert.deepEqual(vm.getPids(), [], 'nothing runs after the VM stopped');
}

/** What the config decides of the capabilities; the rest is the backend's. */
export function assertCapabilitiesFollowConfig(vm: Hypervisor): HypervisorCapabilities {
  const caps = vm.capabilities();
  const hotplug = vm.config?.memory.hotplug ?? 'none';
  assert.equal(caps.memoryHotplug, hotplug !== 'none', `memoryHotplug follows memory.hotplug "${hotplug}"`);
  if (hotplug === 'dimm') assert.equal(caps.memoryHotUnplug, false, 'DIMMs cannot be unplugged');
  if (!caps.memoryHotplug) assert.equal(caps.memoryHotUnplug, false, 'no unplug without hotplug');
  if (caps.cpuHotUnplug) assert.equal(caps.cpuHotplug, true, 'no vCPU unplug without vCPU hotplug');
  if (hotplug === 'dimm') assert.equal(caps.dimmHotplug, true, 'a VM with DIMM memory is on a machine that has DIMMs');
  assert.deepEqual(vm.capabilities(), caps, 'capabilities are stable');
  return caps;
}

/** `hint`: what the message must tell the caller to do (e.g. which call comes first). */
async function expectInvalidState(promise: Promise<unknown>, operation: string, state: VmState, hint?: string, namesState = true): Promise<void> {
  const error = await rejectsWithCode<InvalidStateError>(promise, 'INVALID_STATE', `${operation} while ${state}`);
  assert.equal(error.state, state, `${operation}: the error carries the state`);
  if (namesState) assert.ok(error.message.includes(state), `${operation}: the message names the state: ${error.message}`);
  if (hint !== undefined) assert.ok(error.message.includes(hint), `${operation}: the message says "${hint}": ${error.message}`);
}

async function rejectsWithAnyLibraryError(promise: Promise<unknown>, what: string): Promise<void> {
  const error = await promise.then(
    () => assert.fail(`${what}: expected a rejection`),
    (e: unknown) => e,
  );
  assert.ok(typeof (error as { code?: unknown }).code === 'string', `${what}: rejects with a library error (got ${String(error)})`);
}
