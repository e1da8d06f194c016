// Guest PCI paths, backend-neutral: the two strings a runtime hands its guest agent to find a
// device, built from the hops that lead to it from the root bus, and the rule by which firmware
// numbers the buses behind root ports, and how many slots the root bus has for them. Backends
// decide the hops; only this module writes the strings.
import { ConfigError } from './config/errors.ts';

/** Where a device sits on the guest's PCI topology, as a guest agent looks it up. */
export interface GuestPciPath {
  /**
   * Kata's PCI path (`bridgePciPath`, `qomGetPciPath`): the slot of each hop from the root bus down,
   * two hex digits, joined by `/`. "02/00" is slot 2 on the root bus, then slot 0 on the bus behind
   * the root port there. Every hop is function 0, which the form leaves implied (Kata's agent reads
   * no other): every device and root port has a slot of its own.
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

/**
 * One step of a device's path: the slot it is (or passes through) and the bus that slot is on. The
 * function is 0: Kata's form cannot name another, so no hop has one.
 */
export interface PciHop {
  bus: number;
  slot: number;
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
    path: hops.map((h) => hex(h.slot, 2)).join('/'),
    sysfs: hops.map((h) => `0000:${hex(h.bus, 2)}:${hex(h.slot, 2)}.0`).join('/'),
  };
}

function assertHop(hop: PciHop): void {
  const inRange = (v: number, max: number) => Number.isInteger(v) && v >= 0 && v <= max;
  if (!inRange(hop.bus, MAX_PCI_BUS) || !inRange(hop.slot, MAX_PCI_SLOT)) throw new RangeError(`not a PCI address: bus ${hop.bus}, slot ${hop.slot}`);
}

const KATA_HOP = /^[0-9a-f]{2}$/;
const SYSFS_HOP = /^0000:([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/;

/**
 * The hops a well-formed pair of paths describes, or a reason it is not one: both forms must be
 * well-formed, name the same slots, every hop at function 0, start on bus 0, and each later hop
 * must sit on a bus other than 0 (behind a bridge).
 */
export function parseGuestPciPath(pci: GuestPciPath): PciHop[] | string {
  const kata = pci.path.split('/');
  const sysfs = pci.sysfs.split('/');
  if (kata.length !== sysfs.length) return `"${pci.path}" and "${pci.sysfs}" have different numbers of hops`;
  const hops: PciHop[] = [];
  for (const [i, k] of kata.entries()) {
    const sm = SYSFS_HOP.exec(sysfs[i] as string);
    if (!KATA_HOP.test(k)) return `hop ${i} of "${pci.path}" is not Kata's form (two hex digits, the slot)`;
    if (!sm) return `hop ${i} of "${pci.sysfs}" is not a sysfs PCI address (0000:bb:ss.f)`;
    const hop = { bus: parseInt(sm[1] as string, 16), slot: parseInt(sm[2] as string, 16) };
    if (hop.slot > MAX_PCI_SLOT) return `hop ${i} of "${pci.sysfs}" has slot ${hop.slot} (at most ${MAX_PCI_SLOT})`;
    if (sm[3] !== '0') return `hop ${i} of "${pci.sysfs}" is at function ${sm[3]}: Kata's form names function 0 only`;
    if (parseInt(k, 16) !== hop.slot) return `hop ${i} differs between "${pci.path}" and "${pci.sysfs}"`;
    if ((i === 0) !== (hop.bus === 0)) return `hop ${i} of "${pci.sysfs}" is on bus ${hop.bus}: only the first hop is on the root bus`;
    hops.push(hop);
  }
  return hops;
}

/** A slot on the root bus (its function 0); bridges (root ports) lead to a bus of their own. */
export interface RootBusSlot {
  slot: number;
  bridge: boolean;
}

/**
 * The secondary bus numbers the guest firmware gives the bridges on the root bus when nothing is
 * nested behind them: 1, 2, … in the order of their addresses (SeaBIOS numbers depth first in
 * slot order, and Linux keeps what the firmware assigned). A prediction: the QEMU backend
 * confirms it from query-pci.
 */
export function firmwareBusNumbers(rootBus: ReadonlyMap<string, RootBusSlot>): Map<string, number> {
  const bridges = [...rootBus].filter(([, at]) => at.bridge).sort(([, a], [, b]) => a.slot - b.slot);
  return new Map(bridges.map(([id], i) => [id, i + 1]));
}

/** The root bus's slots for devices (q35: slot 0 is the host bridge, 0x1f the ICH9 functions). */
export const FIRST_DEVICE_SLOT = 1;
export const LAST_DEVICE_SLOT = 0x1e;
export const DEVICE_SLOTS = LAST_DEVICE_SLOT - FIRST_DEVICE_SLOT + 1;

/** The refusal of a config whose device `what` finds every root bus slot taken, `rootPorts` of them by root ports. */
export function rootBusFullError(what: string, rootPorts: number): ConfigError {
  const message =
    `no PCI slot left on the root bus for ${what}: its ${DEVICE_SLOTS} slots are taken, one by each PCI device, ` +
    `controller and root port (${rootPorts} root ports: hotplug.rootPorts plus one per VFIO device)`;
  return new ConfigError([{ path: 'devices', message }]);
}
