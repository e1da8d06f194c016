// Failures a test arms on a MockHypervisor, so that a runtime's error paths can be exercised without
// a misbehaving hypervisor at hand. Each armed fault fires once, on the first call it matches.

/** Operations that can be made to hang until their deadline (stopVM always finishes). */
export type MockOperation =
  | 'startVM'
  | 'pauseVM'
  | 'resumeVM'
  | 'saveTemplate'
  | 'hotplugAddDevice'
  | 'hotplugRemoveDevice'
  | 'resizeMemory'
  | 'resizeVCPUs'
  | 'getThreadIds'
  | 'stats'
  | 'check';

/** The hypervisor exits while starting, the way QEMU does when it rejects its command line. */
export interface MockStartFailure {
  /** Default 1. */
  exitCode?: number;
  /** Set to report a death by signal instead of an exit status. */
  signal?: string;
  /** What it wrote to stderr. Default: a line saying the failure was injected. */
  stderr?: string;
}

/** A hotplug step fails, the way QEMU refuses a QMP command; what was done before it is undone. */
export interface MockHotplugFailure {
  /** Only a hotplug of this device id (default: the next hotplug of any device). */
  deviceId?: string;
  /**
   * The step that fails: for QEMU-like steps, 'blockdev-add', 'netdev_add', 'chardev-add',
   * 'device_add', 'device_add virtio-scsi-pci' (the first SCSI disk), 'virtiofsd' (a share's daemon
   * does not start: HelperError), and for DIMMs 'object-add'. Default: the
   * device's last step, so that the earlier ones are rolled back. A step the device does not go
   * through does not match.
   */
  step?: string;
  message?: string;
}

/** The guest ignores one removal request (a device or vCPU it keeps using). */
export interface MockRemovalTimeout {
  /** A device id, or a vCPU as 'vcpu<N>'. Default: the next removal of anything. */
  deviceId?: string;
}

/** Failures armed for the mock's coming calls; each fires once, on the first call it matches. */
export class MockFaults {
  #starts: MockStartFailure[] = [];
  #hotplugs: MockHotplugFailure[] = [];
  #removals: MockRemovalTimeout[] = [];
  #hangs: MockOperation[] = [];

  /** The next startVM fails: the hypervisor exits during start (VmStartError). */
  failNextStart(failure: MockStartFailure = {}): this {
    this.#starts.push(failure);
    return this;
  }

  /** The next matching hotplug fails at a step (HotplugError); nothing stays plugged. */
  failNextHotplug(failure: MockHotplugFailure = {}): this {
    this.#hotplugs.push(failure);
    return this;
  }

  /**
   * The guest does not release the next matching device or vCPU: that removal waits out the
   * backend's removal timeout and rejects with DeviceRemovalTimeoutError; the device stays plugged
   * and a later removal of it succeeds.
   */
  timeOutNextRemoval(failure: MockRemovalTimeout = {}): this {
    this.#removals.push(failure);
    return this;
  }

  /** The next call of `operation` hangs until its deadline (timeout, abort or stopVM). */
  hangNext(operation: MockOperation): this {
    this.#hangs.push(operation);
    return this;
  }

  /** How many armed faults have not fired yet. */
  get armed(): number {
    return this.#starts.length + this.#hotplugs.length + this.#removals.length + this.#hangs.length;
  }

/** Disarms every fault not yet fired. */
  clear(): void {
    this.#starts = [];
    this.#hotplugs = [];
    this.#removals = [];
    this.#hangs = [];
  }

  // What the mock calls to fire a fault; each removes what it fires.

/** The armed start failure, removed. @internal */
  takeStartFailure(): MockStartFailure | undefined {
    return this.#starts.shift();
  }

  /** The failing step of a hotplug of `deviceId` that goes through `steps`, if one is armed. */
  takeHotplugFailure(deviceId: string, steps: readonly string[]): { step: string; message: string } | undefined {
    const index = this.#hotplugs.findIndex(
      (f) => (f.deviceId === undefined || f.deviceId === deviceId) && (f.step === undefined || steps.includes(f.step)),
    );
    const failure = this.#hotplugs[index];
    if (!failure) return undefined;
    this.#hotplugs.splice(index, 1);
    return { step: failure.step ?? (steps.at(-1) as string), message: failure.message ?? 'injected failure' };
  }

/** Whether a removal timeout is armed for `id`, removing it. @internal */
  takeRemovalTimeout(id: string): boolean {
    const index = this.#removals.findIndex((f) => f.deviceId === undefined || f.deviceId === id);
    if (index < 0) return false;
    this.#removals.splice(index, 1);
    return true;
  }

/** Whether a hang is armed for `operation`, removing it. @internal */
  takeHang(operation: MockOperation): boolean {
    const index = this.#hangs.indexOf(operation);
    if (index < 0) return false;
    this.#hangs.splice(index, 1);
    return true;
  }
}
