// The mock's guest PCI paths, by the QEMU backend's layout rules: the root image, virtio-mem and
// the hotplug root ports first, then the cold devices in config order, each on a slot of its own
// (root ports too); channels share the virtio-serial controller, SCSI
// disks the SCSI controller, and a VFIO device gets a root port of its own. Buses behind the ports
// are numbered as the firmware numbers them. A config that needs more slots than the root bus has
// is refused as the builder refuses it. The strings come from the shared pci-path module.
import type { DeviceConfig, HotplugDeviceConfig, SandboxConfig } from '../hypervisor/config/index.ts';
import {
  firmwareBusNumbers,
  FIRST_DEVICE_SLOT,
  guestPciPath,
  LAST_DEVICE_SLOT,
  rootBusFullError,
  type GuestPciPath,
  type PciHop,
  type RootBusSlot,
  type ScsiAddress,
} from '../hypervisor/pci-path.ts';
import { rootPortIds } from '../hypervisor/resources.ts';
import { SCSI_CONTROLLER_ID, VIRTIO_MEM_ID, type MockHotplugState } from './machine.ts';

const VIRTIO_SERIAL_ID = 'vserial0';

interface MockPciLayout {
  rootBus: Map<string, RootBusSlot>;
  behindPort: Map<string, string>;
  buses: Map<string, number>;
  coldScsi: Map<string, ScsiAddress>;
}

type AnyDevice = DeviceConfig | HotplugDeviceConfig;
const isScsiDisk = (d: AnyDevice): boolean => d.type === 'block' && d.driver === 'virtio-scsi';

const layouts = new WeakMap<SandboxConfig, MockPciLayout>();

function layoutOf(config: SandboxConfig): MockPciLayout {
  const known = layouts.get(config);
  if (known) return known;
  const rootBus = new Map<string, RootBusSlot>();
  const behindPort = new Map<string, string>();
  let nextSlot = FIRST_DEVICE_SLOT;
  let ports = 0;
  const take = (what: string) => {
    if (nextSlot > LAST_DEVICE_SLOT) throw rootBusFullError(what, ports);
    return nextSlot++;
  };
  const slot = (id: string, what = id) => rootBus.set(id, { slot: take(what), bridge: false });
  const port = (id: string, what = id) => {
    rootBus.set(id, { slot: take(what), bridge: true });
    ports++;
  };
  if (config.boot.image) slot('rootfs');
  if (config.memory.hotplug === 'virtio-mem') slot(VIRTIO_MEM_ID);
  const hotplugPorts = rootPortIds(config.hotplug.rootPorts);
  for (const id of hotplugPorts) port(id);
  let vfioPorts = 0;
  for (const device of config.devices) {
    if (device.type === 'channel' || isScsiDisk(device)) {
      const controller = device.type === 'channel' ? VIRTIO_SERIAL_ID : SCSI_CONTROLLER_ID;
      if (!rootBus.has(controller)) slot(controller, device.type === 'channel' ? 'the virtio-serial controller' : 'the SCSI controller');
    } else if (device.type === 'vfio') {
      const id = `rp${hotplugPorts.length + vfioPorts++}`;
      port(id, device.id);
      behindPort.set(device.id, id);
    } else {
      slot(device.id);
    }
  }
  const coldScsi = new Map(config.devices.filter(isScsiDisk).map((d, target) => [d.id, { target, lun: 0 }]));
  const layout = { rootBus, behindPort, buses: firmwareBusNumbers(rootBus), coldScsi };
  layouts.set(config, layout);
  return layout;
}

/** Refuses, as the QEMU builder does, a config whose devices need more root bus slots than there are. */
export function assertMockPciLayoutFits(config: SandboxConfig): void {
  layoutOf(config);
}

/** The SCSI address the mock gives a hot-added disk: the first free target, lun 0, as QEMU does. */
export function freeScsiAddress(config: SandboxConfig, state: MockHotplugState): ScsiAddress {
  const taken = new Set([...layoutOf(config).coldScsi.values(), ...state.devices.flatMap((d) => (d.scsi ? [d.scsi] : []))].map((a) => a.target));
  let target = 0;
  while (taken.has(target)) target++;
  return { target, lun: 0 };
}

/** Where the guest finds `device` (cold, or hot with the root port in `state`). */
export function locateMockDevice(device: AnyDevice, config: SandboxConfig, state: MockHotplugState | undefined): { pci: GuestPciPath; scsi?: ScsiAddress } {
  const layout = layoutOf(config);
  const fn = device.type === 'channel' ? VIRTIO_SERIAL_ID : isScsiDisk(device) ? SCSI_CONTROLLER_ID : device.id;
  const port = layout.behindPort.get(fn) ?? [...(state?.devices ?? []), ...(state?.infrastructure ?? [])].find((d) => d.id === fn)?.bus;
  const pci = guestPciPath(hopsOf(layout, fn, port));
  if (!isScsiDisk(device)) return { pci };
  const scsi = layout.coldScsi.get(device.id) ?? state?.devices.find((d) => d.id === device.id)?.scsi;
  return scsi ? { pci, scsi: { ...scsi } } : { pci };
}

function hopsOf(layout: MockPciLayout, fn: string, port: string | undefined): PciHop[] {
  const at = layout.rootBus.get(port ?? fn);
  const secondary = port === undefined ? undefined : layout.buses.get(port);
  if (!at || (port !== undefined && secondary === undefined)) throw new Error(`the mock's PCI layout does not place ${fn}`);
  const first = { bus: 0, slot: at.slot };
  return secondary === undefined ? [first] : [first, { bus: secondary, slot: 0 }];
}
