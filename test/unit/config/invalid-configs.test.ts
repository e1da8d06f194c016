// Each invalid config is rejected with a ConfigError naming exactly the offending field(s).
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig, validateHotplugDevice } from '../../../src/hypervisor/config/index.ts';
import { configError } from './config-error.ts';

const boot = { kernel: '/boot/vmlinuz' };
const sharedMemory = { backing: { type: 'shared' } };
const disk = (over: Record<string, unknown> = {}) => ({ type: 'block', id: 'disk0', path: '/var/lib/disk0.img', ...over });
const vfs = (over: Record<string, unknown> = {}) => ({ type: 'fs', driver: 'virtio-fs', id: 'vfs0', tag: 'vfs', socketPath: '/run/vfs.sock', ...over });
const ninep = (over: Record<string, unknown> = {}) => ({ type: 'fs', driver: '9p', id: 'share0', tag: 'share', path: '/srv/share', ...over });
const tap = (over: Record<string, unknown> = {}) => ({ type: 'net', id: 'net0', tap: { ifname: 'tap0' }, ...over });
const withDevices = (...devices: unknown[]) => ({ boot, devices });


interface Case {
  name: string;
  input: unknown;
  /** Every path the error must report, and no other. */
  paths: string[];
}

const cases: Case[] = [
  // Paths: absolute, without NUL or line breaks.
  { name: 'a relative kernel path', input: { boot: { kernel: 'vmlinuz' } }, paths: ['boot.kernel'] },
  { name: 'a relative initrd path', input: { boot: { ...boot, initrd: 'boot/initrd.img' } }, paths: ['boot.initrd'] },
  { name: 'a relative disk path', input: withDevices(disk({ path: 'disk0.img' })), paths: ['devices[0].path'] },
  { name: 'a relative console log file', input: { boot, console: { logFile: 'console.log' } }, paths: ['console.logFile'] },
  { name: 'a relative runtime dir', input: { boot, runtime: { dir: 'run/vm' } }, paths: ['runtime.dir'] },
  { name: 'a relative network namespace', input: { boot, runtime: { netns: 'run/netns/pod' } }, paths: ['runtime.netns'] },
  { name: 'a relative memory backing path', input: { boot, memory: { backing: { type: 'file', path: 'mem' } } }, paths: ['memory.backing.path'] },
  { name: 'an empty kernel path', input: { boot: { kernel: '' } }, paths: ['boot.kernel'] },
  { name: 'a NUL in the kernel path', input: { boot: { kernel: '/boot/vmlinuz\0.old' } }, paths: ['boot.kernel'] },
  { name: 'a newline in a disk path', input: withDevices(disk({ path: '/var/lib/disk\n0.img' })), paths: ['devices[0].path'] },
  { name: 'a carriage return in a 9p path', input: withDevices(disk(), ninep({ path: '/srv/share\r' })), paths: ['devices[1].path'] },
  { name: 'a newline in the rng source', input: withDevices({ type: 'rng', id: 'rng0', source: '/dev/urandom\n' }), paths: ['devices[0].source'] },
  { name: 'a NUL in the QEMU binary path', input: { boot, runtime: { qemuPath: '/usr/bin/qemu\0' } }, paths: ['runtime.qemuPath'] },
  // Kernel parameters: each one parameter, no control characters, the whole line bounded.
  { name: 'a newline in a kernel parameter', input: { boot: { ...boot, kernelParams: ['quiet', 'console=ttyS0\ninit=/bin/sh'] } }, paths: ['boot.kernelParams[1]'] },
  { name: 'a NUL in a kernel parameter', input: { boot: { ...boot, kernelParams: ['panic=0\0'] } }, paths: ['boot.kernelParams[0]'] },
  { name: 'two parameters in one entry', input: { boot: { ...boot, kernelParams: ['quiet init=/bin/sh'] } }, paths: ['boot.kernelParams[0]'] },
  { name: 'a tab in a kernel parameter', input: { boot: { ...boot, kernelParams: ['a=1\tb=2'] } }, paths: ['boot.kernelParams[0]'] },
  { name: 'a non-ASCII kernel parameter (à holds byte 0xa0, a space to the kernel)', input: { boot: { ...boot, kernelParams: ['x=à'] } }, paths: ['boot.kernelParams[0]'] },
  { name: 'an unclosed quote in a kernel parameter', input: { boot: { ...boot, kernelParams: ['dyndbg="file a.c +p', 'quiet'] } }, paths: ['boot.kernelParams[0]'] },
  { name: 'an empty kernel parameter', input: { boot: { ...boot, kernelParams: [''] } }, paths: ['boot.kernelParams[0]'] },
  { name: 'a kernel command line over the limit', input: { boot: { ...boot, kernelParams: Array.from({ length: 100 }, (_, i) => `param${i}=${'x'.repeat(12)}`) } }, paths: ['boot.kernelParams'] },
  { name: 'kernel parameters that are not an array', input: { boot: { ...boot, kernelParams: 'quiet' } }, paths: ['boot.kernelParams'] },
  { name: 'an initrd and an image together', input: { boot: { ...boot, initrd: '/boot/initrd.img', image: '/var/lib/rootfs.img' } }, paths: ['boot.image'] },
  { name: 'no boot section', input: {}, paths: ['boot'] },
  { name: 'a config that is not an object', input: 'boot=/vmlinuz', paths: [''] },
  // CPUs.
  { name: 'more boot vCPUs than max', input: { boot, cpus: { boot: 4, max: 2 } }, paths: ['cpus.boot'] },
  { name: 'zero boot vCPUs', input: { boot, cpus: { boot: 0 } }, paths: ['cpus.boot'] },
  { name: 'more than 255 vCPUs', input: { boot, cpus: { boot: 1, max: 256 } }, paths: ['cpus.max'] },
  { name: 'a vCPU count given as a string', input: { boot, cpus: { boot: '2' } }, paths: ['cpus.boot'] },
  { name: 'a fractional vCPU count', input: { boot, cpus: { boot: 1.5 } }, paths: ['cpus.boot'] },
  { name: 'an unknown accelerator', input: { boot, machine: { accel: 'xen' } }, paths: ['machine.accel'] },
  { name: 'a CPU model with features (a comma)', input: { boot, machine: { cpuModel: 'host,+vmx' } }, paths: ['machine.cpuModel'] },
  { name: 'the CPU model "help" (QEMU would list models and exit)', input: { boot, machine: { cpuModel: 'help' } }, paths: ['machine.cpuModel'] },
  { name: 'a machine type other than q35', input: { boot, machine: { type: 'pc' } }, paths: ['machine.type'] },
  // Memory.
  { name: 'boot memory above max', input: { boot, memory: { bootMiB: 2048, maxMiB: 1024, hotplug: 'virtio-mem' } }, paths: ['memory.bootMiB', 'memory.maxMiB'] },
  { name: 'virtio-mem without max above boot', input: { boot, memory: { bootMiB: 1024, hotplug: 'virtio-mem' } }, paths: ['memory.maxMiB'] },
  { name: 'dimm with max equal to boot', input: { boot, memory: { bootMiB: 1024, maxMiB: 1024, hotplug: 'dimm' } }, paths: ['memory.maxMiB'] },
  { name: 'max above boot without hotplug', input: { boot, memory: { bootMiB: 1024, maxMiB: 2048 } }, paths: ['memory.maxMiB'] },
  { name: 'boot memory not a multiple of 2 MiB', input: { boot, memory: { bootMiB: 1025 } }, paths: ['memory.bootMiB'] },
  { name: 'a virtio-mem max not a multiple of 2 MiB', input: { boot, memory: { bootMiB: 1024, maxMiB: 2049, hotplug: 'virtio-mem' } }, paths: ['memory.maxMiB'] },
  { name: 'a dimm range not a multiple of 128 MiB', input: { boot, memory: { bootMiB: 1024, maxMiB: 1124, hotplug: 'dimm' } }, paths: ['memory.maxMiB'] },
  { name: 'boot memory under 128 MiB', input: { boot, memory: { bootMiB: 126 } }, paths: ['memory.bootMiB'] },
  { name: 'zero DIMM slots', input: { boot, memory: { bootMiB: 1024, maxMiB: 2048, hotplug: 'dimm', slots: 0 } }, paths: ['memory.slots'] },
  { name: 'an unknown memory backing', input: { boot, memory: { backing: { type: 'tmpfs' } } }, paths: ['memory.backing.type'] },
  { name: 'prealloc given as a string', input: { boot, memory: { prealloc: 'yes' } }, paths: ['memory.prealloc'] },
  // Device ids.
  { name: 'a duplicate device id', input: withDevices(disk(), disk({ path: '/var/lib/other.img' })), paths: ['devices[1].id'] },
  { name: 'a device id with a dot', input: withDevices(disk({ id: 'disk.0' })), paths: ['devices[0].id'] },
  { name: 'a device id with a comma', input: withDevices(disk({ id: 'disk0,readonly=on' })), paths: ['devices[0].id'] },
  { name: 'a device id starting with a digit', input: withDevices(disk({ id: '0disk' })), paths: ['devices[0].id'] },
  { name: 'a device id of 28 characters', input: withDevices(disk({ id: `d${'x'.repeat(27)}` })), paths: ['devices[0].id'] },
  { name: 'an empty device id', input: withDevices(disk({ id: '' })), paths: ['devices[0].id'] },
  { name: "the id 'rootfs' next to boot.image", input: { boot: { ...boot, image: '/var/lib/rootfs.img' }, devices: [disk({ id: 'rootfs' })] }, paths: ['devices[0].id'] },
  { name: 'a VM id with a space', input: { boot, id: 'my vm' }, paths: ['id'] },
  { name: 'a VM id of 65 characters', input: { boot, id: 'v'.repeat(65) }, paths: ['id'] },
  // Unknown fields and types.
  { name: 'an unknown top-level field', input: { boot, kernel: '/boot/vmlinuz' }, paths: ['kernel'] },
  { name: 'an unknown nested field', input: { boot, memory: { sizeMiB: 1024 } }, paths: ['memory.sizeMiB'] },
  { name: 'an unknown device field', input: withDevices(disk({ readonly: true })), paths: ['devices[0].readonly'] },
  { name: 'an unknown field in a tap', input: withDevices(tap({ tap: { ifname: 'tap0', script: '/etc/qemu-ifup' } })), paths: ['devices[0].tap.script'] },
  { name: 'an unknown device type', input: withDevices(disk(), { type: 'gpu', id: 'gpu0' }), paths: ['devices[1].type'] },
  { name: 'an unknown fs driver', input: withDevices(ninep({ driver: 'nfs' })), paths: ['devices[0].driver'] },
  { name: 'devices that are not an array', input: { boot, devices: { disk0: disk() } }, paths: ['devices'] },
  { name: 'seccomp given as a number', input: { boot, hardening: { seccomp: 1 } }, paths: ['hardening.seccomp'] },
  { name: 'too many root ports', input: { boot, hotplug: { rootPorts: 25 } }, paths: ['hotplug.rootPorts'] },
  // Users.
  { name: 'an unknown user keyword', input: { boot, hardening: { user: 'root' } }, paths: ['hardening.user'] },
  { name: 'uid (uid_t)-1, which means "unchanged"', input: { boot, hardening: { user: { uid: 4294967295, gid: 0 } } }, paths: ['hardening.user.uid'] },
  { name: 'a negative gid', input: { boot, hardening: { user: { uid: 1000, gid: -1 } } }, paths: ['hardening.user.gid'] },
  { name: 'a supplementary group of (gid_t)-1', input: { boot, hardening: { user: { uid: 1000, gid: 1000, groups: [10, 4294967295] } } }, paths: ['hardening.user.groups[1]'] },
  // Disks.
  { name: 'aio native without O_DIRECT', input: withDevices(disk({ aio: 'native' })), paths: ['devices[0].aio'] },
  { name: 'aio native with writethrough', input: withDevices(disk({ aio: 'native', cache: 'writethrough' })), paths: ['devices[0].aio'] },
  { name: 'an unknown disk format', input: withDevices(disk({ format: 'vmdk' })), paths: ['devices[0].format'] },
  { name: 'a disk serial with a comma', input: withDevices(disk({ serial: 'SN1,readonly=on' })), paths: ['devices[0].serial'] },
  { name: 'a disk serial of 21 characters', input: withDevices(disk({ serial: 'S'.repeat(21) })), paths: ['devices[0].serial'] },
  // NICs.
  { name: 'a tap with fds and a queue count that differs', input: withDevices(tap({ tap: { fds: [10, 11] } })), paths: ['devices[0].queues'] },
  { name: 'a tap with one vhost fd for two queues', input: withDevices(tap({ tap: { fds: [10, 11], vhostFds: [12] }, queues: 2, vhost: true })), paths: ['devices[0].tap.vhostFds'] },
  { name: 'vhost fds without vhost', input: withDevices(tap({ tap: { fds: [10], vhostFds: [12] } })), paths: ['devices[0].vhost'] },
  { name: 'the same fd for two queues', input: withDevices(tap({ tap: { fds: [10, 10] }, queues: 2 })), paths: ['devices[0].tap.fds'] },
  { name: 'an empty list of tap fds', input: withDevices(tap({ tap: { fds: [] } })), paths: ['devices[0].tap.fds'] },
  { name: 'a negative tap fd', input: withDevices(tap({ tap: { fds: [-1] } })), paths: ['devices[0].tap.fds[0]'] },
  { name: 'a disk with both a path and an fd', input: withDevices({ type: 'block', id: 'd', path: '/d.img', fd: 5 }), paths: ['devices[0].path'] },
  { name: 'a disk with neither a path nor an fd', input: withDevices({ type: 'block', id: 'd' }), paths: ['devices[0].path'] },
  { name: 'a disk with a negative fd', input: withDevices({ type: 'block', id: 'd', fd: -2 }), paths: ['devices[0].fd'] },
  { name: 'a MAC with five octets', input: withDevices(tap({ mac: '52:54:00:12:34' })), paths: ['devices[0].mac'] },
  { name: 'a MAC with dashes', input: withDevices(tap({ mac: '52-54-00-12-34-56' })), paths: ['devices[0].mac'] },
  { name: 'a multicast MAC', input: withDevices(tap({ mac: '01:00:5e:00:00:01' })), paths: ['devices[0].mac'] },
  { name: 'the broadcast MAC', input: withDevices(tap({ mac: 'ff:ff:ff:ff:ff:ff' })), paths: ['devices[0].mac'] },
  { name: 'the all-zero MAC (QEMU would pick its own)', input: withDevices(tap({ mac: '00:00:00:00:00:00' })), paths: ['devices[0].mac'] },
  { name: 'a tap fd with two queues', input: withDevices(tap({ tap: { fd: 5 }, queues: 2 })), paths: ['devices[0].queues'] },
  { name: 'a tap with both a name and an fd', input: withDevices(tap({ tap: { ifname: 'tap0', fd: 5 } })), paths: ['devices[0].tap'] },
  { name: 'a tap name of 16 characters', input: withDevices(tap({ tap: { ifname: 't'.repeat(16) } })), paths: ['devices[0].tap.ifname'] },
  { name: 'a tap name with a comma', input: withDevices(tap({ tap: { ifname: 'tap0,script=/x' } })), paths: ['devices[0].tap.ifname'] },
  { name: 'a negative tap fd', input: withDevices(tap({ tap: { fd: -1 } })), paths: ['devices[0].tap.fd'] },
  { name: '17 queues', input: withDevices(tap({ queues: 17 })), paths: ['devices[0].queues'] },
  // VFIO and vsock.
  { name: 'a PCI function above 7', input: withDevices({ type: 'vfio', id: 'gpu0', hostAddress: '0000:01:00.8' }), paths: ['devices[0].hostAddress'] },
  { name: 'a PCI device number above 0x1f', input: withDevices({ type: 'vfio', id: 'gpu0', hostAddress: '01:20.0' }), paths: ['devices[0].hostAddress'] },
  { name: 'a PCI address with a one-digit bus', input: withDevices({ type: 'vfio', id: 'gpu0', hostAddress: '1:00.0' }), paths: ['devices[0].hostAddress'] },
  { name: 'a PCI address with an option appended', input: withDevices({ type: 'vfio', id: 'gpu0', hostAddress: '01:00.0,x-vga=on' }), paths: ['devices[0].hostAddress'] },
  { name: 'vsock CID 2 (the host)', input: withDevices({ type: 'vsock', id: 'vsock0', guestCid: 2 }), paths: ['devices[0].guestCid'] },
  { name: 'vsock CID 2^32-1 (VMADDR_CID_ANY)', input: withDevices({ type: 'vsock', id: 'vsock0', guestCid: 4294967295 }), paths: ['devices[0].guestCid'] },
  { name: 'a fractional vsock CID', input: withDevices({ type: 'vsock', id: 'vsock0', guestCid: 3.5 }), paths: ['devices[0].guestCid'] },
  // Filesystems.
  { name: 'virtio-fs without shared memory', input: withDevices(vfs()), paths: ['devices[0].driver'] },
  { name: 'a virtio-fs socket path of 108 bytes', input: { boot, memory: sharedMemory, devices: [vfs({ socketPath: `/${'s'.repeat(107)}` })] }, paths: ['devices[0].socketPath'] },
  { name: 'a virtio-fs socket path of 108 bytes in UTF-8', input: { boot, memory: sharedMemory, devices: [vfs({ socketPath: `/${'é'.repeat(53)}s` })] }, paths: ['devices[0].socketPath'] },
  { name: 'a virtio-fs tag of 37 characters', input: { boot, memory: sharedMemory, devices: [vfs({ tag: 't'.repeat(37) })] }, paths: ['devices[0].tag'] },
  { name: 'a 9p tag of 32 characters (QEMU allows 31)', input: withDevices(ninep({ tag: 't'.repeat(32) })), paths: ['devices[0].tag'] },
  { name: 'a virtio-fs queue size that is not a power of two', input: { boot, memory: sharedMemory, devices: [vfs({ queueSize: 100 })] }, paths: ['devices[0].queueSize'] },
  { name: 'an unknown 9p security model', input: withDevices(ninep({ securityModel: 'mapped' })), paths: ['devices[0].securityModel'] },
  { name: 'a duplicate fs tag', input: withDevices(ninep(), ninep({ id: 'share1', path: '/srv/other' })), paths: ['devices[1].tag'] },
  // One-per-VM devices and channels.
  { name: 'two balloons', input: withDevices({ type: 'balloon', id: 'b0' }, disk(), { type: 'balloon', id: 'b1' }), paths: ['devices[2].type'] },
  { name: 'two vsock devices', input: withDevices({ type: 'vsock', id: 'v0', guestCid: 3 }, { type: 'vsock', id: 'v1', guestCid: 4 }), paths: ['devices[1].type'] },
  { name: 'two pvpanic devices', input: withDevices({ type: 'pvpanic', id: 'p0' }, { type: 'pvpanic', id: 'p1' }), paths: ['devices[1].type'] },
  { name: 'a duplicate channel name', input: withDevices({ type: 'channel', id: 'agent', name: 'agent.0' }, { type: 'channel', id: 'agent2', name: 'agent.0' }), paths: ['devices[1].name'] },
  { name: 'a channel name with a comma', input: withDevices({ type: 'channel', id: 'agent', name: 'agent.0,id=x' }), paths: ['devices[0].name'] },
  { name: 'a balloon flag given as a string', input: withDevices({ type: 'balloon', id: 'b0', deflateOnOom: 'yes' }), paths: ['devices[0].deflateOnOom'] },
];

