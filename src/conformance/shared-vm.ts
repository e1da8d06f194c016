// One VM for a group of tests that build on each other's clean-up (hotplug, resize): booted once,
// by beforeAll when the framework has it, else by the first test that needs it.
import type { Hypervisor, HypervisorEvent } from '../hypervisor/types.ts';
import { recordEvents, type Harness, type VmSpec } from './harness.ts';

export class SharedVm {
  readonly #harness: Harness;
  readonly #spec: VmSpec;
  #booting: Promise<Hypervisor> | undefined;
  #vm: Hypervisor | undefined;
  #events: HypervisorEvent[] = [];

  constructor(harness: Harness, spec: VmSpec) {
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
    await this.#harness.boot(vm, this.#spec);
    return vm;
  }

  /** Stops the VM if it was made (idempotent, so afterAll can call it after the last test did). */
  async dispose(): Promise<void> {
    if (this.#vm) await this.#harness.dispose(this.#vm);
  }
}
