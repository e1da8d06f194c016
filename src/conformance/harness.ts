// What the conformance tests share: the configs they boot, making and disposing of VMs whatever
// happens, polling the guest, and asserting on typed errors by their stable code (so that a backend
// built on another copy of this library is judged the same).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { isSandboxVmmError, type SandboxVmmError, type SandboxVmmErrorCode } from '../errors.ts';
import type { DeviceConfigInput, SandboxConfigInput } from '../hypervisor/config/index.ts';
import type { Hypervisor, HypervisorCapabilities, HypervisorEvent } from '../hypervisor/types.ts';
import type { OperationOptions } from '../util/deadline.ts';
import type { ResolvedConformanceOptions } from './options.ts';

/** A cold-plugged device every suite VM has, to test what may not be done to one. */
export const COLD_DEVICE_ID = 'conformance-rng';

export interface VmSpec {
  cpus: { boot: number; max: number };
  memory: { bootMiB: number; maxMiB?: number; hotplug?: 'virtio-mem' | 'dimm' | 'none'; slots?: number; backing?: { type: 'shared' } };
  rootPorts: number;
  devices?: DeviceConfigInput[];
}

/** The smallest VM every backend can make: what capabilities() says of the machine is read from it. */
const PROBE_SPEC: VmSpec = { cpus: { boot: 1, max: 1 }, memory: { bootMiB: 256, hotplug: 'none' }, rootPorts: 0 };

export class Harness {
  readonly options: ResolvedConformanceOptions;
  #disks = 0;
  #capabilities: Promise<HypervisorCapabilities> | undefined;

  constructor(options: ResolvedConformanceOptions) {
    this.options = options;
  }

  get timeouts(): ResolvedConformanceOptions['timeouts'] {
    return this.options.timeouts;
  }

  /** The backend's config with the spec's resources, a fresh id, and the suite's cold devices. */
  config(spec: VmSpec): SandboxConfigInput {
    const base = this.options.config();
    return {
      ...base,
      id: `conformance-${randomUUID().slice(0, 8)}`,
      cpus: spec.cpus,
      memory: spec.memory,
      hotplug: { ...base.hotplug, rootPorts: spec.rootPorts },
      devices: [...(base.devices ?? []), { type: 'rng', id: COLD_DEVICE_ID }, ...(spec.devices ?? [])],
    };
  }

  async create(): Promise<Hypervisor> {
    return this.options.create({ deviceRemovalTimeoutMs: this.timeouts.removalMs });
  }

  /**
   * How long `vm`'s removals wait for the guest (the machine's default unless the suite asked for
   * a figure, which the backend must then report).
   */
  removalTimeoutMs(vm: Hypervisor): number {
    const reported = vm.capabilities().deviceRemovalTimeoutMs;
    assert.ok(Number.isInteger(reported) && reported > 0, `capabilities().deviceRemovalTimeoutMs is a positive integer (got ${String(reported)})`);
    const asked = this.timeouts.removalMs;
    if (asked !== undefined) assert.equal(reported, asked, 'capabilities().deviceRemovalTimeoutMs is the removal timeout the backend was given');
    return reported;
  }

