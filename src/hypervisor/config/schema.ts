// The sandbox config: one backend-neutral description of a VM, limited to what a container sandbox
// needs. Parsing fills defaults; rules that tie fields together are checked on the smallest
// section that holds them, so most mistakes are reported together.
import { z } from 'zod';
import { v4 as uuidv4 } from 'uuid';
import { deviceListSchema, VIRTIO_FS_NEEDS_SHARED_MEMORY } from './devices.ts';
import { absolutePath, noControl, positiveInt } from './fields.ts';
import { ARCHITECTURES, archProfile, MACHINE_TYPES } from '../arch-profiles.ts';

/** The device id the root filesystem image (boot.image) gets. */
const ROOTFS_ID = 'rootfs';
/** x86 Linux's COMMAND_LINE_SIZE. */
export const MAX_KERNEL_CMDLINE_BYTES = 2048;
/** x86_64 Linux hot(un)plugs memory in blocks of this size; DIMMs must be a multiple of it. */
export const GUEST_MEMORY_BLOCK_MiB = 128;
/** Boot and virtio-mem sizes must be multiples of this (huge pages, virtio-mem's default block). */
export const MEMORY_ALIGN_MiB = 2;

const machineSchema = z
  .strictObject({
    /** The guest architecture; it decides the machine and what it can do (hypervisor/arch-profiles.ts). */
    arch: z.enum(ARCHITECTURES).default('x86_64'),
    /** The architecture's machine: q35 on x86_64, virt on aarch64. Default: that one. */
    type: z.enum(MACHINE_TYPES).optional(),
    /** kvm in production; tcg (software emulation) where KVM is unavailable. */
    accel: z.enum(['kvm', 'tcg']).default('kvm'),
    /** QEMU's -cpu model. Default: host under kvm, max under tcg. */
    cpuModel: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.+-]*$/, 'must be a QEMU CPU model name such as host, max or Skylake-Server')
      // `-cpu help` lists the models and exits instead of starting a VM.
      .refine((model) => model !== 'help', 'must be a QEMU CPU model name such as host, max or Skylake-Server')
      .optional(),
  })
  .superRefine((machine, ctx) => {
    const expected = archProfile(machine.arch).machineType;
    if (machine.type !== undefined && machine.type !== expected) {
      ctx.addIssue({ code: 'custom', path: ['type'], message: `must be "${expected}" for machine.arch "${machine.arch}"` });
    }
  });

const bootSchema = z
  .strictObject({
    kernel: absolutePath,
    /** An initramfs. */
    initrd: absolutePath.optional(),
    /** Or a root filesystem image, attached read-only as the first virtio-blk disk (/dev/vda). */
    image: absolutePath.optional(),
    kernelParams: z
      .array(
        z
          .string()
          .min(1)
          .refine(noControl, 'must not contain NUL, newline or carriage return')
          .refine(isOneKernelParam, 'must be one kernel parameter of printable ASCII: spaces only inside a double-quoted value, quotes balanced'),
      )
      .default([]),
  })
  .superRefine((boot, ctx) => {
    if (boot.initrd && boot.image) ctx.addIssue({ code: 'custom', path: ['image'], message: 'give an initrd or an image, not both' });
    const cmdline = boot.kernelParams.join(' ');
    if (Buffer.byteLength(cmdline) > MAX_KERNEL_CMDLINE_BYTES - 64) {
      ctx.addIssue({ code: 'custom', path: ['kernelParams'], message: `the kernel command line must stay under ${MAX_KERNEL_CMDLINE_BYTES - 64} bytes` });
    }
  });

/**
 * The kernel splits its command line at whitespace outside double quotes, and an unclosed quote
 * runs to the end: either would let one entry become several parameters (or swallow the rest).
 * Its isspace() also matches byte 0xa0, which many UTF-8 characters contain: only ASCII is safe.
 */
function isOneKernelParam(param: string): boolean {
  let quoted = false;
  for (const char of param) {
    if (char < ' ' || char > '~') return false;
    if (char === '"') quoted = !quoted;
    else if (char === ' ' && !quoted) return false;
  }
  return !quoted;
}

const cpusSchema = z
  .strictObject({
    boot: positiveInt(255).default(1),
    /** The most vCPUs resizeVCPUs may reach. Default: boot. */
    max: positiveInt(255).optional(),
  })
  .superRefine((cpus, ctx) => {
    if (cpus.max !== undefined && cpus.boot > cpus.max) {
      ctx.addIssue({ code: 'custom', path: ['boot'], message: `must not exceed cpus.max (${cpus.boot} > ${cpus.max})` });
    }
  });

const backingSchema = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('anonymous') }),
  /** memfd, shared with other processes: what vhost-user and virtio-fs need. */
  z.strictObject({ type: z.literal('shared') }),
  z.strictObject({ type: z.literal('file'), path: absolutePath }),
  z.strictObject({ type: z.literal('hugepages'), path: absolutePath.default('/dev/hugepages') }),
]);

/**
 * The least boot memory: what a small Linux guest needs to boot with room to spare. The test guest
 * (Debian's 6.1 cloud kernel, a 1.7 MB busybox initrd) resets itself at 64 MiB, hangs at 72 and
 * boots at 80; a guest that needs more shows it as exitInfo.reason 'guest-reset'.
 */
