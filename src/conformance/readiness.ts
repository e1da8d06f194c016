// Guest readiness and the events the contract types: startVM's waitForChannel, waitForEvent, and
// how the VM ended (exitInfo.reason). Each test has a VM of its own.
import assert from 'node:assert/strict';
import type { GuestNotReadyError, VmStartError } from '../hypervisor/errors.ts';
import type { InvalidArgumentError } from '../errors.ts';
import type { VmExitInfo } from '../hypervisor/types.ts';
import { assertCode, rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import { assertStoppedAndClean } from './lifecycle.ts';
import type { ConformanceTestApi } from './options.ts';

const spec: VmSpec = { cpus: { boot: 1, max: 1 }, memory: { bootMiB: 256, hotplug: 'none' }, rootPorts: 1 };

export function defineReadinessTests(t: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const channels = h.options.channels;

  t.it('waitForEvent resolves with the next matching event, typed; rejects on its deadline and with what the predicate throws', async () => {
    await h.withVm(async (vm) => {
      await h.boot(vm, spec);
      const stopped = vm.waitForEvent('STOP', undefined, h.op());
      await vm.pauseVM(h.op());
      assert.equal((await h.within(stopped, 'the STOP event of pauseVM')).name, 'STOP');
      const refused = new Error('the predicate refuses');
      const resumed = vm.waitForEvent('RESUME', () => {
        throw refused;
      }, h.op());
      // RESUME may arrive (and the wait reject) before resumeVM returns: observed now, asserted below.
      resumed.catch(() => {});
      await vm.resumeVM(h.op());
      await assert.rejects(h.within(resumed, 'the predicate error'), (error) => error === refused, 'a throwing predicate rejects the wait with its error');
      // Nothing makes QEMU send this event: the wait ends at its own deadline.
      await rejectsWithCode(vm.waitForEvent('SUSPEND', undefined, { timeoutMs: 50 }), 'TIMEOUT', 'waitForEvent past its timeoutMs');
      const pending = vm.waitForEvent('SUSPEND', undefined, h.op()).then(
        () => undefined,
        (error: unknown) => error,
      );
      await vm.stopVM();
      assertCode(await pending, 'VM_STOPPING', 'a wait stopVM interrupts');
    });
  }, ms);

  if (channels) {
    t.it("startVM({ waitForChannel }) resolves once the guest opened the channel, which exitInfo.reason follows to 'host-qmp-quit'", async () => {
      await h.withVm(async (vm) => {
        await vm.createVM(h.config(spec), h.op());
        const opened: unknown[] = [];
        vm.onEvent((event) => {
          if (event.name === 'VSERPORT_CHANGE' && event.data['id'] === channels.opened && event.data['open'] === true) opened.push(event);
        });
        await vm.startVM({ ...h.op(), waitForChannel: channels.opened });
        assert.equal(vm.state, 'running');
        assert.equal(opened.length, 1, 'startVM resolved once the guest had opened the channel (one VSERPORT_CHANGE with open: true)');
        await vm.stopVM();
        assert.equal(vm.exitInfo?.expected, true);
        assert.equal(vm.exitInfo.reason, 'host-qmp-quit', 'a stop asked of the hypervisor says so');
      });
    }, ms);

    t.it('a channel the guest never opens fails the start with GuestNotReadyError naming it, and cleans up; a bad waitForChannel changes nothing', async () => {
      await h.withVm(async (vm) => {
        await vm.createVM(h.config(spec), h.op());
        const unknown = await rejectsWithCode<InvalidArgumentError>(vm.startVM({ ...h.op(), waitForChannel: 'conformance-no-such-channel' }), 'INVALID_ARGUMENT', 'waitForChannel naming no channel');
        assert.ok(unknown.message.includes('conformance-no-such-channel') && unknown.message.includes(channels.opened), `the error names the id and the config's channels: ${unknown.message}`);
        await rejectsWithCode(vm.startVM({ ...h.op(), paused: true, waitForChannel: channels.opened }), 'INVALID_ARGUMENT', 'waitForChannel with paused');
        assert.equal(vm.state, 'created', 'a refused startVM leaves the VM created');
        // Long enough for the guest to boot and open the other channel: this one still stays closed.
        const error = await rejectsWithCode<GuestNotReadyError & VmStartError>(
          vm.startVM({ timeoutMs: Math.min(h.timeouts.guestMs, 10_000), waitForChannel: channels.neverOpened }),
          'VM_START_FAILED',
          'startVM waiting for a channel the guest never opens',
        );
        assert.equal(error.channel, channels.neverOpened, 'the error names the channel');
        assert.ok(error.message.includes(channels.neverOpened), `the message names the channel: ${error.message}`);
        assert.equal((error.cause as { code?: unknown } | undefined)?.code, 'TIMEOUT', "the start's deadline is the cause");
        assertStoppedAndClean(vm);
      });
    }, ms);
  }

  const resetGuest = h.options.faults?.resetGuest;
  if (resetGuest) {
    t.it("a guest that resets itself ends the VM with exitInfo.reason 'guest-reset'", async () => {
      await h.withVm(async (vm) => {
        await vm.createVM(h.config(spec), h.op());
        await vm.startVM({ ...h.op(), ...(channels ? { waitForChannel: channels.opened } : {}) });
        const exited = new Promise<VmExitInfo>((resolve) => vm.onExit(resolve));
        await resetGuest(vm);
        const info = await h.within(exited, 'the exit of a guest that reset');
        assert.equal(info.expected, false, 'nobody asked for it');
        assert.equal(info.reason, 'guest-reset', `exitInfo says why (${JSON.stringify(info)})`);
        assert.deepEqual(vm.exitInfo, info);
        assertStoppedAndClean(vm);
      });
    }, ms);
  }
}