describe('invalid sandbox configs', () => {
  it('has at least 30 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(30);
  });

  it.each(cases)('rejects $name at $paths', ({ input, paths }) => {
    const error = configError(() => parseSandboxConfig(input));
    expect(error.code).toBe('CONFIG_INVALID');
    expect([...new Set(error.paths)].sort()).toEqual([...paths].sort());
    for (const path of paths) expect(error.message).toContain(path === '' ? '(config)' : `${path}:`);
  });

  it.each(['rp0', 'rp23', 'vmem0', 'scsi0', 'vserial0', 'serial0', 'dimm0', 'vcpu1', 'svmm-anything'])(
    "rejects the reserved device id '%s'",
    (id) => {
      const error = configError(() => parseSandboxConfig(withDevices(disk(), { type: 'rng', id })));
      expect(error.paths).toEqual(['devices[1].id']);
      expect(error.issues[0]?.message).toMatch(/reserved/);
    },
  );

  it('accepts ids that only look like reserved ones', () => {
    const config = parseSandboxConfig(withDevices(disk({ id: 'rp' }), disk({ id: 'scsi', path: '/a' }), disk({ id: 'vmem0x', path: '/b' }), disk({ id: 'console', path: '/c' }), disk({ id: 'qmp', path: '/d' })));
    expect(config.devices.map((d) => d.id)).toEqual(['rp', 'scsi', 'vmem0x', 'console', 'qmp']);
  });

  it('accepts a quoted kernel parameter value with spaces, and boundary values', () => {
    const config = parseSandboxConfig({
      boot: { ...boot, kernelParams: ['dyndbg="file a.c +p"', 'a=""'] },
      memory: { bootMiB: 128, backing: { type: 'shared' } },
      devices: [
        vfs({ socketPath: `/${'s'.repeat(106)}`, tag: 't'.repeat(36) }),
        ninep({ tag: 't'.repeat(31) }),
        { type: 'vsock', id: 'vsock0', guestCid: 4294967294 },
        tap({ tap: { ifname: 't'.repeat(15) }, queues: 16 }),
        disk({ id: `d${'x'.repeat(26)}`, serial: 'S'.repeat(20) }),
      ],
      hardening: { user: { uid: 4294967294, gid: 0, groups: [] } },
      hotplug: { rootPorts: 24 },
    });
    expect(config.devices).toHaveLength(5);
  });

  it('reports every bad field of one config at once, across sections and devices', () => {
    const error = configError(() =>
      parseSandboxConfig({
        id: 'bad id',
        boot: { kernel: 'vmlinuz', kernelParams: ['a\nb'] },
        cpus: { boot: 8, max: 4 },
        memory: { bootMiB: 1001, hotplug: 'virtio-mem' },
        console: { logFile: 'log' },
        devices: [
          disk({ aio: 'native' }),
          tap({ mac: '01:02:03:04:05:06' }),
          { type: 'vsock', id: 'vsock0', guestCid: 1 },
          disk({ id: 'disk0', path: '/other.img' }),
          { type: 'vfio', id: 'rp0', hostAddress: '00:00.0' },
          vfs(),
        ],
        hotplug: { rootPorts: -1 },
        hardening: { seccomp: 'off' },
        colour: 'blue',
      }),
    );
    expect([...new Set(error.paths)].sort()).toEqual(
      [
        'id',
        'boot.kernel',
        'boot.kernelParams[0]',
        'cpus.boot',
        'memory.bootMiB',
        'memory.maxMiB',
        'console.logFile',
        'devices[0].aio',
        'devices[1].mac',
        'devices[2].guestCid',
        'devices[3].id',
        'devices[4].id',
        'devices[5].driver',
        'hotplug.rootPorts',
        'hardening.seccomp',
        'colour',
      ].sort(),
    );
  });

  it('does not modify its input', () => {
    const input = { boot: { kernel: '/boot/vmlinuz' }, devices: [tap({ mac: '52:54:00:AA:BB:CC' })] };
    const copy = structuredClone(input);
    parseSandboxConfig(input);
    expect(input).toEqual(copy);
  });
});

