// Guest PCI paths, backend-neutral: the two strings a runtime hands its guest agent to find a
// device, built from the hops that lead to it from the root bus, and the rule by which firmware
// numbers the buses behind root ports. Backends decide the hops; only this module writes the strings.

/** Where a device sits on the guest's PCI topology, as a guest agent looks it up. */
export interface GuestPciPath {
  /**
   * Kata's PCI path (`bridgePciPath`, `qomGetPciPath`): the slot of each hop from the root bus down,
   * two hex digits, joined by `/`. "02/00" is slot 2 on the root bus, then slot 0 on the bus behind
   * the root port there. A hop at a non-zero function (root ports share a slot as its functions
   * 0-7) is written `slot.function`, e.g. "01.3/00"; Kata's agent itself reads function-0 hops only.
   */
  path: string;
  /**
   * The same hops as the guest's sysfs names them below /sys/devices/pci0000:00, each a full
   * domain:bus:slot.function: "0000:00:02.0/0000:01:00.0". Bus numbers behind root ports are the
   * ones the guest firmware assigned (confirmed from the hypervisor when it can tell).
   */
  sysfs: string;
}

/** A SCSI disk's address on its controller: Kata's `scsi_addr` is `${target}:${lun}`. */
export interface ScsiAddress {
  target: number;
  lun: number;
}

/** One step of a device's path: the function it is (or passes through) and the bus that function is on. */
export interface PciHop {
  bus: number;
  slot: number;
  function: number;
}

export const MAX_PCI_BUS = 0xff;
export const MAX_PCI_SLOT = 0x1f;
export const MAX_PCI_FUNCTION = 7;

const hex = (value: number, digits: number): string => value.toString(16).padStart(digits, '0');

/** Both forms of the path through `hops` (root bus first). */
export function guestPciPath(hops: readonly PciHop[]): GuestPciPath {
  if (hops.length === 0) throw new RangeError('a PCI path has at least one hop');
  for (const hop of hops) assertHop(hop);
  return {
    path: hops.map((h) => (h.function === 0 ? hex(h.slot, 2) : `${hex(h.slot, 2)}.${h.function}`)).join('/'),
    sysfs: hops.map((h) => `0000:${hex(h.bus, 2)}:${hex(h.slot, 2)}.${h.function}`).join('/'),
  };
}

function assertHop(hop: PciHop): void {
  const inRange = (v: number, max: number) => Number.isInteger(v) && v >= 0 && v <= max;
  if (!inRange(hop.bus, MAX_PCI_BUS) || !inRange(hop.slot, MAX_PCI_SLOT) || !inRange(hop.function, MAX_PCI_FUNCTION)) {
    throw new RangeError(`not a PCI address: bus ${hop.bus}, slot ${hop.slot}, function ${hop.function}`);
  }
}

const KATA_HOP = /^([0-9a-f]{2})(?:\.([1-7]))?$/;
const SYSFS_HOP = /^0000:([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;

/**
 * The hops a well-formed pair of paths describes, or a reason it is not one: both forms must be
 * well-formed, name the same slots and functions, start on bus 0, and each later hop must sit on a
 * bus other than 0 (behind a bridge).
 */
export function parseGuestPciPath(pci: GuestPciPath): PciHop[] | string {
  const kata = pci.path.split('/');
  const sysfs = pci.sysfs.split('/');
  if (kata.length !== sysfs.length) return `"${pci.path}" and "${pci.sysfs}" have different numbers of hops`;
  const hops: PciHop[] = [];
  for (const [i, k] of kata.entries()) {
    const km = KATA_HOP.exec(k);
    const sm = SYSFS_HOP.exec(sysfs[i] as string);
    if (!km) return `hop ${i} of "${pci.path}" is not Kata's form (two hex digits, .function when not 0)`;
    if (!sm) return `hop ${i} of "${pci.sysfs}" is not a sysfs PCI address (0000:bb:ss.f)`;
    const hop = { bus: parseInt(sm[1] as string, 16), slot: parseInt(sm[2] as string, 16), function: Number(sm[3]) };
    if (hop.slot > MAX_PCI_SLOT) return `hop ${i} of "${pci.sysfs}" has slot ${hop.slot} (at most ${MAX_PCI_SLOT})`;
    if (parseInt(km[1] as string, 16) !== hop.slot || Number(km[2] ?? 0) !== hop.function) return `hop ${i} differs between "${pci.path}" and "${pci.sysfs}"`;
    if ((i === 0) !== (hop.bus === 0)) return `hop ${i} of "${pci.sysfs}" is on bus ${hop.bus}: only the first hop is on the root bus`;
    hops.push(hop);
  }
  return hops;
}

/** A function on the root bus; bridges (root ports) lead to a bus of their own. */
export interface RootBusFunction {
  slot: number;
  function: number;
  bridge: boolean;
}

/**
 * The secondary bus numbers the guest firmware gives the bridges on the root bus when nothing is
 * nested behind them: 1, 2, … in the order of their addresses (SeaBIOS numbers depth first in
 * address order, and Linux keeps what the firmware assigned). A prediction: the QEMU backend
 * confirms it from query-pci.
 */
export function firmwareBusNumbers(rootBus: ReadonlyMap<string, RootBusFunction>): Map<string, number> {
  const bridges = [...rootBus].filter(([, f]) => f.bridge).sort(([, a], [, b]) => a.slot * 8 + a.function - (b.slot * 8 + b.function));
  return new Map(bridges.map(([id], i) => [id, i + 1]));
}