export const MIN_BOOT_MiB = 128;

const memorySchema = z
  .strictObject({
    bootMiB: z.int().min(MIN_BOOT_MiB, `must be at least ${MIN_BOOT_MiB} MiB (a Linux guest needs about that much to boot)`).max(16 * 1024 * 1024).default(2048),
    /** The most memory resizeMemory may reach. Default: bootMiB. */
    maxMiB: z.int().min(MIN_BOOT_MiB, `must be at least ${MIN_BOOT_MiB} MiB`).max(16 * 1024 * 1024).optional(),
    /** virtio-mem grows and shrinks; dimm only grows; none keeps the boot size. */
    hotplug: z.enum(['virtio-mem', 'dimm', 'none']).default('none'),
    /** DIMM slots (dimm hotplug only): each growth step takes one. */
    slots: z.int().min(1).max(256).default(8),
    backing: backingSchema.prefault({ type: 'anonymous' }),
    /** Allocate all guest memory up front. */
    prealloc: z.boolean().default(false),
  })
  .superRefine((memory, ctx) => {
    const issue = (path: string, message: string) => ctx.addIssue({ code: 'custom', path: [path], message });
    const max = memory.maxMiB ?? memory.bootMiB;
    if (memory.bootMiB % MEMORY_ALIGN_MiB !== 0) issue('bootMiB', `must be a multiple of ${MEMORY_ALIGN_MiB} MiB`);
    if (memory.bootMiB > max) issue('bootMiB', `must not exceed memory.maxMiB (${memory.bootMiB} > ${max})`);
    if (memory.hotplug === 'none' && max > memory.bootMiB) {
      issue('maxMiB', 'is larger than bootMiB but memory.hotplug is "none": choose "virtio-mem" or "dimm"');
    }
    if (memory.hotplug !== 'none' && max <= memory.bootMiB) {
      issue('maxMiB', `must be larger than bootMiB for memory.hotplug "${memory.hotplug}"`);
    }
    if (memory.hotplug === 'virtio-mem' && max % MEMORY_ALIGN_MiB !== 0) issue('maxMiB', `must be a multiple of ${MEMORY_ALIGN_MiB} MiB`);
    if (memory.hotplug === 'dimm' && (max - memory.bootMiB) % GUEST_MEMORY_BLOCK_MiB !== 0) {
      issue('maxMiB', `maxMiB - bootMiB must be a multiple of the guest's ${GUEST_MEMORY_BLOCK_MiB} MiB memory block for dimm hotplug`);
    }
  });

const consoleSchema = z.strictObject({
  /** The guest serial console (ttyS0) on a unix socket in the runtime directory. */
  socket: z.boolean().default(true),
  /** Also (or only) append everything the console prints to this file. */
  logFile: absolutePath.optional(),
});

/** (uid_t)-1 means "leave unchanged" to setreuid/setregid: it must never reach them. */
const unixId = z.int().min(0).max(0xfffffffe);

const userSchema = z.union(
  [
    /**
     * As root: a uid and gid of the VM's own, leased from a reserved range (plus the kvm group under
     * kvm), so that an escaped QEMU reaches no other VM. Anyone else: QEMU stays that user.
     */
    z.literal('auto'),
    /** The user this process runs as: as root, only with allowRoot. */
    z.literal('current'),
    /** A fixed identity: VMs that share it are not isolated from each other. */
    z.strictObject({ uid: unixId, gid: unixId, groups: z.array(unixId).optional() }),
  ],
  { error: 'must be "auto", "current" or { uid, gid, groups? }' },
);

const hardeningSchema = z.strictObject({
  /** QEMU's seccomp filter, denying obsolete, privilege-raising, spawning and resource-control calls. */
  seccomp: z.boolean().default(true),
  /** Who QEMU runs as. */
  user: userSchema.default('auto'),
  /** Let QEMU run as root (user 'current' under root, or uid 0): an escaped guest then owns the host. */
  allowRoot: z.boolean().default(false),
});

const runtimeSchema = z.strictObject({
  /** The VM's private directory (sockets, pidfile, state). Default: <base>/<id>, kept short. */
  dir: absolutePath.optional(),
  /** The QEMU binary: a path, or a name looked up in PATH once, at createVM. */
  /** Default: the architecture's (qemu-system-x86_64, qemu-system-aarch64). */
  qemuPath: z.string().min(1).refine(noControl, 'must not contain NUL, newline or carriage return').optional(),
  /** QEMU outlives this process (for re-attach) instead of dying with it. */
  detached: z.boolean().default(false),
  /** The virtiofsd run for virtio-fs sharedDir devices. Default: the first of the usual locations. */
  virtiofsdPath: z.string().min(1).refine(noControl, 'must not contain NUL, newline or carriage return').optional(),
  /** The exec helper that drops privileges and closes fds before QEMU runs. Default: the one built with the package. */
  launcherPath: absolutePath.optional(),
  /**
   * The pod's network namespace (/run/netns/<name> or /proc/<pid>/ns/net): QEMU and its helpers
   * start inside it, so the taps a CNI plugin made there are the ones QEMU opens. Must exist at
   * createVM; by default they stay in the runtime's own namespace.
   */
  netns: absolutePath.optional(),
});