describe('validateHotplugDevice', () => {
  it('prefixes paths with "device" by default, or the given prefix', () => {
    expect(configError(() => validateHotplugDevice(disk({ path: 'rel.img' }))).paths).toEqual(['device.path']);
    expect(configError(() => validateHotplugDevice(tap({ mac: '01:00:00:00:00:01' }), 'devices[3]')).paths).toEqual(['devices[3].mac']);
  });

  it.each(['rp1', 'scsi0', 'vmem0', 'serial0', 'dimm2', 'vcpu3'])("refuses the reserved id '%s'", (id) => {
    expect(configError(() => validateHotplugDevice(disk({ id }))).paths).toEqual(['device.id']);
  });

  it('refuses cold-plug-only and unknown types by the type field', () => {
    expect(configError(() => validateHotplugDevice({ type: 'vsock', id: 'v0', guestCid: 3 })).paths).toEqual(['device.type']);
    expect(configError(() => validateHotplugDevice({ type: 'gpu', id: 'g0' })).paths).toEqual(['device.type']);
  });

  it('fills the defaults of a valid device', () => {
    expect(validateHotplugDevice({ type: 'vfio', id: 'gpu0', hostAddress: 'AF:00.1' })).toEqual({ type: 'vfio', id: 'gpu0', hostAddress: '0000:af:00.1' });
  });
});