  /**
   * What the backend's machine can do (vCPU and DIMM hotplug), from a VM of the backend's config
   * that is created, asked and stopped, once: the groups that need a capability test its refusal
   * where it is missing, so that they are gated on capabilities(), never on an architecture.
   */
  capabilities(): Promise<HypervisorCapabilities> {
    this.#capabilities ??= (async () => {
      const vm = await this.create();
      try {
        await vm.createVM(this.config(PROBE_SPEC), this.op());
        return vm.capabilities();
      } finally {
        await this.dispose(vm);
      }
    })();
    return this.#capabilities;
  }

  /** A disk image path no other test uses, for `vm` (see ConformanceOptions.disk). */
  async disk(name: string, vm: Hypervisor): Promise<string> {
    const path = await this.options.disk(`${name}-${++this.#disks}`, vm);
    // Said here rather than as an ENOENT from a test that opens it, or a backend's refusal.
    if (!existsSync(path)) assert.fail(`ConformanceOptions.disk('${name}') returned ${path}, which does not exist: disk() must create the image file`);
    return path;
  }

  /**
   * Hot-adds disk `id` to the running `vm` and waits until the guest has it, where the disk probe
   * can tell: only a device the guest took can be held back from a removal (with native PCIe
   * hotplug, as on aarch64's virt, QEMU removes a device from a slot the guest never powered on at
   * once, without asking it). Pause the guest afterwards to keep its removal pending.
   */
  async addDiskTheGuestHolds(vm: Hypervisor, id: string, name: string): Promise<void> {
    const disks = this.options.guest?.diskCount?.bind(this.options.guest);
    const before = disks ? await disks(vm) : 0;
    await vm.hotplugAddDevice({ type: 'block', id, path: await this.disk(name, vm) }, this.op());
    if (disks) assert.equal(await this.eventually(() => disks(vm), (n) => n === before + 1), before + 1, `the guest sees ${id}`);
  }

  /** Options for an operation the suite calls. */
  op(): OperationOptions {
    return { timeoutMs: this.timeouts.operationMs };
  }

  /** Runs `fn` on a new backend, then stops it and releases the probes, whether `fn` passed or not. */
  async withVm(fn: (vm: Hypervisor) => Promise<void>): Promise<void> {
    const vm = await this.create();
    try {
      await fn(vm);
    } finally {
      await this.dispose(vm);
    }
  }

  async dispose(vm: Hypervisor): Promise<void> {
    try {
      await vm.stopVM();
    } finally {
      await this.options.guest?.release?.(vm);
    }
  }

  /** Creates and starts a VM of `spec` on `vm`. */
  async boot(vm: Hypervisor, spec: VmSpec, paused = false): Promise<void> {
    await vm.createVM(this.config(spec), this.op());
    await vm.startVM({ ...this.op(), paused });
  }

  /**
   * Reads `read` until `done` holds or the guest's time is up, and returns the last value read: the
   * caller asserts on it, so a guest that never gets there fails with the value it reached.
   */
  async eventually<T>(read: () => Promise<T>, done: (value: T) => boolean): Promise<T> {
    const end = Date.now() + this.timeouts.guestMs;
    let value = await read();
    while (!done(value) && Date.now() < end) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      value = await read();
    }
    return value;
  }

  /** Waits for `promise`, failing the test with `what` if it does not settle in the guest's time. */
  async within<T>(promise: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what} within ${this.timeouts.guestMs} ms` })), this.timeouts.guestMs);
    });
    try {
      return await Promise.race([promise, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Gives a request the time to reach the hypervisor before the suite interrupts it. */
  settle(): Promise<void> {
    return new Promise((resolve) => setTimeout(resolve, this.timeouts.settleMs));
  }
}

/** Records a VM's events from now on. */
export function recordEvents(vm: Hypervisor): HypervisorEvent[] {
  const events: HypervisorEvent[] = [];
  vm.onEvent((event) => events.push(event));
  return events;
}

/** Asserts that `promise` rejects with a library error of `code`, and returns that error. */
export async function rejectsWithCode<E extends SandboxVmmError = SandboxVmmError>(promise: Promise<unknown>, code: SandboxVmmErrorCode, what: string): Promise<E> {
  let outcome: { value: unknown } | { error: unknown };
  try {
    outcome = { value: await promise };
  } catch (error) {
    outcome = { error };
  }
  if (!('error' in outcome)) assert.fail(`${what}: expected a rejection with ${code}, but it resolved`);
  return assertCode<E>(outcome.error, code, what);
}

/** Asserts that `error` is a library error of `code`, and returns it. */
export function assertCode<E extends SandboxVmmError = SandboxVmmError>(error: unknown, code: SandboxVmmErrorCode, what: string): E {
  if (!isSandboxVmmError(error)) assert.fail(`${what}: expected a library error with ${code}, got ${String(error)}`);
  assert.equal(error.code, code, `${what}: expected ${code}, got ${error.code}: ${error.message}`);
  return error as E;
}

export function range(count: number): number[] {
  return Array.from({ length: count }, (_, i) => i);
}
