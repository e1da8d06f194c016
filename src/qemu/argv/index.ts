// The pure argv builder: a validated SandboxConfig and the runtime paths in, QEMU's arguments out.
// No shell is involved anywhere, the order is fixed, and every option value is escaped.
import type { SandboxConfig } from '../../hypervisor/config/index.ts';
import { coldplugArgs, realHost, type ColdplugContext, type HostProbe } from '../devices/index.ts';
import { blockArgs, SCSI_CONTROLLER_ID, scsiControllerProps } from '../devices/block.ts';
import { BOOT_MEMORY_ID, memoryBackendProps, needsBootBackend, VIRTIO_MEM_BACKEND_ID, VIRTIO_MEM_ID } from '../devices/memory.ts';
import type { RuntimePaths } from '../runtime-paths.ts';
import type { LaunchFd } from '../launch/launcher.ts';
import { FdPlan } from './fd-plan.ts';
import { PciRootBus, type PciPlan } from './pci.ts';
import { renderOptions, type OptionProps } from './qemu-opts.ts';
import { qemuArchProfile } from '../arch/profiles.ts';

/** What `buildQemuArgv` returns: QEMU's arguments, the fds it expects, and the PCI plan. */
export interface QemuArgv {
/** QEMU's arguments, without the binary. */
  args: string[];
  /** What QEMU finds at fd 3, 4, …: caller fds passed through and listening sockets (the argv refers to them so). */
  fds: readonly LaunchFd[];
  /** Where each PCI device, controller and root port went. */
  pci: PciPlan;
}

/** Hot-plug root ports are rp0 … rp<n-1>; ports for cold VFIO devices are numbered after them. */
export function rootPortId(index: number): string {
  return `rp${index}`;
}

export const VIRTIO_SERIAL_ID = 'vserial0';
export const ROOTFS_DEVICE_ID = 'rootfs';
// Device chardevs are chr-<device id>: the backend's own live under svmm-, which no device id yields.
const QMP_CHARDEV_ID = 'svmm-qmp';
const CONSOLE_CHARDEV_ID = 'svmm-console';

const opt = (name: string, props: OptionProps, head?: string): string[] => [name, renderOptions(props, head)];

/**
 * The QEMU command line for a validated config (a pure function: nothing is spawned), with the fds it
 * expects and where each PCI device goes.
 */
