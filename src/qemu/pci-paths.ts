// Guest PCI paths of the QEMU backend's devices, cold and hot: derived from the builder's PCI plan
// (which slot each device, controller and root port has on the root bus) and from the hotplug state
// (which root port a hot device took), then confirmed from QEMU. The plan cannot know bus numbers
// behind root ports (the guest firmware assigns them), so until QEMU has told us, they are the
// firmware's rule applied to the plan; query-pci after a hotplug gives the real ones.
//
// A device reports the path of the PCI function the guest finds it under: its own, or for a SCSI
// disk the virtio-scsi controller's (plus the disk's SCSI address), for a channel the
// virtio-serial controller's.
import type { DeviceConfig, HotplugDeviceConfig } from '../hypervisor/config/index.ts';
import { InvalidReplyError } from '../hypervisor/errors.ts';
import {
  firmwareBusNumbers,
  guestPciPath,
  MAX_PCI_BUS,
  MAX_PCI_FUNCTION,
  MAX_PCI_SLOT,
  type GuestPciPath,
  type PciHop,
  type ScsiAddress,
} from '../hypervisor/pci-path.ts';
import type { QmpClient } from '../qmp/index.ts';
import type { Logger } from '../util/logger.ts';
import { VIRTIO_SERIAL_ID } from './argv/index.ts';
import type { PciPlan } from './argv/pci.ts';
import { SCSI_CONTROLLER_ID } from './devices/block.ts';
import { describeValue } from './reply-values.ts';
import type { HotplugState } from './hotplug/state.ts';

/** What a device reports about where the guest finds it. */
export interface DeviceLocation {
  pci: GuestPciPath;
  scsi?: ScsiAddress;
}

type AnyDevice = DeviceConfig | HotplugDeviceConfig;

const isScsiDisk = (d: AnyDevice): boolean => d.type === 'block' && d.driver === 'virtio-scsi';

/** The qdev id of the PCI function whose path `device` reports. */
export function pciFunctionOf(device: AnyDevice): string {
  if (device.type === 'channel') return VIRTIO_SERIAL_ID;
  if (isScsiDisk(device)) return SCSI_CONTROLLER_ID;
  return device.id;
}

/** A reply's hops by qdev id, and the secondary bus of each bridge the firmware has numbered. */
export interface PciTopology {
  hops: Map<string, PciHop[]>;
  bridgeBuses: Map<string, number>;
}

/** Bridges nest at most one deep here; the bound only stops a hostile reply from recursing forever. */
const MAX_DEPTH = 8;

/**
 * Reads a query-pci reply (untrusted: every value is checked) into hops by qdev id. Functions
 * behind a bridge the firmware has not numbered yet (secondary bus 0) are left out: their bus is
 * not known. So are unnamed functions other than 0 (the ICH9 ones at 1f.2, 1f.3); a named one, or a
 * bridge, at a non-zero function is not what the builder made, and no Kata path could name it.
 */
export function topologyFromQueryPci(reply: unknown): PciTopology {
  const topology: PciTopology = { hops: new Map(), bridgeBuses: new Map() };
  if (!Array.isArray(reply)) throw invalid(`expected a list of buses, got ${describeValue(reply)}`);
  const root = (reply as unknown[]).find((b) => isObject(b) && b['bus'] === 0);
  if (!isObject(root)) throw invalid('no root bus (bus 0) in the reply');
  walk(root['devices'], 0, [], 0, topology);
  return topology;
}

function walk(devices: unknown, bus: number, above: PciHop[], depth: number, into: PciTopology): void {
  if (!Array.isArray(devices)) throw invalid(`bus ${bus} lists no devices (${describeValue(devices)})`);
  if (depth > MAX_DEPTH) throw invalid(`bridges nested deeper than ${MAX_DEPTH}`);
  for (const d of devices as unknown[]) {
    if (!isObject(d)) throw invalid(`a device on bus ${bus} is ${describeValue(d)}`);
    const hop = { bus: int(d['bus'], MAX_PCI_BUS, 'bus'), slot: int(d['slot'], MAX_PCI_SLOT, 'slot') };
    const fn = int(d['function'], MAX_PCI_FUNCTION, 'function');
    if (hop.bus !== bus) throw invalid(`a device listed on bus ${bus} says it is on bus ${hop.bus}`);
    const id = d['qdev_id'];
    if (typeof id !== 'string') throw invalid(`qdev_id of ${bus}:${hop.slot}.${fn} is ${describeValue(id)}`);
    const bridge = d['pci_bridge'];
    if (fn !== 0) {
      if (id === '' && bridge === undefined) continue;
      throw invalid(`${id === '' ? 'a bridge' : describeValue(id)} is at ${bus}:${hop.slot}.${fn}: every device and root port here is at function 0`);
    }
    const hops = [...above, hop];
    if (id !== '') into.hops.set(id, hops);
    if (bridge === undefined) continue;
    if (!isObject(bridge) || !isObject(bridge['bus'])) throw invalid(`pci_bridge of ${describeValue(id)} is ${describeValue(bridge)}`);
    const secondary = int(bridge['bus']['secondary'], MAX_PCI_BUS, 'secondary bus');
    if (secondary === 0) continue; // not numbered by the firmware yet
    if (secondary <= bus) throw invalid(`bridge ${describeValue(id)} on bus ${bus} leads back to bus ${secondary}`);
    if (id !== '') into.bridgeBuses.set(id, secondary);
    if (bridge['devices'] !== undefined) walk(bridge['devices'], secondary, hops, depth + 1, into);
  }
}

