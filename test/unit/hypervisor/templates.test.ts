// The backend-neutral template rules: createVM's options, the devices a template may hold, the
// config fields a clone must share with its template; and the QEMU side's pure parts (the RAM
// mapping by version, the argv a template VM and a clone get).
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import { TemplateError } from '../../../src/hypervisor/errors.ts';
import { cloneConfigRefusal, templateConfigRefusal, templateRole, templateUseRefusal } from '../../../src/hypervisor/templates.ts';
import { buildQemuArgv } from '../../../src/qemu/argv/index.ts';
import { runtimePaths } from '../../../src/qemu/runtime-paths.ts';
import { templateArgv } from '../../../src/qemu/template/argv.ts';
import { cloneRamMode, inheritedRamPath, inheritSealedRam, templateRamProps } from '../../../src/qemu/template/ram.ts';

const input: SandboxConfigInput = {
  id: 'tmpl',
  machine: { accel: 'tcg' },
  boot: { kernel: '/k' },
  memory: { bootMiB: 256 },
  devices: [
    { type: 'channel', id: 'agent', name: 'agent.0' },
    { type: 'rng', id: 'rng0' },
  ],
};
const config = parseSandboxConfig(input);

describe('templateRole', () => {
  it('tells a template VM from a clone, refuses both at once and relative or ".." paths', () => {
    expect(templateRole({})).toBeUndefined();
    expect(templateRole({ templateDir: '/dev/shm/t/' })).toEqual({ kind: 'source', dir: '/dev/shm/t' });
    expect(templateRole({ fromTemplate: '/dev/shm/t' })).toEqual({ kind: 'clone', dir: '/dev/shm/t' });
    expect(() => templateRole({ templateDir: '/a', fromTemplate: '/b' })).toThrow(/not both/);
    expect(() => templateRole({ fromTemplate: 'rel/t' })).toThrow(/invalid fromTemplate/);
    expect(() => templateRole({ templateDir: '/a/../b' })).toThrow(/invalid templateDir/);
  });
});

describe('templateConfigRefusal', () => {
  it('accepts channels, rng, balloon, pvpanic and read-only disks by path', () => {
    const ok = parseSandboxConfig({ ...input, devices: [...(input.devices ?? []), { type: 'block', id: 'ro', path: '/img', readOnly: true }, { type: 'pvpanic', id: 'p' }, { type: 'balloon', id: 'b' }] });
    expect(templateConfigRefusal(ok, '/t')).toBeUndefined();
  });

  it.each([
    [{ type: 'vfio', id: 'gpu', hostAddress: '01:00.0' }, /VFIO/],
    [{ type: 'net', id: 'nic', tap: { ifname: 'tap0' } }, /NIC belongs to one sandbox/],
    [{ type: 'vsock', id: 'vs', guestCid: 3 }, /CID/],
    [{ type: 'block', id: 'rw', path: '/img' }, /writable disk/],
    [{ type: 'block', id: 'fd', fd: 9, readOnly: true }, /caller fd/],
    [{ type: 'fs', driver: '9p', id: 'share', tag: 's', path: '/srv' }, /9p/],
  ] as const)('refuses %o naming the device', (device, why) => {
    const refused = templateConfigRefusal(parseSandboxConfig({ ...input, devices: [...(input.devices ?? []), device] }), '/t');
    expect(refused).toBeInstanceOf(TemplateError);
    expect(refused).toMatchObject({ problem: 'device', field: 'devices.2', templateDir: '/t' });
    expect(refused?.message).toMatch(why);
  });

  it('refuses virtio-fs (vhost-user-fs) as a device, and a memory backing of the config\'s own', () => {
    const fs = parseSandboxConfig({ ...input, memory: { bootMiB: 256, backing: { type: 'shared' } }, devices: [{ type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'fs0', socketPath: '/run/v.sock' }] });
    const refused = templateConfigRefusal(fs, '/t');
    expect(refused).toMatchObject({ problem: 'device', field: 'devices.0' });
    expect(refused?.message).toMatch(/vhost-user-fs/);
    const shared = parseSandboxConfig({ ...input, memory: { bootMiB: 256, backing: { type: 'shared' } } });
    expect(templateConfigRefusal(shared, '/t')).toMatchObject({ problem: 'config', field: 'memory.backing' });
  });
});

