// The simulated VM behind a MockHypervisor: one hypervisor process, its run state, the guest, and
// what has been plugged. The MockHypervisor drives it as QemuHypervisor drives QEMU over QMP; a
// detached machine can be taken over by another MockHypervisor, as a running QEMU can.
import { FreedRootPorts, vcpuRules, type VcpuRules } from '../hypervisor/resources.ts';
import type { QemuVersion } from '../hypervisor/version-rules.ts';
import type { HotplugDeviceConfig, SandboxConfig } from '../hypervisor/config/index.ts';
import type { HypervisorEvent, ScsiAddress } from '../hypervisor/types.ts';
import { MockGuest } from './guest.ts';
import { MockProcess, type MockExit } from './process.ts';
import { MockDeviceCounters } from './stats.ts';

/** QEMU's name for the SCSI controller the backend adds, and the bus its disks sit on. */
export const SCSI_CONTROLLER_ID = 'scsi0';
export const SCSI_BUS = `${SCSI_CONTROLLER_ID}.0`;
export const VIRTIO_MEM_ID = 'vmem0';

/** QEMU's run states the backend can see (query-status). */
export type MockRunStatus = 'prelaunch' | 'running' | 'paused' | 'guest-panicked' | 'shutdown';

/** A removable thing (device or vCPU) and how far its removal has come. */
export interface Unpluggable {
  /** The guest was asked to let go, and will as soon as it can. */
  guestAsked: boolean;
  /** The guest let go: the frontend is gone; the backend goes when a removal call sees this. */
  released: boolean;
}

export interface MockHotDevice extends Unpluggable {
  id: string;
  device: HotplugDeviceConfig;
  /** The root port (rpN) or the SCSI bus. */
  bus: string;
  /** A SCSI disk's address on the controller. */
  scsi?: ScsiAddress;
  /** A removal was asked for (the guest's release of it ends that removal, even after a timeout). */
  removalRequested?: boolean;
  /** The guest ejected it on its own: gone for the caller, its backend about to go (see ejections.ts). */
  ejected?: boolean;
}

export interface MockHotCpu extends Unpluggable {
  coreId: number;
}

/** What the simulated guest has, as a guest agent would report it. */
export interface MockGuestView {
  /** Its vCPUs run (not paused, not panicked). */
  running: boolean;
  panicked: boolean;
  /** Ids of the block devices it has, cold and hot. */
  disks: string[];
  /** Ids of the network devices it has. */
  nics: string[];
  onlineCpus: number;
  /** Memory it has plugged (virtio-mem follows a request only once the guest ran). */
  memoryMiB: number;
}

export interface MockHotplugState {
  devices: MockHotDevice[];
  /** The backend's own hot-added devices (the SCSI controller) and their port. */
  infrastructure: { id: string; bus: string }[];
  /** Hot-added vCPUs, oldest first. */
  cpus: MockHotCpu[];
  /** virtio-mem: the size requested from the device beyond boot memory … */
  virtioMemMiB: number;
  /** … and what the guest has plugged so far. */
  virtioMemPluggedMiB: number;
  /** DIMM sizes, in slot order. */
  dimms: number[];
  /** A vCPU has been removed (which, under tcg below QEMU 10, rules out further device changes, as on QEMU). */
  vcpuRemoved: boolean;
  /** vCPU hot-adds over the machine's life, removed ones included (the tcg add budget). */
  vcpuAdds: number;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => {};
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

export class MockMachine {
  readonly config: SandboxConfig;
  readonly process = new MockProcess();
  readonly guest: MockGuest;
  /** The disk and NIC counters stats() reports. */
  readonly counters = new MockDeviceCounters();
  readonly state: MockHotplugState = { devices: [], infrastructure: [], cpus: [], virtioMemMiB: 0, virtioMemPluggedMiB: 0, dimms: [], vcpuRemoved: false, vcpuAdds: 0 };
  /** When each root port was last given up, for the order in which free ports are handed out. */
  readonly freedPorts = new FreedRootPorts();
  /** Set while the first SCSI disk adds the controller, so that concurrent disks wait for it. */
  scsiControllerReady: Promise<void> | undefined;
  /** Stand-ins for the helper daemons (virtiofsd) of shares with a sharedDir, by device id: a cold share's from the start, a hot-plugged one's from its hot-plug to its removal. */
  readonly helpers = new Map<string, MockProcess>();
  #status: MockRunStatus = 'prelaunch';
  /** Whether the hypervisor saw the guest panic (it needs a pvpanic device for that). */
  #panicSeen = false;
  /** The reason of the SHUTDOWN the hypervisor reported, once it did. */
  #shutdownReason: string | undefined;
  /** The channels the guest's agents open when it first runs; undefined: every channel. */
  readonly #opensChannels: readonly string[] | undefined;
  #booted = false;
  #sink: ((event: HypervisorEvent) => void) | undefined;
  #owed: HypervisorEvent[] = [];
  #changed = deferred();
  /** Aborted when the process ends: whatever the guest was about to do will not happen. */
  readonly #alive = new AbortController();

