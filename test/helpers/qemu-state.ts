// Reads what a running QEMU has: its PCI tree, block nodes, chardevs, NICs and QOM properties, in
// the shapes the checks need. One snapshot per check, taken over QMP (and /proc for its fds).
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';
import type { QmpClient } from '../../src/qmp/index.ts';

export interface PciFunction {
  qdevId: string;
  /** 'pcie.0' for the root bus, else the qdev id of the bridge (root port) above it. */
  parent: string;
  slot: number;
  fn: number;
}

interface RawPciDevice {
  qdev_id: string;
  slot: number;
  function: number;
  pci_bridge?: { devices?: RawPciDevice[] };
}

export async function pciFunctions(qmp: QmpClient): Promise<PciFunction[]> {
  const buses = (await qmp.execute('query-pci')) as { bus: number; devices: RawPciDevice[] }[];
  const out: PciFunction[] = [];
  const walk = (devices: RawPciDevice[], parent: string) => {
    for (const d of devices) {
      out.push({ qdevId: d.qdev_id, parent, slot: d.slot, fn: d.function });
      if (d.pci_bridge?.devices) walk(d.pci_bridge.devices, d.qdev_id);
    }
  };
  for (const bus of buses) if (bus.bus === 0) walk(bus.devices, 'pcie.0');
  return out;
}

export interface BlockNode {
  'node-name': string;
  drv: string;
  ro: boolean;
  file: string;
  cache: { direct: boolean; 'no-flush': boolean; writeback: boolean };
  image: { filename: string };
}

export function blockNodes(qmp: QmpClient): Promise<BlockNode[]> {
  return qmp.executeUntyped('query-named-block-nodes') as Promise<BlockNode[]>;
}

export interface BlockDevice {
  /** The id of a SCSI disk, or the QOM path of a virtio-blk device's backend. */
  qdev: string;
  inserted?: BlockNode;
}

/** query-block's entry for the disk with this qdev id, whatever the frontend. */
export async function blockDevice(qmp: QmpClient, id: string): Promise<BlockDevice | undefined> {
  const devices = (await qmp.execute('query-block')) as BlockDevice[];
  return devices.find((d) => d.qdev === id || d.qdev === `/machine/peripheral/${id}/virtio-backend` || d.qdev === `/machine/peripheral/${id}`);
}

export interface Chardev {
  label: string;
  filename: string;
  'frontend-open': boolean;
}

export function chardevs(qmp: QmpClient): Promise<Chardev[]> {
  return qmp.executeUntyped('query-chardev') as Promise<Chardev[]>;
}

/** The tap backends of a netdev, one line per queue, from the monitor's `info network`. */
export async function tapQueues(qmp: QmpClient, netdevId: string): Promise<string[]> {
  const text = (await qmp.executeUntyped('human-monitor-command', { 'command-line': 'info network' })) as string;
  const prefix = `\\ ${netdevId}: `;
  return text
    .split(/\r?\n/)
    .map((line) => line.trim())
    .filter((line) => line.startsWith(prefix))
    .map((line) => line.slice(prefix.length));
}

export interface MachineMemory {
  size: number;
  slots: number;
  /** Boot memory plus the device memory region (where DIMMs and virtio-mem go). */
  maxSize: number;
}

/**
 * -m as QEMU holds it. QEMU reports max-size only when there are DIMM slots; without slots the
 * device memory region is exactly maxmem - size, so max-size is that sum.
 */
export async function machineMemory(qmp: QmpClient): Promise<MachineMemory> {
  const memory = (await qomGet(qmp, '/machine', 'memory')) as { size: number; slots?: number; 'max-size'?: number };
  const region = await deviceMemoryRegionSize(qmp);
  return { size: memory.size, slots: memory.slots ?? 0, maxSize: memory['max-size'] ?? memory.size + region };
}

/** q35 has a property for it; virt only the region itself (/machine/device-memory[0], absent without maxmem). */
async function deviceMemoryRegionSize(qmp: QmpClient): Promise<number> {
  const properties = (await qmp.execute('qom-list', { path: '/machine' })) as { name: string; type: string }[];
  if (properties.some((p) => p.name === 'device-memory-region-size')) return (await qomGet(qmp, '/machine', 'device-memory-region-size')) as number;
  const region = properties.find((p) => p.name === 'device-memory[0]' && p.type === 'child<memory-region>');
  return region ? ((await qomGet(qmp, '/machine/device-memory[0]', 'size')) as number) : 0;
}

