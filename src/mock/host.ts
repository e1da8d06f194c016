// What the mock asks of the host, as QEMU would find out when it opens things: disk images and boot
// files must exist, taps must exist, a VFIO device must be bound to vfio-pci. Each answer can be
// replaced, so that a test can describe the host it pretends to run on.
import { existsSync, readlinkSync } from 'node:fs';
import { basename } from 'node:path';
import type { DeviceConfig, HotplugDeviceConfig, SandboxConfig } from '../hypervisor/config/index.ts';
import { netnsProblem } from '../util/netns.ts';
import type { AccessProblemFn } from '../hypervisor/host-access.ts';

/** What the mock asks of the host to refuse what QEMU would (missing files, taps, namespaces, access). */
export interface MockHostProbe {
  /** A file, directory or socket exists at this path. */
  exists(path: string): boolean;
  /** A network interface of this name exists (the tap QEMU would open) in the namespace QEMU would run in (undefined: ours). */
  tapExists(ifname: string, netns: string | undefined): boolean;
  /** Why this path is not a network namespace to start in, if it is not. */
  netnsProblem(path: string): string | undefined;
  /** The host PCI device is bound to vfio-pci, so it can be passed through. */
  vfioReady(hostAddress: string): boolean;
  /**
   * Why the VM's identity could not open this path as QEMU would, if it could not. The real probe
   * does not check by default: the mock's uids are bookkeeping that never runs, and checking real
   * modes against them would refuse the root-made files (and the 0600 /dev/kvm) every mock user
   * works with. Pass `host: { accessProblem }` (hypervisor/host-access.ts) to get QEMU's refusals.
   */
  accessProblem: AccessProblemFn;
}

export const realHostProbe: MockHostProbe = {
  exists: (path) => existsSync(path),
  // Another namespace's interfaces are out of sight without entering it: taken as there.
  tapExists: (ifname, netns) => netns !== undefined || existsSync(`/sys/class/net/${ifname}`),
  netnsProblem,
  accessProblem: () => undefined,
  vfioReady: (hostAddress) => {
    try {
      return basename(readlinkSync(`/sys/bus/pci/devices/${hostAddress}/driver`)) === 'vfio-pci';
    } catch {
      return false;
    }
  },
};

/** A host where everything the config names is there. */
export const permissiveHostProbe: MockHostProbe = {
  exists: () => true,
  tapExists: () => true,
  netnsProblem: () => undefined,
  vfioReady: () => true,
  accessProblem: () => undefined,
};

const noSuchFile = 'No such file or directory';

/** Why QEMU would refuse to start with this config (its stderr line), if it would. */
export function startProblem(config: SandboxConfig, host: MockHostProbe): string | undefined {
  const { boot } = config;
  if (!host.exists(boot.kernel)) return `qemu: could not load kernel '${boot.kernel}': ${noSuchFile}`;
  if (boot.initrd && !host.exists(boot.initrd)) return `qemu: could not load initial ram disk '${boot.initrd}'`;
  if (boot.image && !host.exists(boot.image)) return `-blockdev node-name=drv-rootfs: Could not open '${boot.image}': ${noSuchFile}`;
  for (const device of config.devices) {
    const problem = coldDeviceProblem(device, host, config.runtime.netns);
    if (problem) return problem;
  }
  return undefined;
}

function coldDeviceProblem(device: DeviceConfig, host: MockHostProbe, netns: string | undefined): string | undefined {
  switch (device.type) {
    case 'block':
    case 'net':
    case 'vfio':
      return hotplugProblem(device, host, netns)?.message;
    case 'fs':
      if (device.driver === 'virtio-fs' && device.socketPath !== undefined && !host.exists(device.socketPath)) return `Failed to connect to '${device.socketPath}': ${noSuchFile}`;
      if (device.driver === 'virtio-fs' && device.sharedDir !== undefined && !host.exists(device.sharedDir)) return `virtiofsd: cannot open '${device.sharedDir}': ${noSuchFile}`;
      if (device.driver === '9p' && !host.exists(device.path)) return `cannot initialize fsdev '${device.id}': failed to open '${device.path}': ${noSuchFile}`;
      return undefined;
    case 'rng':
      return host.exists(device.source) ? undefined : `Could not open '${device.source}': ${noSuchFile}`;
    default:
      return undefined;
  }
}

/** The QMP step at which QEMU would refuse this device, and what it would say. */
export function hotplugProblem(device: HotplugDeviceConfig, host: MockHostProbe, netns: string | undefined): { step: string; message: string } | undefined {
  switch (device.type) {
    case 'block':
      // A disk given as an fd needs no path: the fd was checked to be open (caller-fds.ts).
      if (device.path === undefined || host.exists(device.path)) return undefined;
      return { step: 'blockdev-add', message: `Could not open '${device.path}': ${noSuchFile}` };
    case 'net':
      if (!('ifname' in device.tap) || host.tapExists(device.tap.ifname, netns)) return undefined;
      return { step: 'netdev_add', message: `could not configure /dev/net/tun (${device.tap.ifname}): Operation not permitted` };
    case 'vfio':
      return host.vfioReady(device.hostAddress)
        ? undefined
        : { step: 'device_add', message: `vfio /sys/bus/pci/devices/${device.hostAddress}: no such host device or not bound to vfio-pci` };
    case 'fs':
      if (device.socketPath !== undefined && !host.exists(device.socketPath)) return { step: 'chardev-add', message: `Failed to connect to '${device.socketPath}': ${noSuchFile}` };
      if (device.sharedDir !== undefined && !host.exists(device.sharedDir)) return { step: 'virtiofsd', message: `virtiofsd: cannot open '${device.sharedDir}': ${noSuchFile}` };
      return undefined;
  }
}
