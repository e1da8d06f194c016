// Representative sandbox configs of each architecture, shared by the golden argv tests (with fixed
// paths) and by the integration test that starts each of them under a real QEMU of its
// architecture (with paths to real files). A config is a function of the host environment: the
// files and taps it names. The aarch64 configs show what its profile changes: virt with GICv3, the
// cheap pointer authentication under TCG, the PL011 console, no driftfix, no vCPU or DIMM hotplug.
import type { Architecture } from '../../src/hypervisor/arch-profiles.ts';
import type { SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import type { HostProbe } from '../../src/qemu/devices/index.ts';

export interface MatrixEnv {
  guest: { kernel: string; initrd: string; kernelParams: string[] };
  /** Holds disk images, shared directories, backing files and the virtio-fs socket. */
  dir: string;
  /** A host block device (QEMU's host_device driver). */
  blockDevice: string;
  /** Taps QEMU opens by name (one multi-queue), and the one the caller opens and hands over. */
  taps: { multiQueue: string; single: string; byFd: string };
  /** The caller's fd of the `byFd` tap. */
  tapFd: number;
  /** A hugetlbfs mount. */
  hugepages: string;
}

export interface MatrixEntry {
  name: string;
  /** What the entry shows, one line (it heads its golden file). */
  description: string;
  config(env: MatrixEnv): SandboxConfigInput;
}

/** The fixed environment of the golden files. */
export const GOLDEN_ENV: MatrixEnv = {
  guest: { kernel: '/opt/svmm/vmlinuz', initrd: '/opt/svmm/initrd.img', kernelParams: ['console=ttyS0', 'quiet', 'panic=0'] },
  dir: '/srv/svmm',
  blockDevice: '/dev/sdx',
  taps: { multiQueue: 'tap-mq0', single: 'tap0', byFd: 'tap-fd0' },
  tapFd: 7,
  hugepages: '/dev/hugepages',
};

export const GOLDEN_RUNTIME_DIR = '/run/sandbox-vmm/golden';

/** Only the golden environment's block device is one. */
export const goldenHost: HostProbe = { isBlockDevice: (path) => path === GOLDEN_ENV.blockDevice, isBlockDeviceFd: () => false };

/** Where the virtio-fs daemon of a socket shares its files from (not part of the config). */
export function virtioFsSourceDir(socketPath: string): string {
  return `${socketPath}.d`;
}

// These configs are about the command line, not privileges: QEMU runs as this process's user, root
// when the tests run as root, which the library only allows with allowRoot. Identities are covered
// by 'minimal' (the default: a leased uid under root) and 'seccomp-off-custom-user' (a fixed one).
const current = { user: 'current', allowRoot: true } as const;
const tcg = { accel: 'tcg' } as const;
const armTcg = { arch: 'aarch64', accel: 'tcg' } as const;

/** The arm64 guest's parameters: its console is the PL011 (ttyAMA0). */
export const ARM64_KERNEL_PARAMS = ['console=ttyAMA0', 'quiet', 'panic=0'];

function guestBoot(env: MatrixEnv, kernelParams: string[] = env.guest.kernelParams) {
  return { kernel: env.guest.kernel, initrd: env.guest.initrd, kernelParams };
}

/** One device of each kind (two channels): the every-device-kind configs of both architectures. */
function everyDeviceKind(env: MatrixEnv): NonNullable<SandboxConfigInput['devices']> {
  return [
    { type: 'block', id: 'disk0', path: `${env.dir}/disk0.img`, serial: 'SVMM-DISK0' },
    { type: 'block', id: 'disk1', path: `${env.dir}/disk1.qcow2`, format: 'qcow2', driver: 'virtio-scsi', readOnly: true },
    { type: 'net', id: 'net0', tap: { ifname: env.taps.single }, mac: '52:54:00:AB:CD:EF' },
    { type: 'vfio', id: 'gpu0', hostAddress: '0000:3b:00.0' },
    { type: 'vsock', id: 'vsock0', guestCid: 42 },
    { type: 'fs', driver: 'virtio-fs', id: 'vfs0', tag: 'shared-vfs', socketPath: `${env.dir}/vfs.sock` },
    { type: 'fs', driver: '9p', id: 'p9fs0', tag: 'shared-9p', path: `${env.dir}/share`, readOnly: true },
    { type: 'rng', id: 'rng0' },
    { type: 'balloon', id: 'balloon0', deflateOnOom: false, freePageReporting: true },
    { type: 'channel', id: 'agent', name: 'agent.0' },
    { type: 'channel', id: 'logs', name: 'org.svmm.logs.0' },
    { type: 'pvpanic', id: 'panic0' },
  ];
}

export const X86_64_MATRIX: readonly MatrixEntry[] = [
  {
    name: 'minimal',
    description: 'only a kernel; a uuid id adds -uuid; QEMU runs as the default user',
    config: (env) => ({ id: '0f8fad5b-d9cb-469f-a165-70867728950e', machine: tcg, boot: { kernel: env.guest.kernel } }),
  },
  {
    name: 'initrd-boot',
    description: 'kernel, initramfs and parameters; 2 of at most 4 vCPUs',
    config: (env) => ({ id: 'vm-initrd', machine: tcg, boot: guestBoot(env), cpus: { boot: 2, max: 4 }, memory: { bootMiB: 256 }, hardening: current }),
  },
  {
    name: 'rootfs-image',
    description: 'a root filesystem image as /dev/vda; the root defaults come before the caller\'s parameters',
    config: (env) => ({
      id: 'vm-rootfs',
      machine: tcg,
      boot: { kernel: env.guest.kernel, image: `${env.dir}/rootfs.img`, kernelParams: ['console=ttyS0', 'rw'] },
      memory: { bootMiB: 256 },
      hardening: current,
    }),
  },
  {
    name: 'virtio-mem',
    description: 'virtio-mem from 256 MiB up to 1280 MiB, with an agent channel',
    config: (env) => ({
      id: 'vm-virtio-mem',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' },
      devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }],
      hardening: current,
    }),
  },
  {
    name: 'dimm',
    description: 'DIMM hotplug: 4 slots, up to 1280 MiB',
    config: (env) => ({ id: 'vm-dimm', machine: tcg, boot: guestBoot(env), memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'dimm', slots: 4 }, hardening: current }),
  },
  {
    name: 'backing-shared-prealloc',
    description: 'memfd guest memory, preallocated; the virtio-mem region is shared too',
    config: (env) => ({
      id: 'vm-shared',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 128, maxMiB: 256, hotplug: 'virtio-mem', backing: { type: 'shared' }, prealloc: true },
      hardening: current,
    }),
  },
  {
    name: 'backing-file-prealloc',
    description: 'guest memory in files under a directory, preallocated, with DIMM hotplug',
    config: (env) => ({
      id: 'vm-file',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 128, maxMiB: 384, hotplug: 'dimm', slots: 2, backing: { type: 'file', path: `${env.dir}/mem` }, prealloc: true },
      hardening: current,
    }),
  },
  {
    name: 'backing-hugepages-prealloc',
    description: 'guest memory on huge pages, preallocated',
    config: (env) => ({
      id: 'vm-hugepages',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 128, backing: { type: 'hugepages', path: env.hugepages }, prealloc: true },
      hardening: current,
    }),
  },
  {
    name: 'every-device-kind',
    description: 'one device of each kind (two channels), on shared memory for virtio-fs',
    config: (env) => ({
      id: 'vm-every-device',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256, backing: { type: 'shared' } },
      hotplug: { rootPorts: 2 },
      devices: everyDeviceKind(env),
      hardening: current,
    }),
  },
  {
    name: 'disk-cache-modes',
    description: 'virtio-blk disks in every cache mode and aio engine; raw and qcow2; read-only with a serial',
    config: (env) => ({
      id: 'vm-disks',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256 },
      devices: [
        { type: 'block', id: 'wb', path: `${env.dir}/wb.img` },
        { type: 'block', id: 'wt', path: `${env.dir}/wt.img`, cache: 'writethrough' },
        { type: 'block', id: 'direct', path: `${env.dir}/direct.img`, cache: 'none', aio: 'native' },
        { type: 'block', id: 'dsync', path: `${env.dir}/dsync.img`, cache: 'directsync', aio: 'io_uring' },
        { type: 'block', id: 'unsafe', path: `${env.dir}/unsafe.img`, cache: 'unsafe' },
        { type: 'block', id: 'ro', path: `${env.dir}/ro.qcow2`, format: 'qcow2', readOnly: true, serial: 'RO_1.0' },
      ],
      hardening: current,
    }),
  },
  {
    name: 'scsi-disks',
    description: 'three disks on one virtio-scsi controller, one of them a host block device',
    config: (env) => ({
      id: 'vm-scsi',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256 },
      devices: [
        { type: 'block', id: 'sda', path: `${env.dir}/sda.img`, driver: 'virtio-scsi' },
        { type: 'block', id: 'sdb', path: `${env.dir}/sdb.qcow2`, driver: 'virtio-scsi', format: 'qcow2', readOnly: true, serial: 'SCSI-B' },
        { type: 'block', id: 'sdc', path: env.blockDevice, driver: 'virtio-scsi', cache: 'none' },
      ],
      hardening: current,
    }),
  },
  {
    name: 'taps',
    description: 'a 4-queue tap QEMU opens by name, and a tap the caller hands over (QEMU\'s fd 5, after the QMP and console sockets)',
    config: (env) => ({
      id: 'vm-taps',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256 },
      hotplug: { rootPorts: 0 },
      devices: [
        { type: 'net', id: 'mq0', tap: { ifname: env.taps.multiQueue }, queues: 4, mac: '52:54:00:00:00:01' },
        { type: 'net', id: 'fdnet0', tap: { fd: env.tapFd }, mac: '52:54:00:00:00:02' },
      ],
      hardening: current,
    }),
  },
  {
    name: 'vfio-root-ports',
    description: 'two VFIO devices, each on a root port of its own after the two hotplug ports',
    config: (env) => ({
      id: 'vm-vfio',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256 },
      hotplug: { rootPorts: 2 },
      devices: [
        { type: 'vfio', id: 'nic0', hostAddress: '01:00.1' },
        { type: 'rng', id: 'rng0' },
        { type: 'vfio', id: 'gpu0', hostAddress: '0000:AF:1F.7' },
      ],
      hardening: current,
    }),
  },
  {
    name: 'many-root-ports',
    description: '20 hotplug root ports and one VFIO port: a slot each at function 0, chassis 1-21',
    config: (env) => ({
      id: 'vm-ports',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256 },
      hotplug: { rootPorts: 20 },
      devices: [{ type: 'vfio', id: 'vf0', hostAddress: '02:00.0' }],
      hardening: current,
    }),
  },
  {
    name: 'full-root-bus',
    description: 'all 30 root bus slots taken: a root image, virtio-mem, 24 hotplug root ports, then a channel, an rng, a VFIO port and pvpanic at 0x1e',
    config: (env) => ({
      id: 'vm-full-bus',
      machine: tcg,
      boot: { kernel: env.guest.kernel, image: `${env.dir}/rootfs.img`, kernelParams: ['console=ttyS0'] },
      memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' },
      hotplug: { rootPorts: 24 },
      devices: [
        { type: 'channel', id: 'agent', name: 'agent.0' },
        { type: 'rng', id: 'rng0' },
        { type: 'vfio', id: 'vf0', hostAddress: '02:00.0' },
        { type: 'pvpanic', id: 'panic0' },
      ],
      hardening: current,
    }),
  },
  {
    name: 'console-socket-and-log',
    description: 'the serial console on a socket, also appended to a log file',
    config: (env) => ({ id: 'vm-console-log', machine: tcg, boot: guestBoot(env), memory: { bootMiB: 256 }, console: { socket: true, logFile: `${env.dir}/console.log` }, hardening: current }),
  },
  {
    name: 'console-log-only',
    description: 'the serial console only into a log file',
    config: (env) => ({ id: 'vm-log-only', machine: tcg, boot: guestBoot(env), memory: { bootMiB: 256 }, console: { socket: false, logFile: `${env.dir}/console-only.log` }, hardening: current }),
  },
  {
    name: 'no-console',
    description: 'no serial console at all',
    config: (env) => ({ id: 'vm-no-console', machine: tcg, boot: guestBoot(env), memory: { bootMiB: 256 }, console: { socket: false }, hardening: current }),
  },
  {
    name: 'seccomp-off-custom-user',
    description: 'no seccomp filter; QEMU runs as uid/gid 65534 (the user is applied at spawn, not in the argv)',
    config: (env) => ({
      id: 'vm-no-seccomp',
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256 },
      hardening: { seccomp: false, user: { uid: 65534, gid: 65534, groups: [65534] } },
    }),
  },
  {
    name: 'kvm',
    description: 'KVM: host CPU model by default and the kvm-pit tick policy',
    config: (env) => ({
      id: 'vm-kvm',
      boot: guestBoot(env),
      cpus: { boot: 2, max: 8 },
      memory: { bootMiB: 512, maxMiB: 2048, hotplug: 'virtio-mem' },
      devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }],
      hardening: current,
    }),
  },
];