  /** What may be done with vCPUs, for the QEMU version the mock pretends (hypervisor/version-rules.ts). */
  readonly vcpuRules: VcpuRules;

  constructor(config: SandboxConfig, guestReactionMs: number, opensChannels?: readonly string[], qemuVersion?: QemuVersion) {
    this.config = config;
    this.vcpuRules = vcpuRules(config, qemuVersion);
    this.#opensChannels = opensChannels;
    this.guest = new MockGuest(guestReactionMs);
    for (const device of config.devices) if (isManagedShare(device)) this.startHelper(device.id);
    void this.process.exited.then(() => {
      for (const id of [...this.helpers.keys()]) this.stopHelper(id);
      this.#status = 'shutdown';
      this.guest.setVcpusRunning(false);
      this.#alive.abort(new Error('the hypervisor process ended'));
      this.#notify();
    });
  }

  /** A share's helper daemon starts (its fake pid is listed after the hypervisor's). */
  startHelper(deviceId: string): void {
    this.helpers.set(deviceId, new MockProcess());
  }

  /** A share's helper daemon is stopped (its share removed, or its hot-plug rolled back). */
  stopHelper(deviceId: string): void {
    this.helpers.get(deviceId)?.end({ exitCode: 0, signal: undefined });
    this.helpers.delete(deviceId);
  }

  get status(): MockRunStatus {
    return this.#status;
  }

  get panicSeen(): boolean {
    return this.#panicSeen;
  }

  /** Why the VM ended, as the QEMU backend reports it: a panic first, else the SHUTDOWN reason. */
  get endReason(): string | undefined {
    return this.#panicSeen ? 'guest-panic' : this.#shutdownReason;
  }

  /** Routes this machine's events to one controller (QEMU serves one QMP client). */
  connect(sink: (event: HypervisorEvent) => void): void {
    this.#sink = sink;
    // What the backend owed a controller that was gone is told to the next, once it listens (as
    // the QEMU backend's attach reports ejections it finds settled then).
    const owed = this.#owed.splice(0);
    if (owed.length > 0) setImmediate(() => owed.forEach((event) => this.#sink?.(event)));
  }

  disconnect(): void {
    this.#sink = undefined;
  }

  emit(name: string, data: Record<string, unknown> = {}): void {
    if (name === 'SHUTDOWN' && typeof data['reason'] === 'string') this.#shutdownReason = data['reason'];
    this.#sink?.({ name, data });
  }

  /** An event of the backend's own: kept for the next controller when none listens. */
  report(name: string, data: Record<string, unknown>): void {
    if (this.#sink) this.#sink({ name, data });
    else this.#owed.push({ name, data });
  }

  /** Resolves at the next change of what the guest has done (a release, a memory plug, an exit). */
  nextChange(): Promise<void> {
    return this.#changed.promise;
  }

  #notify(): void {
    const changed = this.#changed;
    this.#changed = deferred();
    changed.resolve();
  }

  // ------------------------------------------------------------ run state (QMP cont / stop / quit)

  cont(): void {
    if (this.process.hasExited) return;
    this.#status = 'running';
    this.guest.setVcpusRunning(true);
    this.emit('RESUME');
    if (!this.#booted) this.#boot();
  }

  /** The guest's first run: its agents open their virtio-serial ports, as QEMU reports it. */
  #boot(): void {
    this.#booted = true;
    const opens = this.#opensChannels;
    const channels = this.config.devices.filter((d) => d.type === 'channel' && (opens === undefined || opens.includes(d.id)));
    if (channels.length === 0) return;
    this.#guestActs(() => {
      for (const d of channels) this.emit('VSERPORT_CHANGE', { id: d.id, open: true });
    });
  }

