// One VM for a group of tests that build on each other's clean-up (hotplug, resize): booted once,
// by beforeAll when the framework has it, else by the first test that needs it.
import assert from 'node:assert/strict';
import type { Hypervisor, HypervisorCapabilities, HypervisorEvent } from '../hypervisor/types.ts';
import { recordEvents, type Harness, type VmSpec } from './harness.ts';
import { assertStoppedAndClean } from './lifecycle.ts';
import type { ConformanceTestApi } from './options.ts';

export class SharedVm {
  readonly #harness: Harness;
  readonly #spec: VmSpec | ((capabilities: HypervisorCapabilities) => VmSpec);
  #booting: Promise<Hypervisor> | undefined;
  #vm: Hypervisor | undefined;
  #events: HypervisorEvent[] = [];

  /** `spec` may depend on what the backend's machine can do (Harness.capabilities). */
  constructor(harness: Harness, spec: VmSpec | ((capabilities: HypervisorCapabilities) => VmSpec)) {
    this.#harness = harness;
    this.#spec = spec;
  }

  /** The running VM; every test fails with the boot's error if it could not start. */
  get(): Promise<Hypervisor> {
    this.#booting ??= this.#boot();
    return this.#booting;
  }

  /** Every event the VM reported since it was created. */
  get events(): readonly HypervisorEvent[] {
    return this.#events;
  }

  async #boot(): Promise<Hypervisor> {
    const vm = await this.#harness.create();
    this.#vm = vm;
    this.#events = recordEvents(vm);
    const spec = typeof this.#spec === 'function' ? this.#spec(await this.#harness.capabilities()) : this.#spec;
    await this.#harness.boot(vm, spec);
    return vm;
  }

  /** Stops the VM if it was made (idempotent, so afterAll can call it after the last test did). */
  async dispose(): Promise<void> {
    if (this.#vm) await this.#harness.dispose(this.#vm);
  }

  /**
   * `t`, whose tests remove the hot-plugged devices a failing test left on the VM: the next tests
   * then start from a clean VM instead of failing one after another for lack of a slot.
   */
  tidyAfterFailures(t: ConformanceTestApi): ConformanceTestApi {
    const it: ConformanceTestApi['it'] = (name, fn, timeoutMs) =>
      t.it(
        name,
        async () => {
          try {
            await fn();
          } catch (error) {
            await this.#removeHotplugged();
            throw error;
          }
        },
        timeoutMs,
      );
    const tidy: ConformanceTestApi = { describe: (name, fn) => t.describe(name, fn), it };
    if (t.beforeAll) tidy.beforeAll = (fn, timeoutMs) => t.beforeAll?.(fn, timeoutMs);
    if (t.afterAll) tidy.afterAll = (fn, timeoutMs) => t.afterAll?.(fn, timeoutMs);
    return tidy;
  }

  /** Best effort: the test's own failure is what gets reported. */
  async #removeHotplugged(): Promise<void> {
    const vm = this.#vm;
    if (!vm || (vm.state !== 'running' && vm.state !== 'paused')) return;
    for (const device of vm.devices().filter((d) => d.hotplugged)) {
      await vm.hotplugRemoveDevice(device.id, this.#harness.op()).catch(() => undefined);
    }
  }

  /** Boots the VM before the group's tests (where the framework has beforeAll) and stops it after. */
  registerHooks(t: ConformanceTestApi): void {
    const ms = this.#harness.timeouts.testMs;
    t.beforeAll?.(async () => void (await this.get()), ms);
    t.afterAll?.(() => this.dispose(), ms);
  }

  /** The group's last test: stopping its VM leaves nothing behind. */
  defineStopTest(t: ConformanceTestApi): void {
    t.it(
      'stopping the VM leaves nothing behind',
      async () => {
        const vm = await this.get();
        await this.dispose();
        assertStoppedAndClean(vm);
        assert.equal(vm.exitInfo?.expected, true);
      },
      this.#harness.timeouts.testMs,
    );
  }
}
