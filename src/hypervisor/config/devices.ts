// The devices a sandbox can have, as one discriminated union on `type`. Cold-plugged devices are
// listed in the config; block, net, vfio and virtio-fs devices can also be hot-plugged into a running VM.
import { z } from 'zod';
import { absolutePath, deviceId, socketPath } from './fields.ts';

const base = { id: deviceId };

/** A file descriptor of the calling process, handed to QEMU at start or over QMP (SCM_RIGHTS). */
const callerFd = z.int().min(0);

/** The `block` device: a disk image (by path or fd) on virtio-blk or virtio-scsi. */
export const blockDeviceSchema = z
  .strictObject({
    type: z.literal('block'),
    ...base,
    /** The image file or host block device, which QEMU opens itself… */
    path: absolutePath.optional(),
    /**
     * …or an fd of it the caller opened (O_RDONLY for a readOnly disk, O_RDWR otherwise), handed to
     * QEMU as an fd set, so that QEMU never needs access to the path. The caller keeps its fd.
     */
    fd: callerFd.optional(),
    /** virtio-blk: one PCI device per disk. virtio-scsi: a scsi-hd on the VM's virtio-scsi controller. */
    driver: z.enum(['virtio-blk', 'virtio-scsi']).default('virtio-blk'),
    format: z.enum(['raw', 'qcow2']).default('raw'),
    readOnly: z.boolean().default(false),
    /** QEMU's cache modes: none = O_DIRECT; writeback is QEMU's default; unsafe ignores flushes. */
    cache: z.enum(['none', 'writeback', 'writethrough', 'directsync', 'unsafe']).default('writeback'),
    aio: z.enum(['threads', 'native', 'io_uring']).default('threads'),
    /** The serial number the guest sees (/sys/block/…/serial); at most 20 characters. */
    serial: z.string().regex(/^[A-Za-z0-9_.-]{1,20}$/, 'must be 1 to 20 letters, digits, "_", "." or "-"').optional(),
  })
  .superRefine((device, ctx) => {
    if ((device.path === undefined) === (device.fd === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['path'], message: 'give either path (QEMU opens it) or fd (one you opened), not both or neither' });
    }
    if (device.aio === 'native' && device.cache !== 'none' && device.cache !== 'directsync') {
      ctx.addIssue({ code: 'custom', path: ['aio'], message: 'aio "native" needs cache "none" or "directsync" (O_DIRECT)' });
    }
  });

const macAddress = z
  .string()
  .regex(/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/, 'must be six hex octets separated by ":" (52:54:00:12:34:56)')
  .refine((mac) => (parseInt(mac.slice(0, 2), 16) & 1) === 0, 'must be a unicast address (the first octet must be even)')
  // QEMU takes an all-zero MAC as "unset" and silently picks one of its own.
  .refine((mac) => !/^00(:00){5}$/.test(mac), 'must not be 00:00:00:00:00:00')
  .transform((mac) => mac.toLowerCase());

