// What hotplugAddDevice refuses before anything is sent, the same for every backend: kinds that are
// only ever cold-plugged, 9p shares, and virtio-fs shares a VM cannot serve (guest memory its
// daemon cannot map, or a mount tag already taken).
import {
  ConfigError,
  DEVICE_TYPES,
  HOTPLUGGABLE_DEVICE_TYPES,
  VIRTIO_FS_NEEDS_SHARED_MEMORY,
  type HotplugDeviceConfig,
  type SandboxConfig,
  type VirtioFsDeviceConfig,
} from './config/index.ts';
import { UnsupportedOperationError } from './errors.ts';

/** Refuses, by its raw input, a device kind that cannot be hot-plugged at all (before validation names other fields). */
export function assertHotpluggableKind(input: unknown): void {
  const { type, driver } = (input ?? {}) as { type?: unknown; driver?: unknown };
  if (typeof type !== 'string') return;
  if ((DEVICE_TYPES as readonly string[]).includes(type) && !(HOTPLUGGABLE_DEVICE_TYPES as readonly string[]).includes(type)) {
    throw new UnsupportedOperationError('hotplugAddDevice', `${type} devices can only be cold-plugged (list them in the config's devices)`);
  }
  if (type === 'fs' && driver === '9p') {
    throw new UnsupportedOperationError('hotplugAddDevice', '9p shares can only be cold-plugged (list them in the config\'s devices); virtio-fs shares can be hot-plugged');
  }
}

/** Whether a VM of this config can take a virtio-fs share while it runs: its guest memory is shared. */
export function fsHotplugSupported(config: SandboxConfig | undefined): boolean {
  return config !== undefined && config.memory.backing.type !== 'anonymous';
}

/**
 * Refuses a virtio-fs share this VM cannot serve, with the ConfigError a cold one would get: guest
 * memory the daemon cannot map (`device.driver`), or a mount tag another share has (`device.tag`).
 * `plugged` are the devices hot-plugged now.
 */
export function assertFsHotplugFits(config: SandboxConfig, device: HotplugDeviceConfig, plugged: readonly HotplugDeviceConfig[]): void {
  if (device.type !== 'fs') return;
  if (!fsHotplugSupported(config)) throw new ConfigError([{ path: 'device.driver', message: VIRTIO_FS_NEEDS_SHARED_MEMORY }]);
  const tags = [...config.devices, ...plugged].flatMap((d) => (d.type === 'fs' ? [d.tag] : []));
  if (tags.includes(device.tag)) throw new ConfigError([{ path: 'device.tag', message: `another fs device already has the tag '${device.tag}'` }]);
}

/** The virtio-fs devices among `devices`. */
export function virtioFsDevices<T extends { type: string }>(devices: readonly T[]): (T & VirtioFsDeviceConfig)[] {
  return devices.filter((d): d is T & VirtioFsDeviceConfig => d.type === 'fs' && (d as { driver?: unknown }).driver === 'virtio-fs');
}
