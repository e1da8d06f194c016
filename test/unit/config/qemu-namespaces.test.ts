// Values QEMU or virtiofsd would read differently from the config: a device id QEMU already holds
// under /machine/peripheral, and a sharedDir that virtiofsd's option parser would decode.
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig, validateHotplugDevice } from '../../../src/hypervisor/config/index.ts';
import { configError } from './config-error.ts';

const boot = { kernel: '/boot/vmlinuz' };
const memory = { backing: { type: 'shared' } };
const share = (sharedDir: string) => ({ type: 'fs', driver: 'virtio-fs', id: 'vfs0', tag: 'vfs', sharedDir });


describe("the device id 'type'", () => {
  // QEMU 7.2: `-device virtio-rng-pci,id=type` and device_add alike answer "Duplicate device ID
  // 'type'": /machine/peripheral, like every QOM object, has a property named type.
  it('is refused in the config, by path', () => {
    const error = configError(() => parseSandboxConfig({ boot, devices: [{ type: 'rng', id: 'rng0' }, { type: 'rng', id: 'type' }] }));
    expect(error.paths).toEqual(['devices[1].id']);
    expect(error.issues[0]?.message).toMatch(/reserved/);
  });

  it('is refused for hotplug', () => {
    expect(configError(() => validateHotplugDevice({ type: 'block', id: 'type', path: '/var/lib/disk.img' })).paths).toEqual(['device.id']);
  });

  it('is refused only whole and in lower case, as QEMU does', () => {
    const ids = ['Type', 'TYPE', 'types', 'type0', 'mytype', 'type-a'];
    const config = parseSandboxConfig({ boot, devices: ids.map((id) => ({ type: 'rng', id })) });
    expect(config.devices.map((d) => d.id)).toEqual(ids);
  });
});

describe('a virtio-fs sharedDir', () => {
  it.each([
    ['octal escapes of ".." (libfuse decodes \\ooo)', '/run/pods/p1/rootfs/\\056\\056/\\056\\056/elsewhere'],
    ['an escaped comma', '/srv/share\\,allow_other'],
    ['a trailing backslash', '/srv/share\\'],
    ['a lone backslash in a name', '/srv/a\\b'],
  ])('with %s is refused by path, saying why', (_, sharedDir) => {
    const error = configError(() => parseSandboxConfig({ boot, memory, devices: [share(sharedDir)] }));
    // One path (an escaped comma is also reported as a comma).
    expect([...new Set(error.paths)]).toEqual(['devices[0].sharedDir']);
    expect(error.message).toMatch(/devices\[0\]\.sharedDir: must not contain a backslash \(virtiofsd decodes backslash escapes/);
  });

  it('keeps refusing a comma, and accepts an ordinary path', () => {
    expect(configError(() => parseSandboxConfig({ boot, memory, devices: [share('/srv/a,b')] })).paths).toEqual(['devices[0].sharedDir']);
    const config = parseSandboxConfig({ boot, memory, devices: [share('/run/pods/p1/rootfs/shared dir.d/é')] });
    expect(config.devices[0]).toMatchObject({ sharedDir: '/run/pods/p1/rootfs/shared dir.d/é' });
  });

  it('does not affect other paths, which QEMU takes literally', () => {
    const config = parseSandboxConfig({ boot, devices: [{ type: 'block', id: 'disk0', path: '/var/lib/a\\056b.img' }, { type: 'fs', driver: '9p', id: 'p9', tag: 'p9', path: '/srv/x\\y' }] });
    expect(config.devices).toHaveLength(2);
  });
});
