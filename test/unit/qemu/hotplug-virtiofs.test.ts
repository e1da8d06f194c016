// Hot-plugging virtio-fs shares on a fake QEMU: the exact QMP sequence (chardev-add as a unix socket
// client, then vhost-user-fs-pci on a root port), the backend's virtiofsd started first for a
// sharedDir, each failure rolled back newest first (chardev, then daemon), removal in the order
// device_del → DEVICE_DELETED → chardev-remove → daemon stopped, and what is refused before
// anything is sent.
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../../src/hypervisor/config/index.ts';
import { HelperError, HotplugError, UnsupportedOperationError } from '../../../src/hypervisor/errors.ts';
import type { HotplugContext, HotplugHelpers } from '../../../src/qemu/hotplug/context.ts';
import { hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import type { HotplugDevice } from '../../../src/hypervisor/types.ts';
import { QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { loggedError, useHotplugHarness } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();

const SHARED = { memory: { bootMiB: 256, backing: { type: 'shared' as const } } };
const socketShare: HotplugDevice = { type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'share', socketPath: '/run/caller/vfs.sock' };
const dirShare: HotplugDevice = { type: 'fs', driver: 'virtio-fs', id: 'fs0', tag: 'share', sharedDir: '/srv/share', cache: 'none' };

/** What happened, in order: QMP commands that change QEMU, and the helper calls. */
type Journal = string[];

/** Fake helpers writing to `journal`; `failStart` makes the daemon's start fail as virtiofsd's does. */
function fakeHelpers(journal: Journal, options: { failStart?: boolean; failStop?: boolean } = {}): HotplugHelpers {
  return {
    socketOf: (id) => `/run/vm/fs-${id}.sock`,
    startVirtiofsd: (device) => {
      journal.push(`start virtiofsd ${device.id} ${device.sharedDir} cache=${String(device.cache)}`);
      return options.failStart ? Promise.reject(new HelperError('virtiofsd', device.id, 'exited before it was ready', { exitCode: 1, stderrTail: 'no such dir' })) : Promise.resolve();
    },
    stop: (id) => {
      journal.push(`stop virtiofsd ${id}`);
      return options.failStop ? Promise.reject(new Error('virtiofsd survived SIGKILL')) : Promise.resolve();
    },
  };
}

/** Answers `commands` with {} (or QEMU's refusal for `refuse`), noting each in `journal`. */
function serve(journal: Journal, commands: string[], refuse: Record<string, string> = {}): void {
  for (const name of commands) {
    h.server.handle(name, (args) => {
      journal.push(name);
      const why = refuse[name];
      if (why !== undefined) throw new QmpErrorReply('GenericError', why);
      if (name === 'device_del') h.server.sendEvent('DEVICE_DELETED', { device: args?.['id'] });
      return {};
    });
  }
}

function sharedContext(journal: Journal, options: Parameters<typeof fakeHelpers>[1] = {}): HotplugContext {
  return { ...h.context(SHARED), helpers: fakeHelpers(journal, options) };
}

const CHARDEV_ADD = (path: string) => ['chardev-add', { id: 'chr-fs0', backend: { type: 'socket', data: { addr: { type: 'unix', data: { path } }, server: false } } }];
const DEVICE_ADD = ['device_add', { driver: 'vhost-user-fs-pci', id: 'fs0', chardev: 'chr-fs0', tag: 'share', 'queue-size': 1024, bus: 'rp0' }];

describe('hot-adding a share', () => {
  it('a socketPath share: chardev-add connecting to the caller\'s daemon, then vhost-user-fs-pci on the first free port; no helper', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal);
    serve(journal, ['chardev-add', 'device_add']);
    expect(await hotplugDevice(ctx, socketShare)).toEqual({ id: 'fs0', type: 'fs', bus: 'rp0' });
    expect(h.changes()).toEqual([CHARDEV_ADD('/run/caller/vfs.sock'), DEVICE_ADD]);
    expect(journal).toEqual(['chardev-add', 'device_add']);
    expect(ctx.state.devices.map(({ id, bus, backends, device }) => ({ id, bus, backends, socketPath: device.type === 'fs' ? device.socketPath : undefined }))).toEqual([
      { id: 'fs0', bus: 'rp0', backends: [{ kind: 'chardev', id: 'chr-fs0' }], socketPath: '/run/caller/vfs.sock' },
    ]);
  });

  it('a sharedDir share: its virtiofsd first (the device\'s options), then the chardev to the daemon\'s socket, then the frontend', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal);
    serve(journal, ['chardev-add', 'device_add']);
    await hotplugDevice(ctx, dirShare);
    expect(journal).toEqual(['start virtiofsd fs0 /srv/share cache=none', 'chardev-add', 'device_add']);
    expect(h.changes()).toEqual([CHARDEV_ADD('/run/vm/fs-fs0.sock'), DEVICE_ADD]);
    // Newest first: the chardev is deleted before its daemon is stopped.
    expect(ctx.state.devices[0]?.backends).toEqual([
      { kind: 'chardev', id: 'chr-fs0' },
      { kind: 'helper', deviceId: 'fs0' },
    ]);
  });
});