/** The `net` device: a virtio-net NIC on a tap (by name or by fds). */
export const netDeviceSchema = z
  .strictObject({
    type: z.literal('net'),
    ...base,
    /**
     * A tap QEMU opens by name (in its network namespace), or taps the caller opened: one fd, or
     * one per queue (`fds`, e.g. /dev/tapN of a macvtap opened once per queue), with a vhost-net
     * fd per queue if wanted. Fds reach QEMU at start, or over QMP when hot-plugged; the caller
     * keeps its own.
     */
    tap: z.union(
      [
        z.strictObject({ ifname: z.string().regex(/^[A-Za-z0-9_.-]{1,15}$/, 'must be a Linux interface name (1 to 15 letters, digits, "_", "." or "-")') }),
        z.strictObject({ fd: callerFd }),
        z.strictObject({ fds: z.array(callerFd).min(1).max(16), vhostFds: z.array(callerFd).min(1).max(16).optional() }),
      ],
      { error: 'must be { ifname }, { fd } or { fds, vhostFds? }' },
    ),
    mac: macAddress.optional(),
    queues: z.int().min(1).max(16).default(1),
    /** Use the vhost-net kernel accelerator (needs /dev/vhost-net). */
    vhost: z.boolean().default(false),
  })
  .superRefine((device, ctx) => {
    if ('fd' in device.tap && device.queues > 1) {
      ctx.addIssue({ code: 'custom', path: ['queues'], message: 'a tap given as one fd has one queue; give one fd per queue (tap.fds) for more' });
    }
    if ('fds' in device.tap) {
      const { fds, vhostFds } = device.tap;
      if (fds.length > 0 && device.queues !== fds.length) ctx.addIssue({ code: 'custom', path: ['queues'], message: `must equal the number of tap fds (${fds.length}): one fd per queue` });
      if (vhostFds !== undefined && vhostFds.length !== fds.length) {
        ctx.addIssue({ code: 'custom', path: ['tap', 'vhostFds'], message: `must hold one vhost fd per tap fd (${fds.length})` });
      }
      if (vhostFds !== undefined && !device.vhost) ctx.addIssue({ code: 'custom', path: ['vhost'], message: 'must be true when tap.vhostFds are given' });
      const all = [...fds, ...(vhostFds ?? [])];
      if (new Set(all).size !== all.length) ctx.addIssue({ code: 'custom', path: ['tap', 'fds'], message: 'each fd may be given once (a queue needs a descriptor of its own)' });
    }
  });

/** The `vfio` device: a host PCI device passed through (by its sysfs address). */
export const vfioDeviceSchema = z.strictObject({
  type: z.literal('vfio'),
  ...base,
  /** The host PCI address, domain optional: 0000:01:00.0 or 01:00.0. */
  hostAddress: z
    .string()
    .regex(/^([0-9a-fA-F]{4}:)?[0-9a-fA-F]{2}:[01][0-9a-fA-F]\.[0-7]$/, 'must be a PCI address like 0000:01:00.0')
    .transform((address) => (address.length === 7 ? `0000:${address}` : address).toLowerCase()),
});

/** The `vsock` device: vhost-vsock-pci with the guest's context id. */
export const vsockDeviceSchema = z.strictObject({
  type: z.literal('vsock'),
  ...base,
  /** 0-2 are reserved (hypervisor, local, host); 2^32-1 is VMADDR_CID_ANY. */
  guestCid: z.int().min(3, 'must be at least 3 (0, 1 and 2 are reserved)').max(0xfffffffe),
});

/** virtio-fs carries the tag in a 36-byte config field; QEMU's 9p device allows 31 bytes. */
const fsTag = (max: number) => z.string().regex(new RegExp(`^[A-Za-z0-9_.-]{1,${max}}$`), `must be 1 to ${max} letters, digits, "_", "." or "-"`);

/** Why a virtio-fs share is refused on a VM with anonymous guest memory, cold or hot-plugged. */
export const VIRTIO_FS_NEEDS_SHARED_MEMORY = 'virtio-fs needs guest memory the daemon can map: set memory.backing to shared, file or hugepages';

/** The `fs` device with `driver: 'virtio-fs'`: a host directory shared through virtiofsd. */
export const virtioFsDeviceSchema = z
  .strictObject({
    type: z.literal('fs'),
    driver: z.literal('virtio-fs'),
    ...base,
    /** The mount tag the guest uses: mount -t virtiofs <tag> /mnt */
    tag: fsTag(36),
    /** The vhost-user socket of a virtiofsd the caller runs… */
    socketPath: socketPath.optional(),
    /**
     * …or the host directory to share, for which the backend runs virtiofsd itself (a helper of
     * the VM: started before it, listed by getPids, stopped with it). It reaches virtiofsd as
     * `-o source=<dir>`, whose parser (libfuse's) ends an option at a comma and decodes backslash
     * escapes (`\056` is "."), so that `…/\056\056/…` would share a directory outside a prefix
     * check: neither a comma nor a backslash is allowed.
     */
    sharedDir: absolutePath
      .refine((p) => !p.includes(','), 'must not contain a comma (virtiofsd cannot take one)')
      .refine(
        (p) => !p.includes('\\'),
        'must not contain a backslash (virtiofsd decodes backslash escapes such as \\056 for ".", so it would share another directory than the one named)',
      )
      .optional(),
    /** virtiofsd's cache policy for a sharedDir. */
    cache: z.enum(['auto', 'always', 'none']).optional(),
    queueSize: z.union([z.literal(128), z.literal(256), z.literal(512), z.literal(1024)]).default(1024),
  })
  .superRefine((device, ctx) => {
    if ((device.socketPath === undefined) === (device.sharedDir === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['sharedDir'], message: 'give either socketPath (a daemon you run) or sharedDir (the backend runs virtiofsd), not both or neither' });
    }
    if (device.cache !== undefined && device.sharedDir === undefined) {
      ctx.addIssue({ code: 'custom', path: ['cache'], message: 'only applies to a sharedDir (the daemon behind socketPath is yours to configure)' });
    }
  });

