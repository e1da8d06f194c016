// The sandbox config as a caller writes it (…Input) and as parsing returns it, with defaults filled
// (no suffix): written out by hand so that each field's meaning, default and rules reach the
// declarations a user's editor shows. test/unit/config/documented-types.test.ts proves at compile
// time that each type is exactly what the zod schema (schema.ts) accepts or returns: change one
// without the other and it does not compile.
import type { DeviceConfig, DeviceConfigInput } from './devices.ts';

/** The machine QEMU emulates. */
export interface MachineConfigInput {
  /**
   * The guest architecture: `x86_64` or `aarch64`. It decides the machine, the console, the QEMU
   * binary and what can be hot-plugged (aarch64's virt: no vCPU or DIMM hotplug). Default `x86_64`.
   */
  arch?: 'x86_64' | 'aarch64' | undefined;
  /** The architecture's machine: `q35` on x86_64, `virt` on aarch64 (any other is refused). Default: that one. */
  type?: 'q35' | 'virt' | undefined;
  /**
   * `kvm` in production; `tcg` (software emulation) where KVM is not usable. Default `kvm`: under
   * it, `/dev/kvm` must be usable by QEMU's user (with `hardening.user: 'auto'`, the kvm group).
   */
  accel?: 'kvm' | 'tcg' | undefined;
  /**
   * QEMU's `-cpu` model, e.g. `host`, `max` or `Skylake-Server` (letters, digits, `_.+-`; not
   * `help`). Default: `host` under kvm, `max` under tcg.
   */
  cpuModel?: string | undefined;
}

/** The machine, with its defaults filled. */
export interface MachineConfig {
  arch: 'x86_64' | 'aarch64';
  type: 'q35' | 'virt';
  accel: 'kvm' | 'tcg';
  /** `host` under kvm, `max` under tcg, unless the config named one. */
  cpuModel: string;
}

/** What the guest boots: a kernel, with an initramfs or a root filesystem image (not both). */
export interface BootConfigInput {
  /** The guest kernel: an absolute path QEMU's user can read. */
  kernel: string;
  /** An initramfs (absolute path). */
  initrd?: string | undefined;
  /**
   * Or a root filesystem image (absolute path), attached read-only as the first virtio-blk disk
   * (`/dev/vda`, device id `rootfs`); `root=/dev/vda ro` is then added to the kernel command line
   * unless `kernelParams` has a `root=`.
   */
  image?: string | undefined;
  /**
   * The kernel command line, one parameter per entry (printable ASCII; spaces only inside a
   * double-quoted value), passed as given: the library adds nothing else to it. Together under
   * 1984 bytes. Default none. Hot-plugged memory must be onlined by the guest:
   * `memhp_default_state=online_movable` here, or a udev rule or agent of the guest's own.
   */
  kernelParams?: string[] | undefined;
}

/** The boot section, parsed. */
export interface BootConfig {
  kernel: string;
  initrd?: string | undefined;
  image?: string | undefined;
  kernelParams: string[];
}

/** vCPUs: how many at boot and how many resizeVCPUs may reach (1 to 255). */
export interface CpusConfigInput {
  /** vCPUs at boot. Default 1. */
  boot?: number | undefined;
  /** The most vCPUs resizeVCPUs may reach; not below `boot`. Default: `boot`. */
  max?: number | undefined;
}

/** The vCPUs, parsed: `max` is filled from `boot` when absent. */
export interface CpusConfig {
  boot: number;
  /** `boot` unless the config named more. */
  max: number;
}

/** Where guest memory comes from. */
export type MemoryBackingInput =
  /** Private anonymous memory (the default). */
  | { type: 'anonymous' }
  /** memfd, shared with other processes: what vhost-user and virtio-fs need. */
  | { type: 'shared' }
  /** A file in directory `path` (absolute), which QEMU creates and unlinks; shared. */
  | { type: 'file'; path: string }
  /** Huge pages from a hugetlbfs mount. `path` default `/dev/hugepages`. */
  | { type: 'hugepages'; path?: string | undefined };