export async function qomGet(qmp: QmpClient, path: string, property: string): Promise<unknown> {
  return qmp.execute('qom-get', { path, property });
}

export interface DeviceProperty {
  name: string;
  type: string;
}

export function deviceProperties(qmp: QmpClient, typename: string): Promise<DeviceProperty[]> {
  return qmp.execute('device-list-properties', { typename });
}

export async function qomTypes(qmp: QmpClient): Promise<string[]> {
  const types = (await qmp.executeUntyped('qom-list-types')) as { name: string }[];
  return types.map((t) => t.name);
}

/** A field of /proc/<pid>/status, e.g. Seccomp, Uid, Groups. */
export function procStatus(pid: number, field: string): string {
  // [ \t]*, not \s*: an empty field (Groups:) must not run onto the next line.
  const match = new RegExp(`^${field}:[ \\t]*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no ${field} in /proc/${pid}/status`);
  return (match[1] as string).trim();
}

export function threadNames(pid: number): string[] {
  return readdirSync(`/proc/${pid}/task`).map((tid) => readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim());
}

/** The tap interface behind one of the process's fds ("iff:" in its fdinfo), if it is one. */
export function tapBehindFd(pid: number, fd: number): string | undefined {
  return /^iff:\s*(\S+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/${fd}`, 'utf8'))?.[1];
}

/** The socket behind one of the process's fds: its inode ("socket:[N]"), or undefined for anything else. */
export function socketInode(pid: number, fd: number): number | undefined {
  let target: string;
  try {
    target = readlinkSync(`/proc/${pid}/fd/${fd}`);
  } catch {
    return undefined;
  }
  const match = /^socket:\[(\d+)\]$/.exec(target);
  return match ? Number(match[1]) : undefined;
}

export interface UnixSocket {
  inode: number;
  /** Accepting connections (SO_ACCEPTCON in its flags). */
  listening: boolean;
  /** The address it is bound to (for a path, the path as bound). */
  path: string;
}

/** The bound unix sockets of this network namespace, from /proc/net/unix. */
export function boundUnixSockets(): UnixSocket[] {
  const lines = readFileSync('/proc/net/unix', 'utf8').split('\n').slice(1);
  return lines.flatMap((line) => {
    // Num RefCount Protocol Flags Type St Inode Path: the path is the rest of the line, spaces included.
    const match = /^\S+: \S+ \S+ ([0-9A-Fa-f]+) \S+ \S+ (\d+) (.+)$/.exec(line);
    if (!match) return [];
    const flags = parseInt(match[1] as string, 16);
    return [{ inode: Number(match[2]), listening: (flags & 0x10000) !== 0, path: match[3] as string }];
  });
}

/** The paths of the listening unix sockets the process holds as fds (whoever created them). */
export function listeningPathsHeld(pid: number): string[] {
  const held = new Set(readdirSync(`/proc/${pid}/fd`).flatMap((fd) => socketInode(pid, Number(fd)) ?? []));
  return boundUnixSockets().flatMap((s) => (s.listening && held.has(s.inode) ? [s.path] : []));
}

/** The serial ports of the board that have a chardev: the QOM type of each, and the chardev it is attached to. */
export async function boardSerialPorts(qmp: QmpClient): Promise<{ path: string; type: string; chardev: unknown }[]> {
  const out: { path: string; type: string; chardev: unknown }[] = [];
  for (const container of ['/machine/peripheral', '/machine/unattached']) {
    const children = (await qmp.execute('qom-list', { path: container })) as { name: string; type: string }[];
    for (const child of children) {
      const type = /^child<(isa-serial|pl011)>$/.exec(child.type)?.[1];
      if (type === undefined) continue;
      const path = `${container}/${child.name}`;
      const chardev = await qomGet(qmp, path, 'chardev');
      if (chardev !== '' && chardev !== null) out.push({ path, type, chardev });
    }
  }
  return out;
}