describe('a clone and virtio-fs shares', () => {
  const share = { type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'share', sharedDir: '/srv/share' } as const;
  const withShares = (devices: readonly unknown[]) =>
    parseSandboxConfig({ ...input, id: 'clone', memory: { ...input.memory, backing: { type: 'shared' } }, devices: devices as never });

  it('refuses a share in the clone\'s config, naming its index: the caller hot-plugs it once the guest runs', () => {
    const clone = withShares([...(input.devices ?? []), share]);
    const refused = cloneConfigRefusal(config, clone, '/t');
    expect(refused).toMatchObject({ code: 'TEMPLATE_REFUSED', problem: 'config', field: `devices.${clone.devices.length - 1}` });
    expect(refused?.message).toMatch(/hotplugAddDevice once the clone's guest runs/);
  });

  it('fits with memory.backing "shared" (a RAM copy of its own, which a share hot-plugged later can serve)', () => {
    expect(cloneConfigRefusal(config, withShares(input.devices ?? []), '/t')).toBeUndefined();
  });

  it('refuses a memory.backing other than the template\'s or "shared", and shared memory over a virtio-mem template', () => {
    const onFile = parseSandboxConfig({ ...input, id: 'clone', memory: { ...input.memory, backing: { type: 'file', path: '/dev/shm/x' } } });
    expect(cloneConfigRefusal(config, onFile, '/t')).toMatchObject({ problem: 'config', field: 'memory.backing' });
    const vmemInput = { ...input, memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' as const } };
    const vmem = parseSandboxConfig(vmemInput);
    const sharedVmem = parseSandboxConfig({ ...vmemInput, id: 'clone', memory: { ...vmemInput.memory, backing: { type: 'shared' } } });
    const refused = cloneConfigRefusal(vmem, sharedVmem, '/t');
    expect(refused).toMatchObject({ problem: 'config', field: 'memory.backing' });
    expect(refused?.message).toMatch(/virtio-mem/);
  });
});

describe('templateUseRefusal', () => {
  it('refuses a detached template VM or clone (its command line could not be re-attached), naming the field', () => {
    expect(templateUseRefusal(config, '/t')).toBeUndefined();
    expect(templateUseRefusal(parseSandboxConfig({ ...input, runtime: { detached: true } }), '/t')).toMatchObject({ problem: 'config', field: 'runtime.detached' });
  });

  it('refuses a machine without templates (aarch64 virt), naming machine.arch and why', () => {
    const arm = parseSandboxConfig({ ...input, machine: { arch: 'aarch64', accel: 'tcg' } });
    const refused = templateUseRefusal(arm, '/t');
    expect(refused).toMatchObject({ code: 'TEMPLATE_REFUSED', problem: 'unsupported', field: 'machine.arch', templateDir: '/t' });
    expect(refused?.message).toMatch(/aarch64.*vmgenid/);
  });
});

describe('cloneConfigRefusal', () => {
  it('lets the per-sandbox fields differ: id, runtime, the user QEMU runs as, the console log', () => {
    const clone = parseSandboxConfig({ ...input, id: 'clone-1', runtime: { dir: '/run/x', detached: true }, hardening: { user: { uid: 5, gid: 5 } }, console: { logFile: '/var/log/c' } });
    expect(cloneConfigRefusal(config, clone, '/t')).toBeUndefined();
  });

  it.each([
    [{ cpus: { boot: 2, max: 2 } }, 'cpus.boot'],
    [{ memory: { bootMiB: 512 } }, 'memory.bootMiB'],
    [{ machine: { accel: 'kvm' } }, 'machine.accel'],
    [{ boot: { kernel: '/other' } }, 'boot.kernel'],
    [{ hardening: { seccomp: false } }, 'hardening.seccomp'],
    [{ console: { socket: false } }, 'console.socket'],
    [{ devices: [{ type: 'channel', id: 'agent', name: 'agent.1' }, { type: 'rng', id: 'rng0' }] }, 'devices.0.name'],
    [{ devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }] }, 'devices'],
  ] as const)('refuses %o, naming %s', (change, field) => {
    const refused = cloneConfigRefusal(config, parseSandboxConfig({ ...input, id: 'clone', ...change }), '/t');
    expect(refused).toMatchObject({ code: 'TEMPLATE_REFUSED', problem: 'config', field });
    expect(refused?.message).toContain(field);
  });
});