/** The `fs` device with `driver: '9p'`: a host directory shared over virtio-9p. */
export const ninePFsDeviceSchema = z.strictObject({
  type: z.literal('fs'),
  driver: z.literal('9p'),
  ...base,
  /** The mount tag the guest uses: mount -t 9p -o trans=virtio <tag> /mnt */
  tag: fsTag(31),
  /** The host directory to share. */
  path: absolutePath,
  securityModel: z.enum(['mapped-xattr', 'mapped-file', 'passthrough', 'none']).default('none'),
  readOnly: z.boolean().default(false),
});

/** The `fs` device: virtio-fs or 9p, by `driver`. */
export const fsDeviceSchema = z.discriminatedUnion('driver', [virtioFsDeviceSchema, ninePFsDeviceSchema]);

/** The `rng` device: virtio-rng fed from a host source. */
export const rngDeviceSchema = z.strictObject({
  type: z.literal('rng'),
  ...base,
  source: absolutePath.default('/dev/urandom'),
});

/** The `balloon` device: virtio-balloon, optionally with guest statistics. */
export const balloonDeviceSchema = z.strictObject({
  type: z.literal('balloon'),
  ...base,
  deflateOnOom: z.boolean().default(true),
  /** Free page reporting: the guest hands freed pages back to the host. */
  freePageReporting: z.boolean().default(false),
  /**
   * Ask the guest's balloon driver for its memory statistics every this many seconds, for
   * stats().memory.balloon.guest. Absent: the guest is not asked.
   */
  statsIntervalSeconds: z.int().min(1).max(3600).optional(),
});

/** A virtio-serial port backed by a unix socket in the runtime directory (an agent channel). */
export const channelDeviceSchema = z.strictObject({
  type: z.literal('channel'),
  ...base,
  /** The port name the guest sees under /sys/class/virtio-ports/…/name. */
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1 to 64 letters, digits, "_", "." or "-"'),
});

/** A pvpanic device: a guest kernel panic becomes a GUEST_PANICKED event. */
export const pvpanicDeviceSchema = z.strictObject({
  type: z.literal('pvpanic'),
  ...base,
});

/** Any device of `devices`, by `type`. */
export const deviceSchema = z.discriminatedUnion('type', [
  blockDeviceSchema,
  netDeviceSchema,
  vfioDeviceSchema,
  vsockDeviceSchema,
  fsDeviceSchema,
  rngDeviceSchema,
  balloonDeviceSchema,
  channelDeviceSchema,
  pvpanicDeviceSchema,
]);

/** The config's devices: ids, channel names and fs tags unique; at most one vsock, balloon and pvpanic. */
export const deviceListSchema = z.array(deviceSchema).superRefine((devices, ctx) => {
  const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
  const seen = new Map<string, number>();
  devices.forEach((device, index) => {
    const first = seen.get(device.id);
    if (first !== undefined) issue([index, 'id'], `duplicates the id of devices[${first}] ('${device.id}')`);
    else seen.set(device.id, index);
  });
  uniqueBy(devices, 'channel', (d) => d.name, (index, name) => issue([index, 'name'], `another channel is already named '${name}'`));
  uniqueBy(devices, 'fs', (d) => d.tag, (index, tag) => issue([index, 'tag'], `another fs device already has the tag '${tag}'`));
  for (const kind of ['vsock', 'balloon', 'pvpanic'] as const) {
    const indexes = devices.flatMap((d, i) => (d.type === kind ? [i] : []));
    for (const index of indexes.slice(1)) issue([index, 'type'], `a VM has at most one ${kind} device`);
  }
});