/** Where guest RAM lives, parsed. */
export type MemoryBacking = { type: 'anonymous' } | { type: 'shared' } | { type: 'file'; path: string } | { type: 'hugepages'; path: string };

/** Guest memory, in MiB. */
export interface MemoryConfigInput {
  /** Memory at boot: at least 128 MiB, a multiple of 2 MiB. Default 2048. */
  bootMiB?: number | undefined;
  /**
   * The most memory resizeMemory may reach. Default: `bootMiB`. Larger than `bootMiB` only with a
   * `hotplug` other than `none` (and then it must be).
   */
  maxMiB?: number | undefined;
  /**
   * How memory changes while the VM runs: `virtio-mem` grows and shrinks (maxMiB a multiple of
   * 2 MiB); `dimm` only grows, in DIMMs of whole 128 MiB guest memory blocks (maxMiB − bootMiB a
   * multiple of 128); `none` keeps the boot size. Default `none`. Either way the guest must online
   * what is plugged (see BootConfigInput.kernelParams): what resizeMemory reports is what QEMU plugged.
   */
  hotplug?: 'virtio-mem' | 'dimm' | 'none' | undefined;
  /** DIMM slots (dimm hotplug only): each growth step takes one. 1 to 256, default 8. */
  slots?: number | undefined;
  /** Default `{ type: 'anonymous' }`. virtio-fs needs `shared`, `file` or `hugepages`. */
  backing?: MemoryBackingInput | undefined;
  /** Allocate all guest memory up front. Default false. */
  prealloc?: boolean | undefined;
}

/** The memory section, parsed: `maxMiB` is filled from `bootMiB` when absent. */
export interface MemoryConfig {
  bootMiB: number;
  /** `bootMiB` unless the config named more. */
  maxMiB: number;
  hotplug: 'virtio-mem' | 'dimm' | 'none';
  slots: number;
  backing: MemoryBacking;
  prealloc: boolean;
}

/** The guest's serial console (ttyS0). */
export interface ConsoleConfigInput {
  /** A unix socket in the runtime directory to read and write it. Default true. */
  socket?: boolean | undefined;
  /**
   * Also (or only) append everything the console prints to this file (absolute path; the file, or
   * else its directory, must be writable by QEMU's user).
   */
  logFile?: string | undefined;
}

/** The console section, parsed. */
export interface ConsoleConfig {
  socket: boolean;
  logFile?: string | undefined;
}

/** What hot-plugging needs reserved at boot. */
export interface HotplugConfigInput {
  /** PCIe root ports reserved at boot, 0 to 24: each holds one hot-plugged PCI device. Default 2. */
  rootPorts?: number | undefined;
  /**
   * Allow removing vCPUs under tcg. QEMU 7.2's software emulation corrupts itself when a vCPU is
   * unplugged (the next device_add or device_del crashes it), so this is off, and once a vCPU has
   * been removed the VM refuses further device changes. KVM is not affected. Default false.
   */
  tcgVcpuUnplug?: boolean | undefined;
}

/** The hotplug section, parsed. */
export interface HotplugConfig {
  rootPorts: number;
  tcgVcpuUnplug: boolean;
}

/**
 * Who QEMU runs as. `'auto'`: as root, a uid and gid of the VM's own, leased from a reserved range
 * (plus the kvm group under kvm), so that an escaped QEMU reaches no other VM; anyone else: QEMU
 * stays that user. `'current'`: the user this process runs as (as root, only with `allowRoot`).
 * `{ uid, gid, groups? }`: a fixed identity (0 to 4294967294); VMs that share it are not isolated
 * from each other.
 */
export type VmUserInput = 'auto' | 'current' | { uid: number; gid: number; groups?: number[] | undefined };
/** Who QEMU runs as, parsed. */
export type VmUser = VmUserInput;

