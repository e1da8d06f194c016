// vCPU resize conformance on one running VM: vCPUs come within the config's limits, seen in
// getThreadIds and by the guest; they go (newest first, a removal the guest cannot complete being
// a typed timeout) where capabilities() says so, and are refused with a typed error where not. The
// group has a VM of its own and changes nothing after the first vCPU unplug: QEMU 7.2 under TCG
// crashes on any device_add or device_del after one, which is why it refuses it by default.
import assert from 'node:assert/strict';
import type { DeviceRemovalTimeoutError, ResourceLimitError } from '../hypervisor/errors.ts';
import { rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import type { ConformanceTestApi } from './options.ts';
import { SharedVm } from './shared-vm.ts';

const spec: VmSpec = { cpus: { boot: 1, max: 3 }, memory: { bootMiB: 256, hotplug: 'none' }, rootPorts: 1 };

export function defineVcpuTests(api: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const shared = new SharedVm(h, spec);
  const t = shared.tidyAfterFailures(api);
  const online = h.options.guest?.onlineCpus?.bind(h.options.guest);
  shared.registerHooks(t);

  t.it('vCPUs are added within the limits, and seen by getThreadIds and the guest', async () => {
    const vm = await shared.get();
    assert.deepEqual(await vm.resizeVCPUs(3, h.op()), { previous: 1, current: 3 });
    assert.deepEqual([...(await vm.getThreadIds(h.op())).keys()].sort(), [0, 1, 2]);
    if (online) assert.equal(await h.eventually(() => online(vm), (n) => n === 3), 3, 'the guest has 3 vCPUs online');

    const above = await rejectsWithCode<ResourceLimitError>(vm.resizeVCPUs(4, h.op()), 'RESOURCE_LIMIT', 'resizeVCPUs above cpus.max');
    assert.deepEqual([above.resource, above.requested, above.limit], ['cpus', 4, 3]);
    const below = await rejectsWithCode<ResourceLimitError>(vm.resizeVCPUs(0, h.op()), 'RESOURCE_LIMIT', 'resizeVCPUs below cpus.boot');
    assert.equal(below.limit, 1);
    await rejectsWithCode(vm.resizeVCPUs(1.5, h.op()), 'RESOURCE_LIMIT', 'resizeVCPUs to a fraction');
  }, ms);

  // No vCPU or device is added after the first unplug: see the note at the top.
  t.it('vCPUs go as capabilities() says: removed newest first once the guest lets go (a paused guest times out until a retry), or refused with every vCPU kept', async () => {
    const vm = await shared.get();
    if (!vm.capabilities().cpuHotUnplug) {
      await rejectsWithCode(vm.resizeVCPUs(1, h.op()), 'UNSUPPORTED', 'vCPU removal where capabilities() says it is not supported');
      assert.equal((await vm.getThreadIds(h.op())).size, 3, 'a refused removal keeps every vCPU');
      if (online) assert.equal(await online(vm), 3, 'the guest keeps its 3 vCPUs');
      return;
    }
    await vm.pauseVM(h.op());
    await rejectsWithCode<DeviceRemovalTimeoutError>(
      vm.resizeVCPUs(1, { timeoutMs: Math.max(h.timeouts.operationMs, 10 * h.timeouts.removalMs) }),
      'DEVICE_REMOVAL_TIMEOUT',
      'vCPU removal from a paused guest',
    );
    assert.equal((await vm.getThreadIds(h.op())).size, 3, 'the vCPU the guest kept is still there');
    await vm.resumeVM(h.op());
    const outcome = await h.eventually(
      () => vm.resizeVCPUs(1, h.op()).then((result) => result, (e: unknown) => e),
      (r) => (r as { code?: unknown }).code !== 'DEVICE_REMOVAL_TIMEOUT',
    );
    assert.deepEqual(outcome, { previous: 3, current: 1 }, 'the retried resize finishes');
    assert.deepEqual([...(await vm.getThreadIds(h.op())).keys()], [0]);
    if (online) assert.equal(await h.eventually(() => online(vm), (n) => n === 1), 1, 'the guest is back to 1 vCPU');
    assert.deepEqual(await vm.resizeVCPUs(1, h.op()), { previous: 1, current: 1 });
  }, ms);

  shared.defineStopTest(t);
}
