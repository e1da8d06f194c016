// The rules behind the argv layout, asserted directly (the golden files show the whole result):
// PCI placement, a slot per root port, passed fds, boot parameters, and what each option depends on.
import { describe, expect, it } from 'vitest';
import { ConfigError, parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { buildQemuArgv, type QemuArgv } from '../../../src/qemu/argv/index.ts';
import type { HostProbe } from '../../../src/qemu/devices/index.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { deviceOptions, structureArgv } from '../../helpers/qemu-options.ts';

const noBlockDevices: HostProbe = { isBlockDevice: () => false, isBlockDeviceFd: () => false };
const boot = { kernel: '/boot/vmlinuz' };

function argv(input: SandboxConfigInput, host: HostProbe = noBlockDevices): QemuArgv {
  return buildQemuArgv(parseSandboxConfig({ machine: { accel: 'tcg' }, ...input }), runtimePaths('/run/vm'), host);
}

function options(input: SandboxConfigInput, flag: string, host?: HostProbe): Map<string, string>[] {
  return structureArgv(argv(input, host).args).flatMap((o) => (o.flag === flag && o.props ? [o.props] : []));
}

function verbatim(input: SandboxConfigInput, flag: string): (string | undefined)[] {
  return structureArgv(argv(input).args).flatMap((o) => (o.flag === flag ? [o.raw] : []));
}

function device(input: SandboxConfigInput, id: string): Map<string, string> {
  const found = deviceOptions(argv(input).args).find((d) => d.get('id') === id);
  if (!found) throw new Error(`no -device with id ${id}`);
  return found;
}

const rng = (id: string) => ({ type: 'rng', id }) as const;

describe('PCI placement', () => {
  it('gives each root port a slot of its own at function 0, never multifunction, each with its own chassis', () => {
    const ports = deviceOptions(argv({ boot, hotplug: { rootPorts: 20 } }).args).filter((d) => d.get('driver') === 'pcie-root-port');
    expect(ports.map((p) => p.get('id'))).toEqual(Array.from({ length: 20 }, (_, i) => `rp${i}`));
    expect(ports.map((p) => p.get('addr'))).toEqual(Array.from({ length: 20 }, (_, i) => `0x${(1 + i).toString(16)}`));
    expect(ports.filter((p) => p.has('multifunction'))).toEqual([]);
    expect(ports.map((p) => p.get('chassis'))).toEqual(Array.from({ length: 20 }, (_, i) => String(i + 1)));
    expect(ports.every((p) => p.get('bus') === 'pcie.0' && p.get('io-reserve') === '0')).toBe(true);
  });

  it('numbers the chassis of VFIO ports on after the hotplug ports, each port on the next free slot', () => {
    const input: SandboxConfigInput = {
      boot: { ...boot, image: '/r.img' },
      hotplug: { rootPorts: 2 },
      devices: [rng('rng0'), { type: 'vfio', id: 'gpu0', hostAddress: '3b:00.0' }],
    };
    const ports = deviceOptions(argv(input).args).filter((d) => d.get('driver') === 'pcie-root-port');
    expect(ports.map((p) => [p.get('id'), p.get('addr'), p.get('chassis')])).toEqual([
      ['rp0', '0x2', '1'],
      ['rp1', '0x3', '2'],
      ['rp2', '0x5', '3'],
    ]);
  });

  it('puts each VFIO device on a root port of its own, numbered after the hotplug ports', () => {
    const input: SandboxConfigInput = {
      boot,
      hotplug: { rootPorts: 3 },
      devices: [{ type: 'vfio', id: 'gpu0', hostAddress: '3b:00.0' }, rng('rng0'), { type: 'vfio', id: 'gpu1', hostAddress: '3c:00.0' }],
    };
    expect(device(input, 'gpu0').get('bus')).toBe('rp3');
    expect(device(input, 'gpu1').get('bus')).toBe('rp4');
    expect(device(input, 'rp3').get('driver')).toBe('pcie-root-port');
    expect(device(input, 'rp4').get('driver')).toBe('pcie-root-port');
    expect(deviceOptions(argv(input).args).filter((d) => ['rp0', 'rp1', 'rp2'].includes(d.get('bus') ?? ''))).toEqual([]);
  });

  it('gives the root image the first slot, so that it is /dev/vda, read-only', () => {
    const input: SandboxConfigInput = { boot: { ...boot, image: '/var/lib/rootfs.img' }, devices: [{ type: 'block', id: 'data', path: '/var/lib/data.img' }] };
    expect(device(input, 'rootfs').get('addr')).toBe('0x1');
    expect(device(input, 'data').get('addr')).not.toBe('0x1');
    const rootfs = options(input, '-blockdev').find((b) => b.get('node-name') === 'drv-rootfs');
    expect(rootfs?.get('read-only')).toBe('on');
    expect(rootfs?.get('file.read-only')).toBe('on');
  });

  it('puts SCSI disks on one controller, added once', () => {
    const input: SandboxConfigInput = {
      boot,
      devices: [
        { type: 'block', id: 'a', path: '/a.img', driver: 'virtio-scsi' },
        { type: 'block', id: 'b', path: '/b.img', driver: 'virtio-scsi' },
      ],
    };
    expect(deviceOptions(argv(input).args).filter((d) => d.get('driver') === 'virtio-scsi-pci')).toHaveLength(1);
    expect([device(input, 'a').get('bus'), device(input, 'b').get('bus')]).toEqual(['scsi0.0', 'scsi0.0']);
    expect(device(input, 'a').get('addr')).toBeUndefined();
  });

  it('fits 28 single-slot devices next to the two default root ports, and refuses a 29th with a ConfigError', () => {
    const devices = (n: number) => Array.from({ length: n }, (_, i) => rng(`rng${i}`));
    expect(deviceOptions(argv({ boot, devices: devices(28) }).args).filter((d) => d.get('driver') === 'virtio-rng-pci').at(-1)?.get('addr')).toBe('0x1e');
    try {
      argv({ boot, devices: devices(29) });
      expect.unreachable('29 devices should not fit');
    } catch (error) {
      expect(error).toBeInstanceOf(ConfigError);
      expect((error as ConfigError).paths).toEqual(['devices']);
      expect((error as Error).message).toContain('no PCI slot left on the root bus for rng28: its 30 slots are taken, one by each PCI device, controller and root port (2 root ports');
    }
    // Without root ports, all 30 slots go to devices.
    expect(deviceOptions(argv({ boot, hotplug: { rootPorts: 0 }, devices: devices(30) }).args).filter((d) => d.get('driver') === 'virtio-rng-pci')).toHaveLength(30);
  });

  it('counts every root port against the 30 slots: with 24 hotplug ports, a root image and virtio-mem, 4 devices fit', () => {
    const full = (devices: SandboxConfigInput['devices']): SandboxConfigInput => ({
      boot: { ...boot, image: '/r.img' },
      memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' },
      hotplug: { rootPorts: 24 },
      devices,
    });
    const fits = full([rng('rng0'), rng('rng1'), { type: 'vfio', id: 'gpu0', hostAddress: '3b:00.0' }, rng('rng2')]);
    expect(device(fits, 'rp24').get('addr')).toBe('0x1d');
    expect(device(fits, 'rng2').get('addr')).toBe('0x1e');
    for (const [extra, what] of [
      [rng('rng3'), 'rng3'],
      [{ type: 'vfio', id: 'gpu1', hostAddress: '3c:00.0' }, 'gpu1'],
    ] as const) {
      try {
        argv(full([...(fits.devices ?? []), extra]));
        expect.unreachable(`${what} should not fit`);
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError);
        expect((error as ConfigError).paths).toEqual(['devices']);
        expect((error as Error).message).toContain(`no PCI slot left on the root bus for ${what}: its 30 slots are taken`);
        expect((error as Error).message).toContain('25 root ports: hotplug.rootPorts plus one per VFIO device');
      }
    }
  });
});