  /**
   * The guest resets or powers itself off. QEMU runs with -no-reboot, so either way it reports the
   * SHUTDOWN and exits with status 0.
   */
  guestEnds(reason: 'guest-reset' | 'guest-shutdown'): void {
    if (this.process.hasExited) return;
    this.emit('SHUTDOWN', { guest: true, reason });
    this.process.end({ exitCode: 0, signal: undefined });
  }

  stop(): void {
    if (this.process.hasExited) return;
    // A panicked guest keeps its status: QEMU's stop does not leave guest-panicked.
    if (this.#status !== 'guest-panicked') this.#status = 'paused';
    this.guest.setVcpusRunning(false);
    this.emit('STOP');
  }

  /** QMP quit: QEMU reports the shutdown and exits with status 0. */
  quit(): MockExit {
    if (!this.process.hasExited) this.emit('SHUTDOWN', { guest: false, reason: 'host-qmp-quit' });
    return this.process.end({ exitCode: 0, signal: undefined });
  }

  /** ACPI power button: a guest that runs powers off, and QEMU exits (-no-reboot). */
  powerdown(): void {
    if (this.process.hasExited) return;
    this.emit('POWERDOWN');
    this.#guestActs(() => {
      this.emit('SHUTDOWN', { guest: true, reason: 'guest-shutdown' });
      this.process.end({ exitCode: 0, signal: undefined });
    });
  }

  /**
   * The guest kernel panics. With a pvpanic device QEMU hears of it, pauses the VM (-action
   * panic=pause) and reports it; without one the guest just stops responding. Returns whether the
   * hypervisor noticed.
   */
  panic(): boolean {
    if (this.process.hasExited || this.guest.panicked) return this.#panicSeen;
    this.guest.panic();
    if (!this.config.devices.some((d) => d.type === 'pvpanic')) return false;
    this.#panicSeen = true;
    this.#status = 'guest-panicked';
    this.guest.setVcpusRunning(false);
    this.emit('GUEST_PANICKED', { action: 'pause' });
    this.emit('STOP');
    return true;
  }

  // ------------------------------------------------------------ what the guest does when asked

  /** device_del: the guest lets go of the device, and QEMU reports each deleted part. */
  askGuestToRelease(record: MockHotDevice): void {
    this.#ask(record, () => this.reportDeleted(record));
  }

  /** QEMU reports each deleted part of a device. */
  reportDeleted(record: MockHotDevice | { id: string; bus: string; device?: undefined }): void {
    this.freedPorts.freed(record.bus);
    const path = `/machine/peripheral/${record.id}`;
    // virtio-pci devices report their virtio backend child first, as QEMU 7.2 does.
    const device = record.device;
    const virtioPci = device?.type === 'net' || (device?.type === 'block' && device.driver === 'virtio-blk');
    if (virtioPci) this.emit('DEVICE_DELETED', { path: `${path}/virtio-backend` });
    this.emit('DEVICE_DELETED', { device: record.id, path });
  }