export const ARM64_MATRIX: readonly MatrixEntry[] = [
  {
    name: 'arm64-minimal',
    description: 'aarch64: only a kernel; virt with GICv3, -cpu max with the cheap pointer authentication, the console on the PL011',
    config: (env) => ({ id: '7c9e6679-7425-40de-944b-e07fc1f90ae7', machine: armTcg, boot: { kernel: env.guest.kernel } }),
  },
  {
    name: 'arm64-initrd-boot',
    description: 'aarch64: kernel, initramfs and parameters; 2 vCPUs (virt cannot hot-plug more)',
    config: (env) => ({ id: 'arm-initrd', machine: armTcg, boot: guestBoot(env, ARM64_KERNEL_PARAMS), cpus: { boot: 2 }, memory: { bootMiB: 256 }, hardening: current }),
  },
  {
    name: 'arm64-virtio-mem',
    description: 'aarch64: virtio-mem from 256 MiB up to 1280 MiB, with an agent channel and four hotplug root ports',
    config: (env) => ({
      id: 'arm-virtio-mem',
      machine: armTcg,
      boot: guestBoot(env, ARM64_KERNEL_PARAMS),
      memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' },
      hotplug: { rootPorts: 4 },
      devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }],
      hardening: current,
    }),
  },
  {
    name: 'arm64-every-device-kind',
    description: 'aarch64: one device of each kind (two channels), on shared memory for virtio-fs',
    config: (env) => ({
      id: 'arm-every-device',
      machine: armTcg,
      boot: guestBoot(env, ARM64_KERNEL_PARAMS),
      memory: { bootMiB: 256, backing: { type: 'shared' } },
      devices: everyDeviceKind(env),
      hardening: current,
    }),
  },
  {
    name: 'arm64-rootfs-image',
    description: 'aarch64: a root filesystem image as /dev/vda; the console also appended to a log file',
    config: (env) => ({
      id: 'arm-rootfs',
      machine: armTcg,
      boot: { kernel: env.guest.kernel, image: `${env.dir}/rootfs.img`, kernelParams: ['console=ttyAMA0', 'rw'] },
      memory: { bootMiB: 256 },
      console: { socket: true, logFile: `${env.dir}/arm-console.log` },
      hardening: current,
    }),
  },
  {
    name: 'arm64-no-console',
    description: 'aarch64: no serial console at all (the PL011 stays unconnected); seccomp off',
    config: (env) => ({ id: 'arm-no-console', machine: armTcg, boot: guestBoot(env, ARM64_KERNEL_PARAMS), memory: { bootMiB: 256 }, console: { socket: false }, hardening: { ...current, seccomp: false } }),
  },
  {
    name: 'arm64-kvm',
    description: 'aarch64 under KVM: the host CPU and the host GIC version, no pointer authentication property',
    config: (env) => ({
      id: 'arm-kvm',
      machine: { arch: 'aarch64' },
      boot: guestBoot(env, ARM64_KERNEL_PARAMS),
      cpus: { boot: 2 },
      memory: { bootMiB: 512, maxMiB: 2048, hotplug: 'virtio-mem' },
      devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }],
      hardening: current,
    }),
  },
];

/** Each architecture's configs, each run by the QEMU of its architecture. */
export const MATRICES: Readonly<Record<Architecture, readonly MatrixEntry[]>> = { x86_64: X86_64_MATRIX, aarch64: ARM64_MATRIX };