describe('taps and passed fds', () => {
  it('hands caller fds to QEMU in device order, after the listening sockets, each at the fd its netdev names', () => {
    const result = argv({
      boot,
      devices: [
        { type: 'net', id: 'a', tap: { fd: 9 } },
        { type: 'net', id: 'b', tap: { ifname: 'tap0' } },
        { type: 'net', id: 'c', tap: { fd: 5 } },
      ],
    });
    // QMP and the console socket take 3 and 4; the caller's fds follow, in order.
    expect(result.fds).toEqual([
      { fd: 3, kind: 'listen', path: '/run/vm/qmp.sock' },
      { fd: 4, kind: 'listen', path: '/run/vm/console.sock' },
      { fd: 5, kind: 'inherit', from: 9 },
      { fd: 6, kind: 'inherit', from: 5 },
    ]);
    const netdevs = structureArgv(result.args).flatMap((o) => (o.flag === '-netdev' && o.props ? [o.props] : []));
    expect(netdevs.map((n) => [n.get('id'), n.get('fd') ?? n.get('ifname')])).toEqual([
      ['net-a', '5'],
      ['net-b', 'tap0'],
      ['net-c', '6'],
    ]);
  });

  it('hands a multi-queue tap as one fd per queue (fds=), with vhost fds, and never passes queues= with them', () => {
    const result = argv({
      boot,
      devices: [
        { type: 'net', id: 'mq', tap: { fds: [20, 21], vhostFds: [30, 31] }, queues: 2, vhost: true },
        { type: 'net', id: 'one', tap: { fds: [22] } },
        { type: 'net', id: 'named', tap: { ifname: 'tap0' }, queues: 2 },
      ],
    });
    expect(result.fds.filter((f) => f.kind === 'inherit')).toEqual([
      { fd: 5, kind: 'inherit', from: 20 },
      { fd: 6, kind: 'inherit', from: 21 },
      { fd: 7, kind: 'inherit', from: 30 },
      { fd: 8, kind: 'inherit', from: 31 },
      { fd: 9, kind: 'inherit', from: 22 },
    ]);
    const netdev = (id: string) => Object.fromEntries(structureArgv(result.args).find((o) => o.flag === '-netdev' && o.props?.get('id') === id)?.props ?? []);
    expect(netdev('net-mq')).toEqual({ type: 'tap', id: 'net-mq', fds: '5:6', vhostfds: '7:8', vhost: 'on' });
    expect(netdev('net-one')).toEqual({ type: 'tap', id: 'net-one', fd: '9' });
    expect(netdev('net-named')).toEqual({ type: 'tap', id: 'net-named', ifname: 'tap0', script: 'no', downscript: 'no', queues: '2' });
    // The frontend still gets its queues' vectors.
    expect(deviceOptions(result.args).find((d) => d.get('id') === 'mq')?.get('vectors')).toBe('6');
  });

  it('puts a disk given as an fd in an fd set of its own (-add-fd, before its -blockdev), opened as /dev/fdset/<id>', () => {
    const result = argv({
      boot,
      devices: [
        { type: 'block', id: 'a', fd: 40 },
        { type: 'block', id: 'b', path: '/images/b.img' },
        { type: 'block', id: 'c', fd: 41, readOnly: true, format: 'qcow2' },
      ],
    });
    const structured = structureArgv(result.args);
    expect(structured.filter((o) => o.flag === '-add-fd').map((o) => o.raw)).toEqual(['fd=5,set=1', 'fd=6,set=2']);
    expect(result.fds.filter((f) => f.kind === 'inherit')).toEqual([
      { fd: 5, kind: 'inherit', from: 40 },
      { fd: 6, kind: 'inherit', from: 41 },
    ]);
    const files = structured.filter((o) => o.flag === '-blockdev').map((o) => [o.props?.get('node-name'), o.props?.get('file.driver'), o.props?.get('file.filename'), o.props?.get('read-only')]);
    expect(files).toEqual([
      ['drv-a', 'file', '/dev/fdset/1', 'off'],
      ['drv-b', 'file', '/images/b.img', 'off'],
      ['drv-c', 'file', '/dev/fdset/2', 'on'],
    ]);
    const firstBlockdev = structured.findIndex((o) => o.flag === '-blockdev');
    expect(structured.findIndex((o) => o.flag === '-add-fd')).toBeLessThan(firstBlockdev);
    // A block device behind the fd is opened with host_device, as a path to one would be.
    const hostDevice = argv({ boot, devices: [{ type: 'block', id: 'a', fd: 40 }] }, { isBlockDevice: () => false, isBlockDeviceFd: (fd) => fd === 40 });
    expect(structureArgv(hostDevice.args).find((o) => o.flag === '-blockdev')?.props?.get('file.driver')).toBe('host_device');
  });

  it('numbers the fds 3, 4, … with no gap, whatever mix of sockets and caller fds', () => {
    const result = argv({
      boot,
      console: { socket: false },
      devices: [
        { type: 'channel', id: 'agent', name: 'agent.0' },
        { type: 'net', id: 'a', tap: { fd: 3 } },
        { type: 'channel', id: 'logs', name: 'logs.0' },
      ],
    });
    expect(result.fds).toEqual([
      { fd: 3, kind: 'listen', path: '/run/vm/qmp.sock' },
      { fd: 4, kind: 'listen', path: '/run/vm/ch-agent.sock' },
      { fd: 5, kind: 'inherit', from: 3 },
      { fd: 6, kind: 'listen', path: '/run/vm/ch-logs.sock' },
    ]);
    const fdOf = (flag: string, id: string) => structureArgv(result.args).find((o) => o.flag === flag && o.props?.get('id') === id)?.props?.get('fd');
    expect([fdOf('-chardev', 'svmm-qmp'), fdOf('-chardev', 'chr-agent'), fdOf('-netdev', 'net-a'), fdOf('-chardev', 'chr-logs')]).toEqual(['3', '4', '5', '6']);
  });

  it('serves QMP on a listening socket at fd 3 and needs no pidfile (the launcher execs QEMU: its pid is ours)', () => {
    const result = argv({ boot });
    const qmp = structureArgv(result.args).find((o) => o.flag === '-chardev' && o.props?.get('id') === 'svmm-qmp');
    expect(Object.fromEntries(qmp?.props ?? [])).toEqual({ backend: 'socket', id: 'svmm-qmp', fd: '3', server: 'on', wait: 'off' });
    expect(result.fds[0]).toEqual({ fd: 3, kind: 'listen', path: '/run/vm/qmp.sock' });
    expect(result.args).not.toContain('-pidfile');
    // No option names a file in the runtime directory: QEMU creates nothing there.
    expect(result.args.filter((arg) => arg.includes('/run/vm'))).toEqual([]);
  });

  it('opens a named tap without helper scripts, with one queue pair per queue and vectors for them', () => {
    const input: SandboxConfigInput = { boot, devices: [{ type: 'net', id: 'n', tap: { ifname: 'tap0' }, queues: 4, vhost: true }] };
    const [netdev] = options(input, '-netdev');
    expect(Object.fromEntries(netdev ?? [])).toEqual({ type: 'tap', id: 'net-n', ifname: 'tap0', script: 'no', downscript: 'no', queues: '4', vhost: 'on' });
    expect(device(input, 'n').get('mq')).toBe('on');
    expect(device(input, 'n').get('vectors')).toBe('10');
    // No caller fd: QEMU gets only its listening sockets.
    expect(argv(input).fds.filter((entry) => entry.kind === 'inherit')).toEqual([]);
    expect(argv(input).fds.map((entry) => entry.kind)).toEqual(['listen', 'listen']);
  });
});

