// What a VM needs of its QEMU binary, as data read off its launch plan: every QMP command the
// library may send, each device driver on the command line with the properties set on it, the
// machine type with its properties, and the drivers hotplug may add later (probed now, before the
// guest runs, and checked when used).
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import { QMP_SURFACE } from '../../qmp/surface.ts';
import type { LaunchPlan } from '../launch/plan.ts';

export interface FeatureNeeds {
  commands: readonly string[];
  /** Driver → the properties the command line sets on it. */
  devices: ReadonlyMap<string, ReadonlySet<string>>;
  /** The machine type as the config names it (q35) and the properties set on it. */
  machine: { name: string; props: ReadonlySet<string> };
  /** Drivers hotplug and resize may add: probed at start, required only when used. */
  hotplugDrivers: readonly string[];
}

/** Keys of -device that are qdev options, not properties device-list-properties reports. */
export const DEVICE_OPTION_KEYS: ReadonlySet<string> = new Set(['driver', 'id', 'bus']);
/** Keys of -machine that are not machine properties. */
const MACHINE_OPTION_KEYS = new Set(['type']);

export function featureNeeds(plan: Pick<LaunchPlan, 'argv' | 'config'>): FeatureNeeds {
  const devices = new Map<string, Set<string>>();
  let machine: FeatureNeeds['machine'] = { name: plan.config.machine.type, props: new Set() };
  const args = plan.argv.args;
  for (let i = 0; i + 1 < args.length; i++) {
    const value = args[i + 1] as string;
    if (args[i] === '-device') {
      const [driver, keys] = parseOptions(value);
      const props = devices.get(driver) ?? new Set<string>();
      for (const key of keys) if (!DEVICE_OPTION_KEYS.has(key)) props.add(key);
      devices.set(driver, props);
    } else if (args[i] === '-machine') {
      const [name, keys] = parseOptions(value);
      machine = { name, props: new Set(keys.filter((key) => !MACHINE_OPTION_KEYS.has(key))) };
    }
  }
  return { commands: Object.keys(QMP_SURFACE), devices, machine, hotplugDrivers: hotplugDrivers(plan.config) };
}

function hotplugDrivers(config: SandboxConfig): string[] {
  const drivers: string[] = [];
  if (config.hotplug.rootPorts > 0) drivers.push('virtio-blk-pci', 'virtio-scsi-pci', 'scsi-hd', 'virtio-net-pci', 'vfio-pci');
  if (config.memory.hotplug === 'dimm') drivers.push('pc-dimm');
  return drivers;
}

/**
 * The implied first value (driver, machine type) and the keys of a `key=value,…` option string as
 * argv/qemu-opts.ts renders it: a doubled comma is part of a value, not a separator.
 */
export function parseOptions(text: string): [head: string, keys: string[]] {
  const parts = text.replaceAll(',,', '\0').split(',');
  const head = parts[0] ?? '';
  const keys = parts.slice(1).map((part) => part.slice(0, part.includes('=') ? part.indexOf('=') : undefined));
  return [head.replaceAll('\0', ','), keys];
}
