// What a runtime sees when things go wrong behind the backend's back: the hypervisor dying, the
// guest panicking. Registered only for the faults the backend can cause.
import assert from 'node:assert/strict';
import type { VmExitedError, VmUnhealthyError } from '../hypervisor/errors.ts';
import type { VmExitInfo } from '../hypervisor/types.ts';
import { assertCode, recordEvents, rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import { assertStoppedAndClean } from './lifecycle.ts';
import type { ConformanceTestApi } from './options.ts';

const spec: VmSpec = { cpus: { boot: 1, max: 1 }, memory: { bootMiB: 256, hotplug: 'none' }, rootPorts: 1 };

export function defineFailureTests(t: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const { crash, panic } = h.options.faults ?? {};

  if (crash) {
    t.it('the hypervisor dying rejects pending calls with VmExitedError, calls onExit once, and leaves the VM stopped and unhealthy', async () => {
      await h.withVm(async (vm) => {
        await h.boot(vm, spec);
        const exits: VmExitInfo[] = [];
        const exited = new Promise<VmExitInfo>((resolve) =>
          vm.onExit((info) => {
            exits.push(info);
            resolve(info);
          }),
        );
        // A paused guest cannot release a device it has taken: its removal is pending when the hypervisor dies.
        await h.addDiskTheGuestHolds(vm, 'conformance-d', 'crash');
        await vm.pauseVM(h.op());
        const pending = vm.hotplugRemoveDevice('conformance-d', { timeoutMs: 10 * h.timeouts.operationMs });
        pending.catch(() => {});
        await h.settle();

        await crash(vm);
        const info = await h.within(exited, 'onExit is called after the hypervisor died');
        assert.equal(info.expected, false, 'an exit nobody asked for is unexpected');
        const error = await rejectsWithCode<VmExitedError>(pending, 'VM_EXITED', 'a removal pending when the hypervisor died');
        assert.ok(error.message.includes('hotplugRemoveDevice'), `the error names the operation: ${error.message}`);
        assertStoppedAndClean(vm);
        assert.deepEqual(vm.exitInfo, info, 'exitInfo is what onExit was given');
        await rejectsWithCode<VmUnhealthyError>(vm.check(h.op()), 'VM_UNHEALTHY', 'check after the hypervisor died');

        await vm.stopVM();
        assert.equal(vm.state, 'stopped');
        assert.equal(vm.exitInfo?.expected, false, 'stopVM afterwards does not rewrite how the hypervisor ended');
        assert.equal(exits.length, 1, 'onExit is called once');
      });
    }, ms);
  }

  if (panic) {
    t.it('a guest panic makes check() reject with VmUnhealthyError (guest-panicked) and is reported as an event', async () => {
      await h.withVm(async (vm) => {
        await h.boot(vm, { ...spec, devices: [{ type: 'pvpanic', id: 'conformance-panic' }] });
        const events = recordEvents(vm);
        await vm.check(h.op());
        await panic(vm);
        const outcome = await h.eventually(
          () => vm.check(h.op()).then(() => undefined, (error: unknown) => error),
          (error) => error !== undefined,
        );
        if (outcome === undefined) assert.fail(`check() still resolves ${h.timeouts.guestMs} ms after the guest panicked`);
        const error = assertCode<VmUnhealthyError>(outcome, 'VM_UNHEALTHY', 'check after a guest panic');
        assert.equal(error.status, 'guest-panicked');
        if (h.options.events) {
          const { guestPanicked } = h.options.events;
          assert.ok(events.some((e) => guestPanicked(e)), `a guest-panicked event was reported (got ${events.map((e) => e.name).join(', ')})`);
        }
        assert.ok(vm.getPids().length > 0, 'the hypervisor keeps the panicked guest for inspection');
        await vm.stopVM();
        assertStoppedAndClean(vm);
        assert.equal(vm.exitInfo?.expected, true);
      });
    }, ms);
  }
}