describe('boot', () => {
  it('puts the root defaults before the caller parameters, so that those win', () => {
    expect(verbatim({ boot: { ...boot, image: '/r.img', kernelParams: ['rw', '--', 'init-arg'] } }, '-append')).toEqual(['root=/dev/vda ro rw -- init-arg']);
  });

  it('leaves root= to a caller who gives one, and adds none without an image', () => {
    expect(verbatim({ boot: { ...boot, image: '/r.img', kernelParams: ['root=/dev/vda1'] } }, '-append')).toEqual(['root=/dev/vda1']);
    expect(verbatim({ boot: { ...boot, initrd: '/i.img', kernelParams: ['quiet'] } }, '-append')).toEqual(['quiet']);
    expect(verbatim({ boot }, '-append')).toEqual([]);
  });

  it('passes kernel, initrd and parameters verbatim', () => {
    const input: SandboxConfigInput = { boot: { kernel: '/k,a=b', initrd: '/i,c', kernelParams: ['x=a,b', 'y="p q"'] } };
    expect(verbatim(input, '-kernel')).toEqual(['/k,a=b']);
    expect(verbatim(input, '-initrd')).toEqual(['/i,c']);
    expect(verbatim(input, '-append')).toEqual(['x=a,b y="p q"']);
  });
});

