// The backend-neutral contract a container runtime codes against. QEMU implements it today; a
// Cloud Hypervisor or Firecracker backend would implement the same interface (see ARCHITECTURE.md).
import type { HotplugDeviceInput, SandboxConfig, SandboxConfigInput } from './config/index.ts';
import type { OperationOptions } from '../util/deadline.ts';
import type { GuestPciPath, ScsiAddress } from './pci-path.ts';
import type { EventOf } from './events.ts';
import type { StatsOptions, VmStats } from './stats.ts';
import type { CreateOptions, TemplateInfo } from './templates.ts';

export type { EventOf, KnownEventData, KnownEventName } from './events.ts';
export type { GuestPciPath, ScsiAddress } from './pci-path.ts';
export type {
  BalloonGuestStats,
  BalloonStats,
  DiskStats,
  GuestMemoryStats,
  NicStats,
  ProcessMemoryStats,
  StatsOptions,
  VcpuStats,
  VmStats,
} from './stats.ts';
export type { CreateOptions, TemplateInfo } from './templates.ts';

/**
 * new → created → starting → running ⇄ paused → stopping → stopped.
 * `new` is an instance before createVM. A failed start ends in stopped; stopVM is allowed from every
 * state and is idempotent. An instance is single-use: once stopped, only a new instance runs a VM.
 */
export type VmState = 'new' | 'created' | 'starting' | 'running' | 'paused' | 'stopping' | 'stopped';

/** Options of `startVM`. */
export interface StartOptions extends OperationOptions {
  /** Leave the vCPUs stopped once the hypervisor is up (state `paused`); resumeVM runs them. */
  paused?: boolean;
  /**
   * The device id of a `channel` in the config: startVM resolves only once the guest has opened
   * that virtio-serial port (its agent is up), within the start's own deadline. When it does not,
   * the start fails like any other (the VM is stopped and cleaned up) with GuestNotReadyError
   * naming the channel. Not with `paused` (a paused guest opens nothing).
   */
  waitForChannel?: string;
}

/**
 * stopVM never fails for lack of time: `timeoutMs` and `signal` bound the polite steps (powerdown,
 * quit), and past them the hypervisor is killed.
 */
export interface StopOptions extends OperationOptions {
  /**
   * Ask the guest to power off (ACPI) and wait up to this long before forcing the hypervisor to
   * quit. 0 skips the graceful step. Default 0: a sandbox's guest holds no state worth a clean
   * shutdown, and Kata kills QEMU outright for the same reason.
   */
  gracefulTimeoutMs?: number;
}

/** How the hypervisor process ended. */
export interface VmExitInfo {
  /** Whether stopVM asked for it; false means the process died on its own (or was killed). */
  expected: boolean;
  exitCode: number | undefined;
  signal: string | undefined;
  /** The last lines the hypervisor wrote to stderr. */
  stderrTail: string;
  /**
   * Why the VM ended, when known: the hypervisor's shutdown cause ('guest-reset', 'guest-shutdown',
   * 'host-qmp-quit', 'host-signal', … as QEMU's SHUTDOWN event names it), 'guest-panic' once the
   * guest panicked, or what a helper daemon's death was (e.g. 'virtiofsd for fs0 exited with status 1').
   */
  reason?: string;
}

/**
 * The user and groups the hypervisor process runs as. A runtime gives this uid the taps and files
 * the VM may use (e.g. `ip tuntap add … user <uid>`); no other VM shares it.
 */
export interface VmIdentity {
  uid: number;
  gid: number;
  groups: number[];
}

/** Devices that can be plugged into a running VM. CPUs and memory change through the resize calls. */
export type HotplugDevice = HotplugDeviceInput;

/** What `hotplugAddDevice` plugged, and where the guest finds it. */
export interface HotplugResult {
  id: string;
  type: HotplugDevice['type'];
  /** Where the device went: a PCIe root port id, or the SCSI controller for scsi disks. */
  bus: string;
  /**
   * Where the guest finds it: the PCI path of its function, in Kata's form and as sysfs names it.
   * A SCSI disk reports its controller's path (and its own address in `scsi`).
   */
  pci: GuestPciPath;
  /** A SCSI disk's address on the controller; absent for other devices. */
  scsi?: ScsiAddress;
}

/**
 * Memory sizes as the hypervisor has plugged them, not as the guest uses them: the guest onlines
 * hot-plugged memory on its own time (MemTotal follows), and only if it is set up to (a kernel with
 * `memhp_default_state=online_movable`, or a udev rule or agent that onlines new memory blocks).
 */
export interface MemoryResizeResult {
  previousMiB: number;
  currentMiB: number;
}

/** The number of vCPUs before and after `resizeVCPUs`. */
export interface VcpuResizeResult {
  previous: number;
  current: number;
}

