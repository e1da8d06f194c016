// Confirms from a running (paused) QEMU that the config's meaning reached it: ids, CPU and memory
// sizes, boot files, and each device with its key settings (path, read-only, MAC, tag, …). Works
// from the config alone, independently of how the argv spells it.
import { existsSync, statSync } from 'node:fs';
import type { DeviceConfig, SandboxConfig } from '../../src/hypervisor/config/index.ts';
import type { RuntimePaths } from '../../src/qemu/runtime-paths.ts';
import type { QmpClient } from '../../src/qmp/index.ts';
import { profileOf, type Architecture } from '../../src/hypervisor/arch-profiles.ts';
import { blockDevice, boardSerialPorts, listeningPathsHeld, machineMemory, pciFunctions, procStatus, qomGet, tapQueues, type PciFunction } from './qemu-state.ts';

const MiB = 1024 * 1024;
/** The serial port the console is on: x86_64's 16550 on ISA (ttyS0), aarch64's PL011 (ttyAMA0). */
const CONSOLE_SERIAL: Readonly<Record<Architecture, string>> = { x86_64: 'isa-serial', aarch64: 'pl011' };

export interface RealizedOptions {
  /** Device ids deliberately left out of this QEMU (no host support); they are checked elsewhere. */
  absent?: readonly string[];
  /** The uid and gid QEMU should run as. */
  user: { uid: number; gid: number; groups?: readonly number[] };
}

export async function configMismatches(qmp: QmpClient, pid: number, config: SandboxConfig, paths: RuntimePaths, options: RealizedOptions): Promise<string[]> {
  const problems: string[] = [];
  const expect = (what: string, actual: unknown, expected: unknown) => {
    if (JSON.stringify(actual) !== JSON.stringify(expected)) problems.push(`${what}: QEMU has ${JSON.stringify(actual)}, the config says ${JSON.stringify(expected)}`);
  };
  const q = (command: string, args?: Record<string, unknown>) => qmp.executeUntyped(command, args);

  expect('id', ((await q('query-name')) as { name: string }).name, config.id);
  expect('boot vCPUs', ((await q('query-cpus-fast')) as unknown[]).length, config.cpus.boot);
  if (profileOf(config).cpuHotplug) {
    expect('possible vCPUs', ((await q('query-hotpluggable-cpus')) as unknown[]).length, config.cpus.max);
  } else {
    // A machine without vCPU hotplug refuses the query (capabilities().cpuHotplug is false for it).
    const refused = await q('query-hotpluggable-cpus').then(() => false, () => true);
    expect('query-hotpluggable-cpus refused', refused, true);
    expect('possible vCPUs', ((await qomGet(qmp, '/machine', 'smp')) as { maxcpus: number }).maxcpus, config.cpus.max);
  }

  const { memory } = config;
  expect('boot memory', ((await q('query-memory-size-summary')) as { 'base-memory': number })['base-memory'], memory.bootMiB * MiB);
  const sizes = await machineMemory(qmp);
  expect('max memory', sizes.maxSize, memory.maxMiB * MiB);
  expect('DIMM slots', sizes.slots, memory.hotplug === 'dimm' ? memory.slots : 0);
  if (memory.hotplug === 'virtio-mem') {
    const devices = (await q('query-memory-devices')) as { type: string; data: Record<string, unknown> }[];
    const vmem = devices.find((d) => d.type === 'virtio-mem');
    expect('virtio-mem region', vmem?.data['max-size'], (memory.maxMiB - memory.bootMiB) * MiB);
    expect('virtio-mem requested size', vmem?.data['requested-size'], 0);
  }
  const memdevs = (await q('query-memdev')) as { id: string; share: boolean; prealloc: boolean; size: number }[];
  const bootBackend = memdevs.find((m) => m.id === 'mem-ram');
  if (memory.backing.type === 'anonymous' && !memory.prealloc) {
    expect('explicit boot memory backend', bootBackend, undefined);
  } else {
    expect('boot memory backend', bootBackend && { share: bootBackend.share, prealloc: bootBackend.prealloc, size: bootBackend.size }, {
      share: memory.backing.type !== 'anonymous',
      prealloc: memory.prealloc,
      size: memory.bootMiB * MiB,
    });
    if (memory.backing.type === 'file' || memory.backing.type === 'hugepages') expect('memory backing path', await qomGet(qmp, '/objects/mem-ram', 'mem-path'), memory.backing.path);
  }

  expect('kernel', await qomGet(qmp, '/machine', 'kernel'), config.boot.kernel);
  expect('initrd', await qomGet(qmp, '/machine', 'initrd'), config.boot.initrd ?? '');
  const append = String(await qomGet(qmp, '/machine', 'append')).split(' ');
  expect('kernel parameters', config.boot.kernelParams.every((p) => append.includes(p)), true);

  // The launcher binds the VM's sockets and QEMU holds them as fds: the file must be a socket, and QEMU must be listening on it.
  const listening = listeningPathsHeld(pid);
  expect('QMP socket held by QEMU', listening.includes(paths.qmpSocket), true);
  if (config.console.socket) {
    expect('console socket', existsSync(paths.consoleSocket) && statSync(paths.consoleSocket).isSocket(), true);
    expect('console socket held by QEMU', listening.includes(paths.consoleSocket), true);
  }
  if (config.console.logFile) expect('console log file', existsSync(config.console.logFile), true);
  const serials = (await boardSerialPorts(qmp)).map((port) => ({ type: port.type, chardev: port.chardev }));
  expect('serial ports with a chardev', serials, config.console.socket || config.console.logFile ? [{ type: CONSOLE_SERIAL[config.machine.arch], chardev: 'svmm-console' }] : []);

  expect('seccomp mode', procStatus(pid, 'Seccomp'), config.hardening.seccomp ? '2' : '0');
  const ids = (field: string) => procStatus(pid, field).split(/\s+/).filter(Boolean).map(Number);
  expect('uid (real, effective, saved, fs)', ids('Uid'), Array(4).fill(options.user.uid));
  expect('gid (real, effective, saved, fs)', ids('Gid'), Array(4).fill(options.user.gid));
  if (options.user.groups) expect('supplementary groups', ids('Groups'), [...options.user.groups]);

  const pci = await pciFunctions(qmp);
  for (let i = 0; i < config.hotplug.rootPorts; i++) expect(`hotplug root port rp${i}`, pci.some((f) => f.qdevId === `rp${i}` && f.parent === 'pcie.0'), true);

  if (config.boot.image) {
    const rootfs = await blockDevice(qmp, 'rootfs');
    expect('root image', rootfs?.inserted && { file: rootfs.inserted.file, ro: rootfs.inserted.ro }, { file: config.boot.image, ro: true });
  }
  for (const device of config.devices) {
    if (options.absent?.includes(device.id)) continue;
    await checkDevice(qmp, device, paths, pci, listening, (what, actual, expected) => expect(`${device.id}: ${what}`, actual, expected));
  }
  return problems;
}