function uniqueBy<T extends { type: string }, K extends T['type']>(
  devices: readonly T[],
  type: K,
  key: (device: Extract<T, { type: K }>) => string,
  report: (index: number, value: string) => void,
): void {
  const seen = new Set<string>();
  devices.forEach((device, index) => {
    if (device.type !== type) return;
    const value = key(device as Extract<T, { type: K }>);
    if (seen.has(value)) report(index, value);
    seen.add(value);
  });
}

/** Devices that can be added to and removed from a running VM (of the fs devices, virtio-fs only: 9p stays cold). */
export const hotplugDeviceSchema = z.discriminatedUnion('type', [blockDeviceSchema, netDeviceSchema, vfioDeviceSchema, virtioFsDeviceSchema]);

/** A device of the config, parsed (defaults filled). */
export type DeviceConfig = z.output<typeof deviceSchema>;
/** A device as a caller writes it in `devices`. */
export type DeviceConfigInput = z.input<typeof deviceSchema>;
/** The `type` of a device. */
export type DeviceType = DeviceConfig['type'];
/** A `block` device, parsed. */
export type BlockDeviceConfig = z.output<typeof blockDeviceSchema>;
/** A `block` device as a caller writes it. */
export type BlockDeviceInput = z.input<typeof blockDeviceSchema>;
/** A `net` device, parsed. */
export type NetDeviceConfig = z.output<typeof netDeviceSchema>;
/** A `net` device as a caller writes it. */
export type NetDeviceInput = z.input<typeof netDeviceSchema>;
/** A `vfio` device, parsed. */
export type VfioDeviceConfig = z.output<typeof vfioDeviceSchema>;
/** A `vfio` device as a caller writes it. */
export type VfioDeviceInput = z.input<typeof vfioDeviceSchema>;
/** A `vsock` device, parsed. */
export type VsockDeviceConfig = z.output<typeof vsockDeviceSchema>;
/** An `fs` device (virtio-fs or 9p), parsed. */
export type FsDeviceConfig = z.output<typeof fsDeviceSchema>;
/** A virtio-fs share, parsed. */
export type VirtioFsDeviceConfig = z.output<typeof virtioFsDeviceSchema>;
/** A 9p share, parsed. */
export type NinePFsDeviceConfig = z.output<typeof ninePFsDeviceSchema>;
/** An `rng` device, parsed. */
export type RngDeviceConfig = z.output<typeof rngDeviceSchema>;
/** A `balloon` device, parsed. */
export type BalloonDeviceConfig = z.output<typeof balloonDeviceSchema>;
/** A `channel` device, parsed. */
export type ChannelDeviceConfig = z.output<typeof channelDeviceSchema>;
/** A `pvpanic` device, parsed. */
export type PvpanicDeviceConfig = z.output<typeof pvpanicDeviceSchema>;
/** A hot-pluggable device (block, net, vfio or virtio-fs), parsed. */
export type HotplugDeviceConfig = z.output<typeof hotplugDeviceSchema>;
/** What `hotplugAddDevice` takes: a block, net, vfio or virtio-fs device as a caller writes it. */
export type HotplugDeviceInput = z.input<typeof hotplugDeviceSchema>;

/** Every device type, and those that can also be hot-plugged. */
export const DEVICE_TYPES = ['block', 'net', 'vfio', 'vsock', 'fs', 'rng', 'balloon', 'channel', 'pvpanic'] as const satisfies readonly DeviceType[];
/** The device types `hotplugAddDevice` accepts. */
export const HOTPLUGGABLE_DEVICE_TYPES = ['block', 'net', 'vfio', 'fs'] as const satisfies readonly HotplugDeviceConfig['type'][];
// Both lists are complete: a type missing from either fails to compile here.
const _allTypes: Exclude<DeviceType, (typeof DEVICE_TYPES)[number]> extends never ? true : never = true;
const _allHotplug: Exclude<HotplugDeviceConfig['type'], (typeof HOTPLUGGABLE_DEVICE_TYPES)[number]> extends never ? true : never = true;
void _allTypes;
void _allHotplug;