describe('what each option depends on', () => {
  it('uses the host CPU and the kvm-pit policy under kvm only', () => {
    const kvm = argv({ boot, machine: { accel: 'kvm' } }).args;
    const tcg = argv({ boot }).args;
    expect(kvm.join(' ')).toContain('-accel kvm -cpu host');
    expect(kvm).toContain('kvm-pit.lost_tick_policy=discard');
    expect(tcg.join(' ')).toContain('-accel tcg -cpu max');
    expect(tcg).not.toContain('-global');
  });

  it('installs the seccomp filter unless it is turned off', () => {
    expect(options({ boot }, '-sandbox')).toHaveLength(1);
    expect(argv({ boot, hardening: { seccomp: false } }).args).not.toContain('-sandbox');
  });

  it('wires the serial console to a socket, a log file, both or nothing', () => {
    const chardev = (console: SandboxConfigInput['console']) => options({ boot, console }, '-chardev').filter((c) => c.get('id') === 'svmm-console');
    const serials = (console: SandboxConfigInput['console']) => deviceOptions(argv({ boot, console }).args).filter((d) => d.get('driver') === 'isa-serial');
    // The launcher creates the listening socket at /run/vm/console.sock and hands it over as fd 4 (QMP's is 3).
    expect(chardev({ socket: true }).map((c) => Object.fromEntries(c))).toEqual([{ backend: 'socket', id: 'svmm-console', fd: '4', server: 'on', wait: 'off' }]);
    expect(argv({ boot, console: { socket: true } }).fds).toContainEqual({ fd: 4, kind: 'listen', path: '/run/vm/console.sock' });
    expect(argv({ boot, console: { socket: false } }).fds.some((entry) => entry.kind === 'listen' && entry.path === '/run/vm/console.sock')).toBe(false);
    expect(chardev({ socket: true, logFile: '/var/log/c.log' }).map((c) => [c.get('logfile'), c.get('logappend')])).toEqual([['/var/log/c.log', 'on']]);
    expect(chardev({ socket: false, logFile: '/var/log/c.log' }).map((c) => Object.fromEntries(c))).toEqual([{ backend: 'file', id: 'svmm-console', path: '/var/log/c.log', append: 'on' }]);
    expect(chardev({ socket: false })).toEqual([]);
    expect(serials({ socket: false })).toEqual([]);
    expect(serials({ socket: true }).map((s) => s.get('chardev'))).toEqual(['svmm-console']);
  });

  it('keeps device chardevs apart from the backend ones, whatever the device ids', () => {
    const ids = options({ boot, devices: [{ type: 'channel', id: 'qmp', name: 'a' }, { type: 'channel', id: 'console', name: 'b' }] }, '-chardev').map((c) => c.get('id'));
    expect(ids).toEqual(['svmm-qmp', 'svmm-console', 'chr-qmp', 'chr-console']);
  });

  it('sizes memory: maxmem only with hotplug, slots only for DIMMs, the virtio-mem region as max - boot', () => {
    expect(options({ boot, memory: { bootMiB: 512 } }, '-m').map((m) => Object.fromEntries(m))).toEqual([{ size: '512M' }]);
    expect(options({ boot, memory: { bootMiB: 512, maxMiB: 1024, hotplug: 'dimm', slots: 3 } }, '-m').map((m) => Object.fromEntries(m))).toEqual([
      { size: '512M', slots: '3', maxmem: '1024M' },
    ]);
    const virtioMem: SandboxConfigInput = { boot, memory: { bootMiB: 512, maxMiB: 1536, hotplug: 'virtio-mem' } };
    expect(options(virtioMem, '-m').map((m) => Object.fromEntries(m))).toEqual([{ size: '512M', maxmem: '1536M' }]);
    expect(options(virtioMem, '-object').map((o) => [o.get('id'), o.get('size')])).toEqual([['mem-vmem0', String(1024 * 1024 * 1024)]]);
    expect(device(virtioMem, 'vmem0').get('requested-size')).toBe('0');
  });

  it('gives boot memory an explicit backend only when it is not plain anonymous memory', () => {
    expect(options({ boot }, '-machine').map((m) => m.get('memory-backend'))).toEqual([undefined]);
    const prealloc = options({ boot, memory: { bootMiB: 256, prealloc: true } }, '-object').map((o) => Object.fromEntries(o));
    expect(prealloc).toEqual([{ 'qom-type': 'memory-backend-ram', id: 'mem-ram', size: String(256 * 1024 * 1024), prealloc: 'on' }]);
    expect(options({ boot, memory: { prealloc: true } }, '-machine').map((m) => m.get('memory-backend'))).toEqual(['mem-ram']);
  });

  it('preallocates virtio-mem memory through the device, not its backend', () => {
    const input: SandboxConfigInput = { boot, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem', backing: { type: 'shared' }, prealloc: true } };
    const region = options(input, '-object').find((o) => o.get('id') === 'mem-vmem0');
    expect(region?.get('prealloc')).toBeUndefined();
    expect(region?.get('share')).toBe('on');
    expect(device(input, 'vmem0').get('prealloc')).toBe('on');
  });

  it('opens a host block device with host_device and a file with file, as the host probe says', () => {
    const input: SandboxConfigInput = { boot, devices: [{ type: 'block', id: 'd', path: '/dev/sdb' }] };
    const driverWith = (host: HostProbe) => options(input, '-blockdev', host).map((b) => b.get('file.driver'));
    expect(driverWith({ isBlockDevice: (p) => p === '/dev/sdb', isBlockDeviceFd: () => false })).toEqual(['host_device']);
    expect(driverWith(noBlockDevices)).toEqual(['file']);
  });
});
