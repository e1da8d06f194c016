// What the suite checks about guest PCI paths, whatever the backend's layout: both forms are
// well-formed and describe the same hops; devices with PCI functions of their own have paths of their
// own; SCSI disks share their controller's path and differ by SCSI address; channels share theirs;
// a hot-added device (other than a SCSI disk) sits at slot 0 behind a root port.
import assert from 'node:assert/strict';
import { parseGuestPciPath, type PciHop } from '../hypervisor/pci-path.ts';
import type { GuestPciPath, PluggedDevice, ScsiAddress } from '../hypervisor/types.ts';

interface Located {
  id: string;
  type: string;
  pci: GuestPciPath;
  scsi?: ScsiAddress;
}

/** The hops of a device's path; fails naming the device when the path is not well-formed. */
export function assertPciPath(device: Located): PciHop[] {
  assert.ok(typeof device.pci === 'object' && device.pci !== null, `${device.id} reports a PCI path`);
  const hops = parseGuestPciPath(device.pci);
  if (typeof hops === 'string') assert.fail(`the PCI path of ${device.id} is not well-formed: ${hops}`);
  return hops;
}

/** A hot-added PCI device is on a root port: two hops, the second at slot 0 (function 0, as every hop). */
export function assertBehindRootPort(device: Located): void {
  const hops = assertPciPath(device);
  assert.equal(hops.length, 2, `${device.id} (${device.pci.path}) is behind a root port`);
  assert.equal(hops[1]?.slot, 0, `${device.id} is at slot 0 behind its port (${device.pci.sysfs})`);
}

/**
 * Every device's path is well-formed, and devices sharing a path share a controller: all channels,
 * or all SCSI disks with distinct addresses. The same function never has two sysfs names.
 */
export function assertDistinctPciPaths(devices: readonly PluggedDevice[]): void {
  const byPath = new Map<string, PluggedDevice[]>();
  const sysfsOf = new Map<string, string>();
  for (const device of devices) {
    assertPciPath(device);
    byPath.set(device.pci.path, [...(byPath.get(device.pci.path) ?? []), device]);
    const known = sysfsOf.get(device.pci.path);
    assert.ok(known === undefined || known === device.pci.sysfs, `${device.pci.path} has one sysfs name (${known} and ${device.pci.sysfs})`);
    sysfsOf.set(device.pci.path, device.pci.sysfs);
  }
  assert.equal(new Set(sysfsOf.values()).size, sysfsOf.size, 'distinct PCI paths have distinct sysfs names');
  for (const [path, sharing] of byPath) {
    if (sharing.length === 1) continue;
    const ids = sharing.map((d) => d.id).join(', ');
    const channels = sharing.every((d) => d.type === 'channel');
    const scsiDisks = sharing.every((d) => d.type === 'block' && d.scsi !== undefined);
    assert.ok(channels || scsiDisks, `${ids} share the PCI path ${path}: only channels or SCSI disks share a controller's`);
    if (scsiDisks) {
      const addresses = sharing.map((d) => `${d.scsi?.target}:${d.scsi?.lun}`);
      assert.equal(new Set(addresses).size, sharing.length, `the SCSI disks ${ids} have distinct SCSI addresses (${addresses.join(', ')})`);
    }
  }
}