type Expect = (what: string, actual: unknown, expected: unknown) => void;

async function checkDevice(qmp: QmpClient, device: DeviceConfig, paths: RuntimePaths, pci: PciFunction[], listening: string[], expect: Expect): Promise<void> {
  const path = `/machine/peripheral/${device.id}`;
  const get = (property: string) => qomGet(qmp, path, property);
  switch (device.type) {
    case 'block': {
      const disk = await blockDevice(qmp, device.id);
      const inserted = disk?.inserted;
      const direct = device.cache === 'none' || device.cache === 'directsync';
      expect('disk', inserted && { file: inserted.file, image: inserted.image.filename, ro: inserted.ro, drv: inserted.drv, direct: inserted.cache.direct, noFlush: inserted.cache['no-flush'] }, {
        file: device.path,
        image: device.path,
        ro: device.readOnly,
        drv: device.format,
        direct,
        noFlush: device.cache === 'unsafe',
      });
      expect('frontend', await get('type'), device.driver === 'virtio-scsi' ? 'scsi-hd' : 'virtio-blk-pci');
      expect('write cache', await get('write-cache'), device.cache === 'writethrough' || device.cache === 'directsync' ? 'off' : 'on');
      if (device.serial !== undefined) expect('serial', await get('serial'), device.serial);
      return;
    }
    case 'net': {
      if (device.mac !== undefined) expect('mac', await get('mac'), device.mac);
      const queues = await tapQueues(qmp, `net-${device.id}`);
      expect('tap queues', queues.length, device.queues);
      const tap = device.tap;
      if ('ifname' in tap) expect('tap', queues.every((q) => q.includes(`ifname=${tap.ifname},`)), true);
      return;
    }
    case 'vfio':
    case 'vsock':
      return expect('present although this host cannot run it', true, false);
    case 'fs':
      if (device.driver === 'virtio-fs') {
        expect('tag', await get('tag'), device.tag);
        expect('queue size', await get('queue-size'), device.queueSize);
      } else {
        expect('mount tag', await get('mount_tag'), device.tag);
      }
      return;
    case 'rng':
      return expect('source', await qomGet(qmp, `/objects/rng-${device.id}`, 'filename'), device.source);
    case 'balloon':
      expect('deflate-on-oom', await get('deflate-on-oom'), device.deflateOnOom);
      return expect('free-page-reporting', await get('free-page-reporting'), device.freePageReporting);
    case 'channel': {
      expect('port name', await get('name'), device.name);
      const socket = paths.channelSocket(device.id);
      expect(`socket ${socket}`, existsSync(socket) && statSync(socket).isSocket(), true);
      return expect(`socket ${socket} held by QEMU`, listening.includes(socket), true);
    }
    case 'pvpanic':
      return expect('on the PCI bus', pci.some((f) => f.qdevId === device.id), true);
  }
}