describe('QEMU template argv', () => {
  it('maps the RAM read-only and private from QEMU 8.2 on, and a sealed copy privately before', () => {
    expect(['7.2.22', '8.1.5', '8.2.0', '10.0.2'].map((v) => cloneRamMode(v))).toEqual(['map-sealed', 'map-sealed', 'map-read-only', 'map-read-only']);
    // A clone with shared memory (virtio-fs) gets a copy of its own, mapped shared, on every version.
    expect(['7.2.22', '10.0.2'].map((v) => cloneRamMode(v, true))).toEqual(['private-copy', 'private-copy']);
    expect(templateRamProps('mem-ram', 1024, '/t/memory', 'map-read-only', false)).toEqual({ 'qom-type': 'memory-backend-file', id: 'mem-ram', size: 1024, 'mem-path': '/t/memory', share: false, readonly: true, rom: false, prealloc: undefined });
    expect(templateRamProps('mem-ram', 1024, '/t/memory', 'template', true)).toMatchObject({ share: true, prealloc: true });
    // The sealed copy is mapped private (copy on write): never share=on, whose writes would be refused.
    expect(templateRamProps('mem-ram', 1024, inheritedRamPath(7), 'map-sealed', false)).toEqual({ 'qom-type': 'memory-backend-file', id: 'mem-ram', size: 1024, 'mem-path': '/proc/self/fd/7', share: false, prealloc: undefined });
    expect(templateRamProps('mem-ram', 1024, '/run/x/template-memory', 'private-copy', false)).toMatchObject({ share: true });
    // The copy goes to the first fd above every fd the argv already hands QEMU.
    const fds = [{ fd: 3, kind: 'listen' as const, path: '/run/x/qmp.sock' }, { fd: 5, kind: 'inherit' as const, from: 40 }];
    expect(inheritSealedRam({ fds }, 41)).toEqual({ argv: { fds: [...fds, { fd: 6, kind: 'inherit', from: 41 }] }, ramPath: '/proc/self/fd/6' });
  });

  it('puts the boot RAM in the template file, adds vmgenid, and for a clone -incoming defer (its state comes over QMP: no fd of its own in the argv)', () => {
    const argv = buildQemuArgv(config, runtimePaths('/run/x'));
    const ram = templateRamProps('mem-ram', 256 << 20, '/t/memory', 'template', false);
    const template = templateArgv(argv, ram);
    const machine = template.args[template.args.indexOf('-machine') + 1];
    expect(machine).toMatch(/,memory-backend=mem-ram$/);
    expect(template.args).toContain('memory-backend-file,id=mem-ram,size=268435456,mem-path=/t/memory,share=on');
    expect(template.args).toContain('vmgenid,id=svmm-vmgenid,guid=auto');
    expect(template.args).not.toContain('-incoming');
    expect(template.fds).toEqual(argv.fds);
    const clone = templateArgv(argv, ram, { incoming: true });
    expect(clone.args.slice(-2)).toEqual(['-incoming', 'defer']);
    expect(clone.args.slice(0, -2)).toEqual(template.args);
    expect(clone.fds).toEqual(argv.fds);
  });

  it('refuses an argv whose machine already has a memory backend', () => {
    const argv = buildQemuArgv(parseSandboxConfig({ ...input, memory: { bootMiB: 256, prealloc: true } }), runtimePaths('/run/x'));
    expect(() => templateArgv(argv, {})).toThrow(/without a memory backend/);
  });
});
