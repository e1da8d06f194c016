// DIMM memory and removals the guest cannot complete, on one running VM with a single hotplug slot:
// DIMMs grow in whole guest memory blocks, one slot each, never shrink; a device the guest does not
// release stays plugged and keeps its slot.
import assert from 'node:assert/strict';
import type { ConfigError } from '../hypervisor/config/index.ts';
import type { DeviceRemovalTimeoutError, ResourceLimitError } from '../hypervisor/errors.ts';
import type { HypervisorCapabilities } from '../hypervisor/types.ts';
import { rejectsWithCode, type Harness, type VmSpec } from './harness.ts';
import { assertCapabilitiesFollowConfig } from './lifecycle.ts';
import type { ConformanceTestApi } from './options.ts';
import { SharedVm } from './shared-vm.ts';

/** DIMMs where the machine has them (capabilities().dimmHotplug); else no memory hotplug at all. */
const dimmMemory: VmSpec['memory'] = { bootMiB: 256, maxMiB: 1024, hotplug: 'dimm', slots: 2 };
const spec = (caps: HypervisorCapabilities): VmSpec => ({
  cpus: { boot: 1, max: 1 },
  memory: caps.dimmHotplug ? dimmMemory : { bootMiB: 256, hotplug: 'none' },
  rootPorts: 1,
});

export function defineDimmTests(api: ConformanceTestApi, h: Harness): void {
  const ms = h.timeouts.testMs;
  const shared = new SharedVm(h, spec);
  const t = shared.tidyAfterFailures(api);
  const memory = h.options.guest?.memoryMiB?.bind(h.options.guest);
  shared.registerHooks(t);

  t.it('DIMMs grow in 128 MiB blocks, one slot each, never shrink, and run out of slots with NoFreeSlotError (a machine without DIMMs refuses them by field)', async () => {
    const vm = await shared.get();
    const caps = assertCapabilitiesFollowConfig(vm);
    if (!caps.dimmHotplug) {
      // A machine without DIMMs refuses the config that asks for them, by field.
      await h.withVm(async (other) => {
        const error = await rejectsWithCode<ConfigError>(other.createVM(h.config({ ...spec(caps), memory: dimmMemory }), h.op()), 'CONFIG_INVALID', 'memory.hotplug "dimm" where capabilities() says dimmHotplug is false');
        assert.deepEqual(error.paths, ['memory.hotplug'], 'the refusal names memory.hotplug');
      });
      await rejectsWithCode(vm.resizeMemory(384, h.op()), 'UNSUPPORTED', 'resizeMemory without memory hotplug');
      return;
    }
    assert.equal(caps.memoryHotplug, true);
    const base = memory ? await memory(vm) : 0;
    assert.deepEqual(await vm.resizeMemory(300, h.op()), { previousMiB: 256, currentMiB: 384 }, 'aligned up to a 128 MiB block');
    if (memory) {
      const grown = (await h.eventually(() => memory(vm), (mib) => mib - base >= 0.9 * 128)) - base;
      assert.ok(grown >= 0.9 * 128 && grown <= 128, `the guest gained about 128 MiB (gained ${grown})`);
    }
    assert.deepEqual(await vm.resizeMemory(512, h.op()), { previousMiB: 384, currentMiB: 512 });
    await rejectsWithCode(vm.resizeMemory(640, h.op()), 'NO_FREE_SLOT', 'a third DIMM with two slots');
    assert.deepEqual(await vm.resizeMemory(512, h.op()), { previousMiB: 512, currentMiB: 512 }, 'the refused step changed nothing');
    await rejectsWithCode(vm.resizeMemory(384, h.op()), 'UNSUPPORTED', 'shrinking DIMM memory');
    const above = await rejectsWithCode<ResourceLimitError>(vm.resizeMemory(1025, h.op()), 'RESOURCE_LIMIT', 'resizeMemory above memory.maxMiB');
    assert.equal(above.limit, 1024);
    assert.deepEqual(await vm.resizeVCPUs(1, h.op()), { previous: 1, current: 1 });
    await rejectsWithCode(vm.resizeVCPUs(2, h.op()), 'RESOURCE_LIMIT', 'resizeVCPUs above cpus.max');
  }, ms);

  t.it('a removal the guest cannot complete times out with DeviceRemovalTimeoutError; the device keeps its slot until a retry finishes', async () => {
    const vm = await shared.get();
    await h.addDiskTheGuestHolds(vm, 'conformance-stuck', 'stuck');
    await vm.pauseVM(h.op());
    const removalMs = h.removalTimeoutMs(vm);
    const error = await rejectsWithCode<DeviceRemovalTimeoutError>(
      vm.hotplugRemoveDevice('conformance-stuck', { timeoutMs: Math.max(h.timeouts.operationMs, 5 * removalMs) }),
      'DEVICE_REMOVAL_TIMEOUT',
      'removal from a paused guest',
    );
    assert.deepEqual([error.deviceId, error.timeoutMs], ['conformance-stuck', removalMs]);
    assert.equal(vm.devices().find((d) => d.id === 'conformance-stuck')?.hotplugged, true, 'the device is still accounted for');
    await rejectsWithCode(
      vm.hotplugAddDevice({ type: 'block', id: 'conformance-other', path: await h.disk('other', vm) }, h.op()),
      'NO_FREE_SLOT',
      'hotplug while the only slot is held by the device that did not go',
    );
    await vm.check(h.op());
    await vm.resumeVM(h.op());
    // The guest now completes the request; a retry (or two, if the guest is slow) finishes the job.
    const outcome = await h.eventually(
      () => vm.hotplugRemoveDevice('conformance-stuck', h.op()).then(() => undefined, (e: unknown) => e),
      (e) => e === undefined || (e as { code?: unknown }).code !== 'DEVICE_REMOVAL_TIMEOUT',
    );
    assert.equal(outcome, undefined, `the retried removal succeeds (got ${String(outcome)})`);
    assert.equal(vm.devices().find((d) => d.id === 'conformance-stuck'), undefined);
  }, ms);

  shared.defineStopTest(t);
}