function int(value: unknown, max: number, what: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) throw invalid(`${what} is ${describeValue(value)} (0-${max})`);
  return value;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const invalid = (problem: string): InvalidReplyError => new InvalidReplyError('query-pci', problem);

/**
 * One VM's paths: the plan's prediction, corrected by what QEMU reported. Kept in memory only; a
 * process that re-attaches starts from the prediction again and corrects it at its next hotplug.
 */
export class PciPaths {
  readonly #plan: PciPlan;
  /** Bridge id → secondary bus: the firmware's rule until QEMU reports the real numbers. */
  readonly #buses: Map<string, number>;
  /** Hops QEMU reported for a function, which win over the plan's. */
  readonly #reported = new Map<string, PciHop[]>();
  readonly #scsi = new Map<string, ScsiAddress>();

  constructor(plan: PciPlan, coldDevices: readonly DeviceConfig[]) {
    this.#plan = plan;
    this.#buses = firmwareBusNumbers(plan.rootBus);
    // QEMU gives SCSI disks without an address the first free target, lun 0: cold ones in order.
    coldDevices.filter(isScsiDisk).forEach((d, target) => this.#scsi.set(d.id, { target, lun: 0 }));
  }

  /** Where the guest finds `device`; `state` says which root port each hot device took. */
  locate(device: AnyDevice, state: HotplugState): DeviceLocation {
    const pci = guestPciPath(this.#hops(pciFunctionOf(device), state));
    const scsi = this.#scsi.get(device.id);
    return isScsiDisk(device) && scsi ? { pci, scsi: { ...scsi } } : { pci };
  }

  /**
   * Asks QEMU where a freshly hot-added device went (query-pci, and for a SCSI disk its address),
   * and keeps the answer. A reply that cannot be used leaves the prediction, and is logged: the
   * device is plugged either way.
   */
  async confirm(qmp: QmpClient, device: HotplugDeviceConfig, options: { signal?: AbortSignal }, logger: Logger): Promise<void> {
    const fn = pciFunctionOf(device);
    this.#reported.delete(fn);
    this.#scsi.delete(device.id);
    try {
      const topology = topologyFromQueryPci(await qmp.execute('query-pci', undefined, options));
      for (const [bridge, bus] of topology.bridgeBuses) this.#buses.set(bridge, bus);
      const hops = topology.hops.get(fn);
      if (hops) this.#reported.set(fn, hops);
      if (isScsiDisk(device)) this.#scsi.set(device.id, await scsiAddress(qmp, device.id, options));
    } catch (error) {
      logger.warn({ device: device.id, err: error }, 'could not confirm the guest PCI path from QEMU; reporting the planned one');
    }
  }

  #hops(fn: string, state: HotplugState): PciHop[] {
    const reported = this.#reported.get(fn);
    if (reported) return reported.map((h) => ({ ...h }));
    const port = this.#plan.behindPort.get(fn) ?? [...state.devices, ...state.infrastructure].find((d) => d.id === fn)?.bus;
    const own = port === undefined ? this.#plan.rootBus.get(fn) : undefined;
    if (own) return [{ bus: 0, slot: own.slot }];
    const rootPort = port === undefined ? undefined : this.#plan.rootBus.get(port);
    const secondary = port === undefined ? undefined : this.#buses.get(port);
    if (!rootPort || secondary === undefined) throw new Error(`the PCI plan does not place ${fn}`);
    return [
      { bus: 0, slot: rootPort.slot },
      { bus: secondary, slot: 0 },
    ];
  }
}

async function scsiAddress(qmp: QmpClient, deviceId: string, options: { signal?: AbortSignal }): Promise<ScsiAddress> {
  const path = `/machine/peripheral/${deviceId}`;
  const read = async (property: string, max: number): Promise<number> => {
    const value = await qmp.execute('qom-get', { path, property }, options);
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > max) {
      throw new InvalidReplyError('qom-get', `${property} of ${deviceId} is ${describeValue(value)}`);
    }
    return value;
  };
  // virtio-scsi's limits: 255 targets, 16384 luns.
  return { target: await read('scsi-id', 255), lun: await read('lun', 16383) };
}

const books = new WeakMap<PciPlan, PciPaths>();

/** The paths of the VM built from `plan`: one book per plan, so confirmations are shared. */
export function pciPathsOf(plan: PciPlan, coldDevices: readonly DeviceConfig[]): PciPaths {
  let book = books.get(plan);
  if (!book) {
    book = new PciPaths(plan, coldDevices);
    books.set(plan, book);
  }
  return book;
}
