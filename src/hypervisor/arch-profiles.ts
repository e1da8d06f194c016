// What the guest architecture decides, independent of the VMM: the machine, what it can hot-plug,
// how long the guest takes to let go of a device, and the name of its serial console. The config
// rules, capabilities(), the resource rules and the mock read this table; the QEMU backend adds
// its command-line half in src/qemu/arch/profiles.ts. An architecture is one entry here and one
// there, never an `if` elsewhere.

/** The guest architectures `machine.arch` accepts. */
export const ARCHITECTURES = ['x86_64', 'aarch64'] as const;
/** A guest architecture: `x86_64` or `aarch64`. */
export type Architecture = (typeof ARCHITECTURES)[number];

/** The machine types: q35 (x86_64) and virt (aarch64). */
export const MACHINE_TYPES = ['q35', 'virt'] as const;
/** A machine type: `q35` or `virt`. */
export type MachineType = (typeof MACHINE_TYPES)[number];

/** A way to hot-plug memory: `virtio-mem` or `dimm`. */
export type MemoryHotplugKind = 'virtio-mem' | 'dimm';

/** What an architecture's machine is and can do, the same for every backend (the table is in this module). */
export interface ArchProfile {
  readonly arch: Architecture;
  /** The one machine type the library builds for this architecture. */
  readonly machineType: MachineType;
  /** The default QEMU binary (runtime.qemuPath), looked up in PATH. */
  readonly qemuBinary: string;
  /** The guest's name for the serial console the backend provides. */
  readonly consoleTty: string;
  /** Serial ttys of other architectures: a console= naming one would leave the guest without a console. */
  readonly foreignConsoleTty: RegExp;
  /** vCPUs can be hot-added (and so cpus.max may exceed cpus.boot). */
  readonly cpuHotplug: boolean;
  /** The memory.hotplug kinds the machine supports. */
  readonly memoryHotplug: readonly MemoryHotplugKind[];
  /** Why a memory.hotplug kind it lacks is missing, for the config error. */
  readonly memoryHotplugMissing: string;
  /** Why cpuHotplug is false, for the config error and UNSUPPORTED. */
  readonly cpuHotplugMissing: string;
  /** Sandbox templates are proven on this machine (capabilities().templates). */
  readonly templates: boolean;
  /** Why templates is false, for the TemplateError. */
  readonly templatesMissing: string;
  /**
   * The default of how long a removal waits for the guest to let go of a device (a backend's
   * deviceRemovalTimeoutMs option replaces it). About 50 times what the guest usually takes.
   */
  readonly deviceRemovalTimeoutMs: number;
  /**
   * How long after a device left a hot-plug slot (removed or ejected) the guest may still act on
   * that slot's last hotplug events: a device put into the slot before then can be taken out again
   * or never seen. A backend hands such a slot out last, and waits out the rest before plugging into it.
   */
  readonly freedSlotSettleMs: number;
}

const X86_64: ArchProfile = {
  arch: 'x86_64',
  machineType: 'q35',
  qemuBinary: 'qemu-system-x86_64',
  consoleTty: 'ttyS0',
  foreignConsoleTty: /^ttyAMA\d*$/,
  cpuHotplug: true,
  memoryHotplug: ['virtio-mem', 'dimm'],
  memoryHotplugMissing: '',
  cpuHotplugMissing: '',
  templates: true,
  templatesMissing: '',
  // q35's ACPI PCI hotplug: DEVICE_DELETED about 0.1 s after device_del.
  deviceRemovalTimeoutMs: 10_000,
  // ACPI PCI hotplug: a removal that overlaps another hotplug event leaves the guest a second Eject
  // request for the slot (its GPE handler ran twice while the slot was marked for removal). It runs
  // after the first, behind whatever else the guest's hotplug queue holds, and ejects what the slot
  // then holds: measured 0.1-0.5 s after the first under TCG (QEMU 7.2 and 10.0), four times that.
  freedSlotSettleMs: 2_000,
};

const AARCH64: ArchProfile = {
  arch: 'aarch64',
  machineType: 'virt',
  qemuBinary: 'qemu-system-aarch64',
  // The PL011 UART.
  consoleTty: 'ttyAMA0',
  foreignConsoleTty: /^ttyS\d*$/,
  // virt has no CPU hotplug in QEMU 7.2 or 10 (query-hotpluggable-cpus and device_add are refused).
  cpuHotplug: false,
  memoryHotplug: ['virtio-mem'],
  // pc-dimm on virt is announced to the guest through ACPI, which a device-tree (-kernel) boot has not.
  memoryHotplugMissing: 'DIMM hotplug on aarch64 (virt) needs ACPI and UEFI firmware, which a -kernel boot does not have: use "virtio-mem"',
  cpuHotplugMissing: 'the aarch64 virt machine cannot hot-plug vCPUs',
  // A template's layout adds vmgenid, an ACPI device virt booted with -kernel lacks, and restore
  // on virt is unproven: refused until the arm64 suite runs templates.
  templates: false,
  templatesMissing: 'templates are not supported on aarch64 (virt) yet: the template layout needs vmgenid, an x86 ACPI device',
  // A device-tree boot has no ACPI PCI hotplug: removal goes through native PCIe hotplug, whose
  // attention-button wait makes DEVICE_DELETED arrive about 6.2 s after device_del.
  deviceRemovalTimeoutMs: 20_000,
  // Native PCIe hotplug: QEMU unplugs the device (DEVICE_DELETED) when pciehp powers the slot off;
  // pciehp then spends 1 s on the slot and drops the presence and link changes seen meanwhile. A
  // disk plugged in that second still came up (9 of 9 on QEMU 7.2 and 10.0, removals overlapping
  // other plugs included), through the attention button QEMU presses for a powered-off slot:
  // nothing was ever lost, so no wait (q35's stale ACPI Eject has no counterpart here). A freed
  // slot is still handed out last.
  freedSlotSettleMs: 0,
};

const PROFILES: Readonly<Record<Architecture, ArchProfile>> = { x86_64: X86_64, aarch64: AARCH64 };

/** The profile of an architecture. */
export function archProfile(arch: Architecture): ArchProfile {
  return PROFILES[arch];
}

/** The profile of a config (or a config input's machine section): x86_64 when none is named. */
export function profileOf(config: { machine?: { arch?: Architecture } } | undefined): ArchProfile {
  return archProfile(config?.machine?.arch ?? 'x86_64');
}

/** How long a removal waits for the guest: the backend's configured timeout, else the machine's default. */
export function deviceRemovalTimeoutMs(configured: number | undefined, config: { machine?: { arch?: Architecture } }): number {
  return configured ?? profileOf(config).deviceRemovalTimeoutMs;
}