const hotplugSchema = z.strictObject({
  /** PCIe root ports reserved at boot: each holds one hot-plugged PCI device. */
  rootPorts: z.int().min(0).max(24).default(2),
  /**
   * Allow removing vCPUs under tcg. QEMU 7.2's software emulation corrupts itself when a vCPU is
   * unplugged (the next device_add or device_del crashes it), so this is off, and once a vCPU has
   * been removed the VM refuses further device changes. KVM is not affected.
   */
  tcgVcpuUnplug: z.boolean().default(false),
});

/** The zod schema of the sandbox config: `parseSandboxConfig` applies it. */
export const sandboxConfigSchema = z
  .strictObject({
    /** The VM id (Kata passes the sandbox id). Default: a fresh uuid. */
    id: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'must be 1 to 64 letters, digits, "_", "." or "-", starting with a letter or digit')
      .optional(),
    machine: machineSchema.prefault({}),
    boot: bootSchema,
    cpus: cpusSchema.prefault({}),
    memory: memorySchema.prefault({}),
    console: consoleSchema.prefault({}),
    devices: deviceListSchema.default([]),
    hotplug: hotplugSchema.prefault({}),
    hardening: hardeningSchema.prefault({}),
    runtime: runtimeSchema.prefault({}),
  })
  .superRefine(
    (config, ctx) => {
      const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
      config.devices.forEach((device, index) => {
        if (config.boot.image && device.id === ROOTFS_ID) issue(['devices', index, 'id'], `'${ROOTFS_ID}' is the id of the disk boot.image is attached as`);
        if (device.type === 'fs' && device.driver === 'virtio-fs' && config.memory.backing.type === 'anonymous') {
          issue(['devices', index, 'driver'], VIRTIO_FS_NEEDS_SHARED_MEMORY);
        }
      });
    },
    // These rules tie sections together; they run whenever those sections parsed, so that a
    // mistake elsewhere does not hide them.
    { when: sectionsParsed('boot', 'memory', 'devices') },
  )
  .superRefine(
    (config, ctx) => {
      const issue = (path: (string | number)[], message: string) => ctx.addIssue({ code: 'custom', path, message });
      const profile = archProfile(config.machine.arch);
      const on = `on machine.arch "${profile.arch}"`;
      if (!profile.cpuHotplug && config.cpus.max !== undefined && config.cpus.max > config.cpus.boot) {
        issue(['cpus', 'max'], `must equal cpus.boot ${on}: ${profile.cpuHotplugMissing}`);
      }
      if (!profile.cpuHotplug && config.hotplug.tcgVcpuUnplug) issue(['hotplug', 'tcgVcpuUnplug'], `does not apply ${on}: ${profile.cpuHotplugMissing}`);
      const kind = config.memory.hotplug;
      if (kind !== 'none' && !profile.memoryHotplug.includes(kind)) issue(['memory', 'hotplug'], `"${kind}" is not available ${on}: ${profile.memoryHotplugMissing}`);
      config.boot.kernelParams.forEach((param, index) => {
        const tty = /^console=([^,]*)/.exec(param)?.[1];
        if (tty !== undefined && profile.foreignConsoleTty.test(tty)) {
          issue(['boot', 'kernelParams', index], `names ${tty}, a serial port ${on} has not: its console is ${profile.consoleTty}`);
        }
      });
    },
    { when: sectionsParsed('machine', 'boot', 'cpus', 'memory', 'hotplug') },
  )
  .transform((config) => ({
    ...config,
    id: config.id ?? uuidv4(),
    machine: {
      ...config.machine,
      type: archProfile(config.machine.arch).machineType,
      cpuModel: config.machine.cpuModel ?? (config.machine.accel === 'kvm' ? 'host' : 'max'),
    },
    runtime: { ...config.runtime, qemuPath: config.runtime.qemuPath ?? archProfile(config.machine.arch).qemuBinary },
    cpus: { boot: config.cpus.boot, max: config.cpus.max ?? config.cpus.boot },
    memory: { ...config.memory, maxMiB: config.memory.maxMiB ?? config.memory.bootMiB },
  }));

/**
 * True unless the config itself, or one of `sections`, holds an issue that stops parsing (its value
 * may then be of any shape).
 */
function sectionsParsed(...sections: string[]): (payload: z.core.ParsePayload) => boolean {
  return (payload) =>
    !payload.issues.some((issue) => {
      if ((issue as { continue?: boolean }).continue === true) return false;
      const section = issue.path?.[0];
      return section === undefined || sections.includes(String(section));
    });
}

/**
 * What the schema accepts and returns, as zod infers them. The exported SandboxConfigInput and
 * SandboxConfig (types.ts) are the same types written out with their documentation; a test proves
 * they are equal.
 */
export type InferredSandboxConfigInput = z.input<typeof sandboxConfigSchema>;
export type InferredSandboxConfig = z.output<typeof sandboxConfigSchema>;