/** vCPU index → host thread id, for pinning. */
export type VcpuThreadIds = Map<number, number>;

/** What a backend can do with a VM of the current config; calls it cannot serve reject with `UNSUPPORTED`. */
export interface HypervisorCapabilities {
  blockHotplug: boolean;
  netHotplug: boolean;
  vfioHotplug: boolean;
  /** The machine can hot-add vCPUs (false on aarch64's virt: resizeVCPUs is then UNSUPPORTED). */
  cpuHotplug: boolean;
  cpuHotUnplug: boolean;
  /**
   * Present when vCPU hot-adds are capped over the VM's life (under tcg on QEMU >= 10: a removed
   * vCPU never returns its TCG context). `limit` is cpus.max - cpus.boot, `used` the adds so far,
   * removed vCPUs included; resizeVCPUs refuses to go past it with RESOURCE_LIMIT.
   */
  cpuHotAddBudget?: { limit: number; used: number };
  /** This VM's memory can grow (its config has memory.hotplug). */
  memoryHotplug: boolean;
  memoryHotUnplug: boolean;
  /** The machine offers memory.hotplug "dimm" (false on aarch64's virt without ACPI). */
  dimmHotplug: boolean;
  /** virtio-fs / 9p file sharing with the host. */
  fsSharing: boolean;
  /**
   * virtio-fs shares can be hot-plugged (hotplugAddDevice with `type: 'fs'`): the VM's guest memory
   * is shared (memory.backing shared, file or hugepages), so a vhost-user daemon can map it. A clone
   * of a template has it with memory.backing shared (a RAM copy of its own, see CreateOptions).
   */
  fsHotplug: boolean;
  pause: boolean;
  /** A new process can take over the running VM from its runtime directory. */
  reattach: boolean;
  /** createVM's templateDir and fromTemplate, and saveTemplate (see CreateOptions). */
  templates: boolean;
  /**
   * How long a device or vCPU removal waits for the guest to let go before DeviceRemovalTimeoutError:
   * the backend's `deviceRemovalTimeoutMs` option, else the machine's default (10 s on q35, 20 s on
   * virt, whose native PCIe hotplug lets go about 6 s after the request). Operation timeouts of
   * removals should exceed it.
   */
  deviceRemovalTimeoutMs: number;
}

/** One device the backend currently knows to be plugged, cold or hot. */
export interface PluggedDevice {
  id: string;
  type: string;
  hotplugged: boolean;
  /** The root port or SCSI bus of a hot-added device. */
  bus?: string;
  /**
   * Where the guest finds it: the PCI path of its function (cold devices too). A SCSI disk reports
   * its controller's path, a channel the virtio-serial controller's.
   */
  pci: GuestPciPath;
  /** A SCSI disk's address on the controller, when the backend knows it; absent for other devices. */
  scsi?: ScsiAddress;
  /** A channel's host side: the unix socket to connect to (e.g. the guest agent's); channels only. */
  socketPath?: string;
}

/**
 * The backend-neutral contract a container runtime codes against: one instance drives one VM, once
 * (see `VmState`). `QemuHypervisor` and `MockHypervisor` implement it; `createHypervisor` picks one by name.
 */
export interface Hypervisor {
  /** Backend name, e.g. 'qemu' or 'mock'. */
  readonly kind: string;
  /** The VM id (the config's id, generated when absent); undefined before createVM. */
  readonly id: string | undefined;
/** Where the VM is in its lifecycle (see `VmState`). */
  readonly state: VmState;
  /** The validated config, with defaults filled; undefined before createVM. */
  readonly config: SandboxConfig | undefined;
  /** Set once the hypervisor process has ended, expectedly or not. */
  readonly exitInfo: VmExitInfo | undefined;
  /** Who the hypervisor runs as, known from createVM on; undefined when it runs as this process's user. */
  readonly identity: VmIdentity | undefined;

