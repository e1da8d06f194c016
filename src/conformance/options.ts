// What a backend hands the conformance suite: how to make one, the config its guest boots with, and
// optional ways to look inside the guest and to make the hypervisor fail.
import type { SandboxConfigInput } from '../hypervisor/config/index.ts';
import { DEVICE_EJECTED, type Hypervisor, type HypervisorEvent } from '../hypervisor/types.ts';

/**
 * The test framework's registration functions (vitest, jest, mocha, node:test all fit). Tests in a
 * describe block must run in order, one at a time, as they do by default in all of them.
 */
export interface ConformanceTestApi {
/** Registers a group of tests. */
  describe(name: string, fn: () => void): void;
/** Registers one test, with its timeout. */
  it(name: string, fn: () => Promise<void>, timeoutMs?: number): void;
/** Registers what runs before the tests of the enclosing group. */
  beforeAll?(fn: () => Promise<void>, timeoutMs?: number): void;
/** Registers what runs after the tests of the enclosing group. */
  afterAll?(fn: () => Promise<void>, timeoutMs?: number): void;
}

/** Settings the suite needs the backend to use; `create` applies them. */
export interface ConformanceBackendSettings {
  /**
   * How long a device or vCPU removal waits for the guest before DeviceRemovalTimeoutError; absent
   * (`ConformanceTimeouts.removalMs` not given): the backend's own default for its machine.
   */
  deviceRemovalTimeoutMs?: number | undefined;
}

/**
 * Looks from inside the guest (a guest agent, or the mock's model). Each probe the backend gives
 * makes the suite prove an effect where the guest sees it, not only in the backend's bookkeeping.
 */
export interface ConformanceGuestProbes<H extends Hypervisor = Hypervisor> {
  /** Block devices the guest has. */
  diskCount?(vm: H): Promise<number>;
  /** vCPUs online in the guest. */
  onlineCpus?(vm: H): Promise<number>;
  /** Memory the guest has (e.g. MemTotal); only differences are compared. */
  memoryMiB?(vm: H): Promise<number>;
  /**
   * The content of `file` in the virtio-fs share mounted by `tag` (mount it, read, unmount: the
   * share is removed afterwards).
   */
  readShared?(vm: H, tag: string, file: string): Promise<string>;
  /** Called once the suite is done with a VM (stopped or not): close what the probes opened. */
  release?(vm: H): Promise<void> | void;
}

/** Ways to make things go wrong from outside the backend. Each one given adds its tests. */
export interface ConformanceFaults<H extends Hypervisor = Hypervisor> {
  /** Kill the hypervisor process behind the backend's back. */
  crash?: (vm: H) => Promise<void> | void;
  /** Make the guest kernel panic (the config has a pvpanic device). */
  panic?: (vm: H) => Promise<void> | void;
  /** Make the guest reset (reboot) itself, e.g. `echo b > /proc/sysrq-trigger` in the guest. */
  resetGuest?: (vm: H) => Promise<void> | void;
  /**
   * Make the guest give up hot-plugged device `id` on its own, as a guest that powers the device's
   * slot off does (QEMU: `echo 0 > /sys/bus/pci/slots/<n>/power` in the guest). Resolve once the
   * guest has done it.
   */
  ejectDevice?: (vm: H, id: string) => Promise<void> | void;
  /** Damage the saved template in `dir` (its device state), so that using it must be refused. */
  corruptTemplate?: (dir: string) => Promise<void> | void;
}

/** How the backend reports events the suite checks; false checks none. */
export interface ConformanceEvents {
  /** The event saying the guest let go of device `id` (QEMU: DEVICE_DELETED with data.device). */
  deviceRemoved: (event: HypervisorEvent, id: string) => boolean;
  /** The event saying the guest panicked (QEMU: GUEST_PANICKED). */
  guestPanicked: (event: HypervisorEvent) => boolean;
  /** The event saying the guest ejected device `id` on its own (DEVICE_EJECTED with data.id). */
  deviceEjected: (event: HypervisorEvent, id: string) => boolean;
}

/** Time bounds the suite uses; raise them for a slow backend or guest. */
export interface ConformanceTimeouts {
  /** Per test. Default 120 s. */
  testMs?: number;
  /** `timeoutMs` of the operations the suite calls. Default 30 s. */
  operationMs?: number;
  /** How long the guest may take to reflect a change (polling the probes). Default 20 s. */
  guestMs?: number;
  /**
   * The device-removal timeout the suite asks the backend for. Default: none asked, the backend
   * keeps its own for its machine (native PCIe hotplug, as on aarch64's virt, takes seconds); the
   * suite reads it from `capabilities().deviceRemovalTimeoutMs` either way.
   */
  removalMs?: number;
  /** Time given to a request to reach the hypervisor before the suite interrupts it. Default 200 ms. */
  settleMs?: number;
}