describe('a hot-add that fails is rolled back newest first', () => {
  it('at device_add: chardev-remove, then the daemon is stopped; the port is free again', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal);
    serve(journal, ['chardev-add', 'device_add', 'chardev-remove'], { device_add: "vhost-user-fs: unable to set up the vhost-user backend" });
    const error = await hotplugDevice(ctx, dirShare).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'fs0', step: 'device_add' });
    expect(journal).toEqual(['start virtiofsd fs0 /srv/share cache=none', 'chardev-add', 'device_add', 'chardev-remove', 'stop virtiofsd fs0']);
    expect(h.changes().at(-1)).toEqual(['chardev-remove', { id: 'chr-fs0' }]);
    expect(ctx.state.devices).toEqual([]);
    serve(journal, ['device_add'], {});
    expect((await hotplugDevice(ctx, { ...socketShare, id: 'fs1' })).bus).toBe('rp0');
  });

  it('at chardev-add (the daemon\'s socket refused): the daemon is stopped, nothing else was made', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal);
    serve(journal, ['chardev-add'], { 'chardev-add': "Failed to connect to '/run/vm/fs-fs0.sock': Connection refused" });
    const error = await hotplugDevice(ctx, dirShare).catch((e: unknown) => e);
    expect(error).toMatchObject({ code: 'HOTPLUG_FAILED', deviceId: 'fs0', step: 'chardev-add' });
    expect(journal).toEqual(['start virtiofsd fs0 /srv/share cache=none', 'chardev-add', 'stop virtiofsd fs0']);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a daemon that does not start is its HelperError, and no QMP command is sent', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal, { failStart: true });
    serve(journal, ['chardev-add', 'device_add']);
    const error = await hotplugDevice(ctx, dirShare).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HelperError);
    expect(journal).toEqual(['start virtiofsd fs0 /srv/share cache=none']);
    expect(h.changes()).toEqual([]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a daemon that cannot be stopped during the rollback is logged, and the hot-add still fails at its step', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal, { failStop: true });
    serve(journal, ['chardev-add', 'device_add', 'chardev-remove'], { device_add: 'nope' });
    await expect(hotplugDevice(ctx, dirShare)).rejects.toMatchObject({ step: 'device_add' });
    expect(journal.slice(-2)).toEqual(['chardev-remove', 'stop virtiofsd fs0']);
    expect(h.logs.filter((r) => r.level === 'error')).toEqual([{ level: 'error', msg: 'rollback step failed', step: 'stop virtiofsd', err: loggedError('survived SIGKILL') }]);
  });
});