  /** vCPU unplug: QEMU 7.2 reports it only as the removal of the CPU's lapic child, between ACPI status events. */
  askGuestToOfflineCpu(cpu: MockHotCpu): void {
    const id = `vcpu${cpu.coreId}`;
    const slot = { slot: String(cpu.coreId), 'slot-type': 'CPU' };
    this.#ask(cpu, () => {
      this.emit('ACPI_DEVICE_OST', { info: { device: id, source: 3, status: 132, ...slot } });
      this.emit('DEVICE_DELETED', { path: `/machine/peripheral/${id}/lapic` });
      this.emit('ACPI_DEVICE_OST', { info: { source: 3, status: 0, ...slot } });
    });
  }

  /** A hot-added vCPU: the guest acknowledges it when it next runs. */
  announceCpu(cpu: MockHotCpu): void {
    const id = `vcpu${cpu.coreId}`;
    this.#guestActs(() => this.emit('ACPI_DEVICE_OST', { info: { device: id, source: 1, status: 0, slot: String(cpu.coreId), 'slot-type': 'CPU' } }));
  }

  /** virtio-mem: the guest plugs or unplugs blocks until it has what was requested. */
  askGuestToPlugMemory(): void {
    this.#guestActs(() => {
      const { state } = this;
      if (state.virtioMemPluggedMiB === state.virtioMemMiB) return;
      state.virtioMemPluggedMiB = state.virtioMemMiB;
      const size = state.virtioMemPluggedMiB * 1024 * 1024;
      this.emit('MEMORY_DEVICE_SIZE_CHANGE', { size, 'qom-path': `/machine/peripheral/${VIRTIO_MEM_ID}`, id: VIRTIO_MEM_ID });
    });
  }

  #ask(target: Unpluggable, onRelease: () => void): void {
    if (target.guestAsked || target.released) return;
    target.guestAsked = true;
    this.#guestActs(() => {
      // It may have gone meanwhile (the guest ejected it on its own).
      if (target.released) return;
      target.released = true;
      onRelease();
    });
  }

  #guestActs(action: () => void): void {
    void this.whenGuestActs(action);
  }

  /** Runs `action` when the guest gets to it; resolves to false if the process ended first. */
  async whenGuestActs(action: () => void): Promise<boolean> {
    try {
      await this.guest.act(this.#alive.signal, () => {
        action();
        this.#notify();
      });
      return true;
    } catch {
      // The process ended first: the guest never got to it.
      return false;
    }
  }

  // ------------------------------------------------------------ sizes, and what the guest sees

  /** The memory the backend accounts for: boot plus what was requested or plugged as DIMMs. */
  memoryMiB(): number {
    const { bootMiB, hotplug } = this.config.memory;
    if (hotplug === 'virtio-mem') return bootMiB + this.state.virtioMemMiB;
    return bootMiB + this.state.dimms.reduce((sum, size) => sum + size, 0);
  }

  vcpuCount(): number {
    return this.config.cpus.boot + this.state.cpus.length;
  }

  guestView(): MockGuestView {
    const { config, state } = this;
    const present = state.devices.filter((d) => !d.released && !d.ejected);
    const cold = config.devices;
    const dimmMiB = state.dimms.reduce((sum, size) => sum + size, 0);
    return {
      running: this.guest.responsive,
      panicked: this.guest.panicked,
      disks: [
        ...(config.boot.image ? ['rootfs'] : []),
        ...cold.filter((d) => d.type === 'block').map((d) => d.id),
        ...present.filter((d) => d.device.type === 'block').map((d) => d.id),
      ],
      nics: [...cold.filter((d) => d.type === 'net').map((d) => d.id), ...present.filter((d) => d.device.type === 'net').map((d) => d.id)],
      onlineCpus: config.cpus.boot + state.cpus.filter((c) => !c.released).length,
      memoryMiB: config.memory.bootMiB + (config.memory.hotplug === 'virtio-mem' ? state.virtioMemPluggedMiB : dimmMiB),
    };
  }
}

/** A virtio-fs share the backend runs virtiofsd for. */
export function isManagedShare(device: { type: string; driver?: string; sharedDir?: string | undefined }): boolean {
  return device.type === 'fs' && device.driver === 'virtio-fs' && device.sharedDir !== undefined;
}