/** How QEMU is confined: its user, seccomp, and whether root is allowed. */
export interface HardeningConfigInput {
  /** QEMU's seccomp filter, denying obsolete, privilege-raising, spawning and resource-control calls. Default true. */
  seccomp?: boolean | undefined;
  /** Who QEMU runs as. Default `'auto'`. */
  user?: VmUserInput | undefined;
  /** Let QEMU run as root (user `'current'` under root, or uid 0): an escaped guest then owns the host. Default false. */
  allowRoot?: boolean | undefined;
}

/** The hardening section, parsed. */
export interface HardeningConfig {
  seccomp: boolean;
  user: VmUser;
  allowRoot: boolean;
}

/** Where the VM lives on the host and what it runs. Paths are absolute. */
export interface RuntimeConfigInput {
  /** The VM's private directory (sockets, pidfile, state), root's. Default `<base>/<id>` (`/run/sandbox-vmm/<id>` as root), kept short. */
  dir?: string | undefined;
  /** The QEMU binary: a path, or a name looked up in PATH once, at createVM. Default: the architecture's, `qemu-system-x86_64` or `qemu-system-aarch64`. */
  qemuPath?: string | undefined;
  /** QEMU outlives this process (for `QemuHypervisor.attach`) instead of dying with it. Default false. */
  detached?: boolean | undefined;
  /** The virtiofsd run for virtio-fs `sharedDir` devices. Default: the first of the usual locations. */
  virtiofsdPath?: string | undefined;
  /** The exec helper that drops privileges and closes fds before QEMU runs. Default: the one built with the package. */
  launcherPath?: string | undefined;
  /**
   * The pod's network namespace (`/run/netns/<name>` or `/proc/<pid>/ns/net`): QEMU and its helpers
   * start inside it, so the taps a CNI plugin made there are the ones QEMU opens. Must exist at
   * createVM. Default: the runtime's own namespace.
   */
  netns?: string | undefined;
}

/** The runtime section, parsed: `qemuPath` is filled from the architecture when absent. */
export interface RuntimeConfig {
  dir?: string | undefined;
  qemuPath: string;
  detached: boolean;
  virtiofsdPath?: string | undefined;
  launcherPath?: string | undefined;
  netns?: string | undefined;
}

/**
 * One sandbox VM, as createVM and parseSandboxConfig take it: only `boot.kernel` is required, every
 * other field has a default. Every bad field is reported at once, by its path, in a ConfigError.
 */
export interface SandboxConfigInput {
  /** The VM id (Kata passes the sandbox id): 1 to 64 letters, digits, `_.-`, starting with a letter or digit. Default: a fresh uuid. */
  id?: string | undefined;
  machine?: MachineConfigInput | undefined;
  boot: BootConfigInput;
  cpus?: CpusConfigInput | undefined;
  memory?: MemoryConfigInput | undefined;
  console?: ConsoleConfigInput | undefined;
  /**
   * Cold-plugged devices, discriminated by `type`. Ids unique (and not one the backend reserves for
   * its own devices), channel names and fs tags unique, at most one vsock, balloon and pvpanic.
   * Default none.
   */
  devices?: DeviceConfigInput[] | undefined;
  hotplug?: HotplugConfigInput | undefined;
  hardening?: HardeningConfigInput | undefined;
  runtime?: RuntimeConfigInput | undefined;
}

/** A validated config with every default filled: what `vm.config` holds. */
export interface SandboxConfig {
  /** The config's id, or the uuid generated for it. */
  id: string;
  machine: MachineConfig;
  boot: BootConfig;
  cpus: CpusConfig;
  memory: MemoryConfig;
  console: ConsoleConfig;
  devices: DeviceConfig[];
  hotplug: HotplugConfig;
  hardening: HardeningConfig;
  runtime: RuntimeConfig;
}
