// Field schemas shared by the config sections: paths, ids, sizes.
import { z } from 'zod';

/** sun_path holds 108 bytes including the trailing NUL. */
export const MAX_SOCKET_PATH_BYTES = 107;

/** NUL ends a C string and a line break cannot be written in a QEMU option: neither may appear. */
export const noControl = (value: string) => !/[\0\n\r]/.test(value);

export const absolutePath = z
  .string()
  .min(1)
  .refine((p) => p.startsWith('/'), 'must be an absolute path')
  .refine(noControl, 'must not contain NUL, newline or carriage return');

export const socketPath = absolutePath.refine(
  (p) => Buffer.byteLength(p) <= MAX_SOCKET_PATH_BYTES,
  `a unix socket path must fit in ${MAX_SOCKET_PATH_BYTES} bytes`,
);

/**
 * Ids QEMU already knows by the time devices are added, or will be given later: the backends' own
 * devices (root ports, controllers, the virtio-mem device, the serial port) and what hotplug names
 * (DIMMs, vCPUs). A config device with one of them would make QEMU refuse the command line or a
 * later hotplug fail.
 *
 * `type` too: a device becomes the child property `<id>` of the QOM container /machine/peripheral,
 * and every QOM object already has a property named `type` (the container's only one in QEMU 7.2,
 * per `qom-list`), so QEMU answers "Duplicate device ID 'type'" on the command line and in
 * device_add alike. Ids are case-sensitive there: `Type` works.
 */
export const RESERVED_DEVICE_ID = /^(type|rp\d+|scsi\d+|vmem\d+|vserial\d+|serial\d+|dimm\d+|vcpu\d+|svmm.*)$/;

/**
 * A device id: it names the device in QEMU (and in backend object names derived from it, which
 * QEMU limits to 31 characters), so it is short and plain.
 */
export const deviceId = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_-]{0,26}$/, 'must start with a letter and hold at most 27 letters, digits, "_" or "-"')
  .refine((id) => !RESERVED_DEVICE_ID.test(id), "is reserved for the backend's own devices");

export const positiveInt = (max: number) => z.int().min(1).max(max);