export function buildQemuArgv(config: SandboxConfig, paths: RuntimePaths, host: HostProbe = realHost): QemuArgv {
  const { machine, cpus, memory, boot } = config;
  const args: string[] = [];
  const pci = new PciRootBus();
  const fds = new FdPlan();
  const arch = qemuArchProfile(machine.arch);

  // Identity, machine, CPUs.
  args.push(...opt('-name', { guest: config.id, 'debug-threads': true }));
  if (isUuid(config.id)) args.push('-uuid', config.id);
  const bootBackend = needsBootBackend(memory.backing, memory.prealloc);
  args.push(...opt('-machine', { type: machine.type, ...arch.machineProps(machine.accel), 'memory-backend': bootBackend ? BOOT_MEMORY_ID : undefined }, 'type'));
  args.push('-accel', machine.accel);
  args.push(...opt('-cpu', { model: machine.cpuModel, ...arch.cpuProps(machine.accel, machine.cpuModel) }, 'model'));
  // One socket, one core per possible vCPU: hot-pluggable CPUs are then socket-id 0, core-id N.
  args.push(...opt('-smp', { cpus: cpus.boot, maxcpus: cpus.max, sockets: 1, dies: 1, cores: cpus.max, threads: 1 }));

  // Memory.
  const grows = memory.hotplug !== 'none';
  args.push(
    ...opt('-m', {
      size: `${memory.bootMiB}M`,
      slots: memory.hotplug === 'dimm' ? memory.slots : undefined,
      maxmem: grows ? `${memory.maxMiB}M` : undefined,
    }),
  );
  if (bootBackend) {
    args.push(...opt('-object', memoryBackendProps(BOOT_MEMORY_ID, memory.bootMiB, memory.backing, memory.prealloc) as OptionProps, 'qom-type'));
  }

  // Hardening and process plumbing.
  if (config.hardening.seccomp) {
    args.push(...opt('-sandbox', { enable: true, obsolete: 'deny', elevateprivileges: 'deny', spawn: 'deny', resourcecontrol: 'deny' }));
  }
  args.push('-no-user-config', '-nodefaults', '-display', 'none', '-no-reboot');
  // A panicked guest is kept (paused, status guest-panicked) for the runtime to inspect or stop.
  args.push('-action', 'panic=pause');
  if (machine.accel === 'kvm') args.push(...arch.kvmOptions);
  args.push(...opt('-rtc', arch.rtc));
  // No -pidfile: the launcher execs QEMU, so the pid we spawn is QEMU's, and QEMU needs no
  // writable directory at all.
  args.push('-S');
  args.push(...opt('-chardev', { backend: 'socket', id: QMP_CHARDEV_ID, fd: fds.listen(paths.qmpSocket), server: true, wait: false }, 'backend'));
  args.push(...opt('-mon', { chardev: QMP_CHARDEV_ID, mode: 'control' }));

  // Boot. -kernel, -initrd and -append take their value verbatim (no option parsing).
  args.push('-kernel', boot.kernel);
  if (boot.initrd) args.push('-initrd', boot.initrd);
  // The root defaults go first: the kernel takes the last root=/ro/rw, so the caller's win, and a
  // caller's `--` (the rest is init's) cannot take them away from the kernel.
  const rootDefaults = boot.image && !boot.kernelParams.some((p) => p.startsWith('root=')) ? ['root=/dev/vda', 'ro'] : [];
  const params = [...rootDefaults, ...boot.kernelParams];
  if (params.length > 0) args.push('-append', params.join(' '));

  // The guest serial console (ttyS0 on x86_64, ttyAMA0 on aarch64).
  const { console } = config;
  if (console.socket) {
    args.push(
      ...opt(
        '-chardev',
        { backend: 'socket', id: CONSOLE_CHARDEV_ID, fd: fds.listen(paths.consoleSocket), server: true, wait: false, logfile: console.logFile, logappend: console.logFile ? true : undefined },
        'backend',
      ),
    );
  } else if (console.logFile) {
    args.push(...opt('-chardev', { backend: 'file', id: CONSOLE_CHARDEV_ID, path: console.logFile, append: true }, 'backend'));
  }
  if (console.socket || console.logFile) args.push(...arch.consoleArgs(CONSOLE_CHARDEV_ID));

  // PCI devices, each at an explicit address. The root image comes first so that it is /dev/vda.
  let virtioSerialBus: string | undefined;
  let scsiBus: string | undefined;
  let extraRootPorts = 0;
  // Cold fd sets are numbered from 1; QEMU gives hot-plugged ones the next unused id.
  let nextFdSet = 1;
  const ctx: ColdplugContext = {
    paths,
    host,
    pciSlot: (what) => ({ bus: 'pcie.0', addr: pci.slot(what) }),
    dedicatedRootPort: (what) => {
      const id = rootPortId(config.hotplug.rootPorts + extraRootPorts++);
      // Not hot-pluggable: the guest has no slot to power off, so a cold-plugged device stays.
      args.push(...rootPortArgs(id, pci, what, false));
      pci.behind(what, id);
      return id;
    },
    virtioSerialBus: () => {
      if (!virtioSerialBus) {
        args.push(...opt('-device', { driver: 'virtio-serial-pci', id: VIRTIO_SERIAL_ID, bus: 'pcie.0', addr: pci.slot(VIRTIO_SERIAL_ID, 'the virtio-serial controller') }, 'driver'));
        virtioSerialBus = `${VIRTIO_SERIAL_ID}.0`;
      }
      return virtioSerialBus;
    },
    scsiBus: () => {
      if (!scsiBus) {
        args.push(...opt('-device', scsiControllerProps({ bus: 'pcie.0', addr: pci.slot(SCSI_CONTROLLER_ID, 'the SCSI controller') }) as OptionProps, 'driver'));
        scsiBus = 'scsi0.0';
      }
      return scsiBus;
    },
    passFd: (fd) => fds.inherit(fd),
    fdSet: (fd) => {
      const set = nextFdSet++;
      args.push(...opt('-add-fd', { fd: fds.inherit(fd), set }));
      return set;
    },
    listenSocket: (path) => fds.listen(path),
  };
  if (boot.image) {
    args.push(...blockArgs({ type: 'block', id: ROOTFS_DEVICE_ID, path: boot.image, driver: 'virtio-blk', format: 'raw', readOnly: true, cache: 'writeback', aio: 'threads' }, ctx));
  }
  if (memory.hotplug === 'virtio-mem') {
    const size = memory.maxMiB - memory.bootMiB;
    args.push(...opt('-object', memoryBackendProps(VIRTIO_MEM_BACKEND_ID, size, memory.backing, false) as OptionProps, 'qom-type'));
    args.push(
      ...opt(
        '-device',
        { driver: 'virtio-mem-pci', id: VIRTIO_MEM_ID, memdev: VIRTIO_MEM_BACKEND_ID, 'requested-size': 0, prealloc: memory.prealloc ? true : undefined, ...ctx.pciSlot(VIRTIO_MEM_ID) },
        'driver',
      ),
    );
  }
  for (let i = 0; i < config.hotplug.rootPorts; i++) args.push(...rootPortArgs(rootPortId(i), pci, rootPortId(i)));
  for (const device of config.devices) args.push(...coldplugArgs(device, ctx));

  return { args, fds: fds.fds, pci: pci.plan };
}

function rootPortArgs(id: string, pci: PciRootBus, what: string, hotplug = true): string[] {
  const { addr, chassis } = pci.rootPort(id, what);
  // No I/O window: virtio and VFIO devices behind it use MMIO, and the 64 KiB of port I/O would
  // run out after a dozen ports.
  return opt('-device', { driver: 'pcie-root-port', id, bus: 'pcie.0', chassis, addr, 'io-reserve': 0, hotplug: hotplug ? undefined : false }, 'driver');
}

function isUuid(id: string): boolean {
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(id);
}