  /**
   * Validates the config and prepares the VM; nothing starts. It may take host resources (the QEMU
   * backend makes the runtime directory and leases a uid): from here on, stopVM() releases them even
   * if the VM never starts, as does leaving an `await using` scope. With `templateDir` the VM is
   * booted to become a template; with `fromTemplate` startVM restores the template's guest
   * (TemplateError when the template cannot be used, before anything is made).
   */
  createVM(config: SandboxConfigInput, options?: CreateOptions): Promise<void>;
  /** Launches the hypervisor and runs the guest (or leaves it paused). */
  startVM(options?: StartOptions): Promise<void>;
  /** Idempotent; pending operations reject with VmStoppingError. Cleans up everything. */
  stopVM(options?: StopOptions): Promise<void>;
/** Stops the guest's vCPUs (state `paused`); the hypervisor keeps running. */
  pauseVM(options?: OperationOptions): Promise<void>;
/** Runs the vCPUs of a paused VM again. */
  resumeVM(options?: OperationOptions): Promise<void>;
  /**
   * Turns a VM created with `templateDir` into a template there: pauses the guest, saves its device
   * state, stops the VM (state `stopped`) and seals the directory (root's, read-only to everyone
   * else). On failure the VM is stopped and the directory removed.
   */
  saveTemplate(options?: OperationOptions): Promise<TemplateInfo>;

/**
 * Plugs a disk, NIC, VFIO device or virtio-fs share into the running VM, on a free reserved root
 * port; rolls back what it did when a step fails (`HotplugError` names the step). A share with a
 * `sharedDir` gets a virtiofsd helper of its own (listed by getPids, stopped on its removal).
 */
  hotplugAddDevice(device: HotplugDevice, options?: OperationOptions): Promise<HotplugResult>;
/**
 * Asks the guest to let go of a hot-plugged device and deletes its backend once it has;
 * `DeviceRemovalTimeoutError` when the guest does not in time (calling again finishes the job).
 */
  hotplugRemoveDevice(id: string, options?: OperationOptions): Promise<void>;
  /**
   * Sets guest memory to `targetMiB` (aligned up to what the guest needs); returns the sizes QEMU has
   * plugged (see MemoryResizeResult). virtio-mem needs the guest's cooperation: its driver must be
   * loaded (the guest has booted: `startVM({ waitForChannel })`) and must online what it adds, as
   * Linux plugs no more once 1 GiB of it waits offline; otherwise the resize stops short with
   * ResizeIncompleteError (`reachedMiB` says where).
   */
  resizeMemory(targetMiB: number, options?: OperationOptions): Promise<MemoryResizeResult>;
  /** Sets the number of vCPUs; returns the previous and the current count. */
  resizeVCPUs(count: number, options?: OperationOptions): Promise<VcpuResizeResult>;

  /** Hypervisor pid first, helper daemons after; empty when nothing runs. */
  getPids(): number[];
/** The host thread id of each vCPU, for pinning. */
  getThreadIds(options?: OperationOptions): Promise<VcpuThreadIds>;
  /**
   * What the sandbox costs and what its devices moved, read now (see VmStats): vCPU time, the
   * processes' memory, guest memory, disk and NIC counters, uptime. While running or paused.
   */
  stats(options?: StatsOptions): Promise<VmStats>;
  /** Resolves when healthy; rejects with VmUnhealthyError (panicked guest, internal error, gone). */
  check(options?: OperationOptions): Promise<void>;
/** What this backend can do with the VM's config. */
  capabilities(): HypervisorCapabilities;
/** Every device plugged now, cold and hot, with where the guest finds it. */
  devices(): PluggedDevice[];
  /** Called once when the hypervisor process ends without stopVM having asked for it. */
  onExit(listener: (info: VmExitInfo) => void): () => void;
  /**
   * Hypervisor events (e.g. 'GUEST_PANICKED', 'DEVICE_DELETED') as the backend sees them, and the
   * backend's own DEVICE_EJECTED (see DeviceEjectedData).
   */
  onEvent(listener: (event: HypervisorEvent) => void): () => void;
  /**
   * The next event named `name` (that `predicate` accepts), while the VM runs or is paused. Only
   * events from the call on count. Known events (KnownEventData) come typed, their data checked.
   * Bounded like every operation (default timeout included); rejects with VmExitedError or
   * VmStoppingError when the VM ends first.
   */
  waitForEvent<N extends string>(name: N, predicate?: (event: EventOf<N>) => boolean, options?: OperationOptions): Promise<EventOf<N>>;
  /**
   * stopVM(): `await using vm = createHypervisor('qemu')` stops the VM and releases what createVM
   * took when the scope ends, however it ends. Harmless on an instance never created or already
   * stopped.
   */
  [Symbol.asyncDispose](): Promise<void>;
}

/** An event from the hypervisor (QEMU's QMP event name and data) or from the backend itself. */
export interface HypervisorEvent {
  name: string;
  data: Record<string, unknown>;
}

/**
 * The name of the event that says the guest gave up a hot-plugged device nobody asked it to remove
 * (e.g. a guest that ejects a device hot-plugged while it was still booting). When it is emitted the
 * books are already settled: the device has left devices(), its slot is free for the next hotplug,
 * its backend is gone from the hypervisor and hotplugRemoveDevice(id) rejects with DeviceNotFoundError.
 * A removal the caller asked for is never reported this way.
 */
export const DEVICE_EJECTED = 'DEVICE_EJECTED';

/** `data` of a DEVICE_EJECTED event. */
export interface DeviceEjectedData extends Record<string, unknown> {
  /** The id the device was hot-plugged with. */
  id: string;
  type: HotplugDevice['type'];
  /** The slot it had, now free: a root port id, or the SCSI controller's bus. */
  bus: string;
}