describe('removing a share', () => {
  it('device_del, its DEVICE_DELETED, chardev-remove, then its daemon stopped', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal);
    serve(journal, ['chardev-add', 'device_add', 'device_del', 'chardev-remove']);
    await hotplugDevice(ctx, dirShare);
    journal.length = 0;
    h.server.received.length = 0;
    await unplugDevice(ctx, 'fs0');
    expect(journal).toEqual(['device_del', 'chardev-remove', 'stop virtiofsd fs0']);
    expect(h.changes()).toEqual([
      ['device_del', { id: 'fs0' }],
      ['chardev-remove', { id: 'chr-fs0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a chardev-remove QEMU refuses fails the removal at that step; a retry resumes there and stops the daemon', async () => {
    const journal: Journal = [];
    const ctx = sharedContext(journal);
    serve(journal, ['chardev-add', 'device_add', 'device_del', 'chardev-remove'], {});
    await hotplugDevice(ctx, dirShare);
    serve(journal, ['chardev-remove'], { 'chardev-remove': "Chardev 'chr-fs0' is busy" });
    journal.length = 0;
    await expect(unplugDevice(ctx, 'fs0')).rejects.toMatchObject({ code: 'HOTPLUG_FAILED', step: 'chardev-remove' });
    expect(journal).toEqual(['device_del', 'chardev-remove']);
    expect(ctx.state.devices.map((d) => d.backends)).toEqual([[{ kind: 'chardev', id: 'chr-fs0' }, { kind: 'helper', deviceId: 'fs0' }]]);
    serve(journal, ['chardev-remove'], {});
    h.server.handle('device_del', () => {
      journal.push('device_del');
      throw new QmpErrorReply('DeviceNotFound', "Device 'fs0' not found");
    });
    journal.length = 0;
    await unplugDevice(ctx, 'fs0');
    expect(journal).toEqual(['device_del', 'chardev-remove', 'stop virtiofsd fs0']);
    expect(ctx.state.devices).toEqual([]);
  });
});

describe('refused before anything is sent', () => {
  it('on anonymous guest memory: ConfigError naming device.driver, as a cold share is refused', async () => {
    const journal: Journal = [];
    const ctx = { ...h.context(), helpers: fakeHelpers(journal) };
    const error = (await hotplugDevice(ctx, dirShare).catch((e: unknown) => e)) as ConfigError;
    expect(error).toBeInstanceOf(ConfigError);
    expect(error.paths).toEqual(['device.driver']);
    expect(error.message).toMatch(/memory\.backing/);
    expect(journal).toEqual([]);
    expect(h.sent()).toEqual([]);
  });

  it('a tag another share has (cold or hot): ConfigError naming device.tag', async () => {
    const journal: Journal = [];
    const cold = { ...SHARED, devices: [{ type: 'fs' as const, driver: 'virtio-fs' as const, id: 'cold', tag: 'share', socketPath: '/run/c.sock' }] };
    const ctx = { ...h.context(cold), helpers: fakeHelpers(journal) };
    await expect(hotplugDevice(ctx, dirShare)).rejects.toMatchObject({ code: 'CONFIG_INVALID', paths: ['device.tag'] });
    const hotCtx = sharedContext(journal);
    serve(journal, ['chardev-add', 'device_add']);
    await hotplugDevice(hotCtx, socketShare);
    await expect(hotplugDevice(hotCtx, { ...dirShare, id: 'fs1' })).rejects.toMatchObject({ code: 'CONFIG_INVALID', paths: ['device.tag'] });
    expect(journal).toEqual(['chardev-add', 'device_add']);
  });

  it('a 9p share: UnsupportedOperationError (9p is cold-plugged only)', async () => {
    const ctx = sharedContext([]);
    const ninep = { type: 'fs', driver: '9p', id: 'p9', tag: 'p9', path: '/srv' } as unknown as HotplugDevice;
    const error = await hotplugDevice(ctx, ninep).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(UnsupportedOperationError);
    expect((error as Error).message).toMatch(/9p shares can only be cold-plugged/);
    expect(h.sent()).toEqual([]);
  });
});