/**
 * What `defineConformanceSuite` needs to run against a backend. `H`: the backend's class, which
 * `create` returns and the probes, faults and `disk` are given (so that they reach its own API
 * without a cast).
 */
export interface ConformanceOptions<H extends Hypervisor = Hypervisor> {
  /** Names the suite in the test report. */
  name: string;
  /** A fresh, unused backend. */
  create(settings: ConformanceBackendSettings): H | Promise<H>;
  /**
   * The config the backend's guest boots with (kernel, initrd, machine, devices it needs, such as a
   * guest agent channel). The suite sets cpus, memory and the hotplug root ports, and appends its
   * own devices (an rng device with id 'conformance-rng', a pvpanic device for the panic test, a
   * balloon with guest statistics for the statistics tests).
   */
  config(): SandboxConfigInput;
  /**
   * Creates a fresh, small disk image for block hotplug, distinct for each `name`, for `vm` to use,
   * and returns its path. It must be a real file (even for a backend that opens nothing): the suite
   * opens it itself to hand it over as an fd, and fails at once when it does not exist. The suite
   * asks once `vm` was created whenever the image is to be opened, so that a backend whose
   * hypervisor runs as a user of the VM's own (`vm.identity`) can give the image to that user, as a
   * runtime would; it may ask before createVM for a path that is only named, never opened.
   *
   * The suite also proves that the backend sees the host: a missing disk image (a path next to one
   * of these), a missing network namespace. A backend that pretends every path exists, such as
   * `new MockHypervisor({ host: false })`, fails exactly those three tests (createVM's, startVM's and
   * hotplug's refusals); the tests after them are not affected.
   */
  disk(name: string, vm: H): string | Promise<string>;
  guest?: ConformanceGuestProbes<H>;
  faults?: ConformanceFaults<H>;
  /**
   * Two channels of config(), by device id: one the guest opens once it has booted (its agent's) and
   * one it never opens. Given, they add the tests of startVM's waitForChannel.
   */
  channels?: { opened: string; neverOpened: string };
  /**
   * A fresh path for a template directory, distinct for each `name`, that does not exist (its
   * parent does). Given, it adds the template tests; a backend whose capabilities() says templates
   * must give it.
   */
  templateDir?: (name: string) => string | Promise<string>;
  /**
   * Creates a fresh host directory for a virtio-fs share, distinct for each `name`, that the
   * backend's file server (virtiofsd) can read, and returns its path; the suite writes a marker file
   * into it. Given, it adds the tests of hot-plugged shares (the refusals are tested without it).
   */
  shareDir?: (name: string, vm: H) => string | Promise<string>;
  /** Whether the backend has virtio-scsi disks. Default true. */
  scsi?: boolean;
  /** Default: QEMU's event names and shapes. */
  events?: ConformanceEvents | false;
  timeouts?: ConformanceTimeouts;
}

/** How QEMU reports device removal, guest panic and ejection, for `ConformanceOptions.events`. */
export const qemuEvents: ConformanceEvents = {
  deviceRemoved: (event, id) => event.name === 'DEVICE_DELETED' && event.data['device'] === id,
  guestPanicked: (event) => event.name === 'GUEST_PANICKED',
  deviceEjected: (event, id) => event.name === DEVICE_EJECTED && event.data['id'] === id,
};

export interface ResolvedConformanceOptions extends ConformanceOptions {
  events: ConformanceEvents | false;
  scsi: boolean;
  timeouts: Required<Omit<ConformanceTimeouts, 'removalMs'>> & Pick<ConformanceTimeouts, 'removalMs'>;
}

export function resolveOptions(options: ConformanceOptions): ResolvedConformanceOptions {
  const timeouts = options.timeouts ?? {};
  return {
    ...options,
    events: options.events ?? qemuEvents,
    scsi: options.scsi ?? true,
    timeouts: {
      testMs: timeouts.testMs ?? 120_000,
      operationMs: timeouts.operationMs ?? 30_000,
      guestMs: timeouts.guestMs ?? 20_000,
      ...(timeouts.removalMs === undefined ? {} : { removalMs: timeouts.removalMs }),
      settleMs: timeouts.settleMs ?? 200,
    },
  };
}
