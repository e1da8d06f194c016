// Representative aarch64 (virt) sandbox configs, as test/helpers/argv-matrix.ts has them for x86_64:
// golden argv files (test/unit/argv/golden/arm64-*.txt) and the integration test that starts each
// of them paused under a real qemu-system-aarch64. Each config shows what the aarch64 profile
// changes: virt with GICv3, the cheap pointer authentication under TCG, the PL011 console, no
// driftfix, no vCPU or DIMM hotplug.
import type { MatrixEntry, MatrixEnv } from './argv-matrix.ts';

const current = { user: 'current', allowRoot: true } as const;
const tcg = { arch: 'aarch64', accel: 'tcg' } as const;

/** The arm64 guest's parameters: its console is the PL011 (ttyAMA0). */
export const ARM64_KERNEL_PARAMS = ['console=ttyAMA0', 'quiet', 'panic=0'];

function guestBoot(env: MatrixEnv) {
  return { kernel: env.guest.kernel, initrd: env.guest.initrd, kernelParams: ARM64_KERNEL_PARAMS };
}

export const ARM64_MATRIX: readonly MatrixEntry[] = [
  {
    name: 'arm64-minimal',
    description: 'aarch64: only a kernel; virt with GICv3, -cpu max with the cheap pointer authentication, the console on the PL011',
    config: (env) => ({ id: '7c9e6679-7425-40de-944b-e07fc1f90ae7', machine: tcg, boot: { kernel: env.guest.kernel } }),
  },
  {
    name: 'arm64-initrd-boot',
    description: 'aarch64: kernel, initramfs and parameters; 2 vCPUs (virt cannot hot-plug more)',
    config: (env) => ({ id: 'arm-initrd', machine: tcg, boot: guestBoot(env), cpus: { boot: 2 }, memory: { bootMiB: 256 }, hardening: current }),
  },
  {
    name: 'arm64-virtio-mem',
    description: 'aarch64: virtio-mem from 256 MiB up to 1280 MiB, with an agent channel and four hotplug root ports',
    config: (env) => ({
      id: 'arm-virtio-mem',
      machine: tcg,
      boot: guestBoot(env),
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
      machine: tcg,
      boot: guestBoot(env),
      memory: { bootMiB: 256, backing: { type: 'shared' } },
      devices: [
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
      ],
      hardening: current,
    }),
  },
  {
    name: 'arm64-rootfs-image',
    description: 'aarch64: a root filesystem image as /dev/vda; the console also appended to a log file',
    config: (env) => ({
      id: 'arm-rootfs',
      machine: tcg,
      boot: { kernel: env.guest.kernel, image: `${env.dir}/rootfs.img`, kernelParams: ['console=ttyAMA0', 'rw'] },
      memory: { bootMiB: 256 },
      console: { socket: true, logFile: `${env.dir}/arm-console.log` },
      hardening: current,
    }),
  },
  {
    name: 'arm64-no-console',
    description: 'aarch64: no serial console at all (the PL011 stays unconnected); seccomp off',
    config: (env) => ({ id: 'arm-no-console', machine: tcg, boot: guestBoot(env), memory: { bootMiB: 256 }, console: { socket: false }, hardening: { ...current, seccomp: false } }),
  },
  {
    name: 'arm64-kvm',
    description: 'aarch64 under KVM: the host CPU and the host GIC version, no pointer authentication property',
    config: (env) => ({
      id: 'arm-kvm',
      machine: { arch: 'aarch64' },
      boot: guestBoot(env),
      cpus: { boot: 2 },
      memory: { bootMiB: 512, maxMiB: 2048, hotplug: 'virtio-mem' },
      devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }],
      hardening: current,
    }),
  },
];
