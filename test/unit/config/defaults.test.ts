// A valid config comes back with every default filled, and with the defaults that depend on other
// fields (cpu model, max vCPUs, max memory) derived from them.
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig } from '../../../src/hypervisor/config/index.ts';

const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
const boot = { kernel: '/boot/vmlinuz' };

describe('sandbox config defaults', () => {
  it('fills every section of a config that gives only a kernel', () => {
    const { id, ...rest } = parseSandboxConfig({ boot });
    expect(id).toMatch(UUID_V4);
    expect(rest).toEqual({
      machine: { arch: 'x86_64', type: 'q35', accel: 'kvm', cpuModel: 'host' },
      boot: { kernel: '/boot/vmlinuz', kernelParams: [] },
      cpus: { boot: 1, max: 1 },
      memory: { bootMiB: 2048, maxMiB: 2048, hotplug: 'none', slots: 8, backing: { type: 'anonymous' }, prealloc: false },
      console: { socket: true },
      devices: [],
      hotplug: { rootPorts: 2, tcgVcpuUnplug: false },
      hardening: { seccomp: true, user: 'auto', allowRoot: false },
      runtime: { qemuPath: 'qemu-system-x86_64', detached: false },
    });
  });

  it('gives each config without an id a fresh uuid, and keeps a given one', () => {
    const first = parseSandboxConfig({ boot }).id;
    const second = parseSandboxConfig({ boot }).id;
    expect(first).toMatch(UUID_V4);
    expect(second).toMatch(UUID_V4);
    expect(first).not.toBe(second);
    expect(parseSandboxConfig({ boot, id: 'sandbox-1.a_b' }).id).toBe('sandbox-1.a_b');
  });

  it('picks the CPU model from the accelerator unless one is given', () => {
    expect(parseSandboxConfig({ boot, machine: { accel: 'kvm' } }).machine.cpuModel).toBe('host');
    expect(parseSandboxConfig({ boot, machine: { accel: 'tcg' } }).machine.cpuModel).toBe('max');
    expect(parseSandboxConfig({ boot, machine: { accel: 'tcg', cpuModel: 'Skylake-Server-v4' } }).machine.cpuModel).toBe('Skylake-Server-v4');
  });

  it('sets max vCPUs to the boot count, and max memory to the boot size, when not given', () => {
    expect(parseSandboxConfig({ boot, cpus: { boot: 3 } }).cpus).toEqual({ boot: 3, max: 3 });
    expect(parseSandboxConfig({ boot, cpus: { boot: 2, max: 6 } }).cpus).toEqual({ boot: 2, max: 6 });
    expect(parseSandboxConfig({ boot, memory: { bootMiB: 512 } }).memory).toMatchObject({ bootMiB: 512, maxMiB: 512, hotplug: 'none' });
    expect(parseSandboxConfig({ boot, memory: { bootMiB: 512, maxMiB: 4096, hotplug: 'virtio-mem' } }).memory).toMatchObject({ bootMiB: 512, maxMiB: 4096 });
  });

  it('defaults the huge page mount', () => {
    expect(parseSandboxConfig({ boot, memory: { backing: { type: 'hugepages' } } }).memory.backing).toEqual({ type: 'hugepages', path: '/dev/hugepages' });
  });

  it('fills the defaults of every device kind, and normalizes MAC and PCI addresses', () => {
    const config = parseSandboxConfig({
      boot,
      memory: { backing: { type: 'shared' } },
      devices: [
        { type: 'block', id: 'disk0', path: '/var/lib/disk0.img' },
        { type: 'net', id: 'net0', tap: { ifname: 'tap0' }, mac: '52:54:00:AB:cd:EF' },
        { type: 'vfio', id: 'gpu0', hostAddress: '3B:00.0' },
        { type: 'vsock', id: 'vsock0', guestCid: 3 },
        { type: 'fs', driver: 'virtio-fs', id: 'vfs0', tag: 'vfs', socketPath: '/run/vfs.sock' },
        { type: 'fs', driver: '9p', id: 'share0', tag: 'share', path: '/srv/share' },
        { type: 'rng', id: 'rng0' },
        { type: 'balloon', id: 'balloon0' },
        { type: 'channel', id: 'agent', name: 'agent.0' },
        { type: 'pvpanic', id: 'panic0' },
      ],
    });
    expect(config.devices).toEqual([
      { type: 'block', id: 'disk0', path: '/var/lib/disk0.img', driver: 'virtio-blk', format: 'raw', readOnly: false, cache: 'writeback', aio: 'threads' },
      { type: 'net', id: 'net0', tap: { ifname: 'tap0' }, mac: '52:54:00:ab:cd:ef', queues: 1, vhost: false },
      { type: 'vfio', id: 'gpu0', hostAddress: '0000:3b:00.0' },
      { type: 'vsock', id: 'vsock0', guestCid: 3 },
      { type: 'fs', driver: 'virtio-fs', id: 'vfs0', tag: 'vfs', socketPath: '/run/vfs.sock', queueSize: 1024 },
      { type: 'fs', driver: '9p', id: 'share0', tag: 'share', path: '/srv/share', securityModel: 'none', readOnly: false },
      { type: 'rng', id: 'rng0', source: '/dev/urandom' },
      { type: 'balloon', id: 'balloon0', deflateOnOom: true, freePageReporting: false },
      { type: 'channel', id: 'agent', name: 'agent.0' },
      { type: 'pvpanic', id: 'panic0' },
    ]);
  });

  it('keeps explicit values over defaults', () => {
    const config = parseSandboxConfig({
      boot: { ...boot, initrd: '/boot/initrd.img', kernelParams: ['console=ttyS0'] },
      console: { socket: false, logFile: '/var/log/vm.log' },
      hotplug: { rootPorts: 0 },
      hardening: { seccomp: false, user: { uid: 1000, gid: 1000 } },
      runtime: { dir: '/run/vm', qemuPath: '/opt/qemu/bin/qemu-system-x86_64', detached: true, netns: '/run/netns/pod-a' },
    });
    expect(config).toMatchObject({
      boot: { kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', kernelParams: ['console=ttyS0'] },
      console: { socket: false, logFile: '/var/log/vm.log' },
      hotplug: { rootPorts: 0 },
      hardening: { seccomp: false, user: { uid: 1000, gid: 1000 } },
      runtime: { dir: '/run/vm', qemuPath: '/opt/qemu/bin/qemu-system-x86_64', detached: true, netns: '/run/netns/pod-a' },
    });
  });
});
