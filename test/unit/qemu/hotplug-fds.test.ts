// Hotplug from the caller's file descriptors, command by command against a fake QMP server (the fds
// really go through build/svmm-sendfd; the fake only sees the bytes): taps as getfd names taken by
// netdev_add, disks as fd sets, every name and set released on rollback and removal, in order.
import { vcpuRules } from '../../../src/hypervisor/resources.ts';
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, parseSandboxConfig } from '../../../src/hypervisor/config/index.ts';
import { HotplugError } from '../../../src/hypervisor/errors.ts';
import { QmpClient, type FdSender } from '../../../src/qmp/index.ts';
import { defaultFdSender } from '../../../src/qmp/fd-sender.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { hotplugDevice, unplugDevice } from '../../../src/qemu/hotplug/devices.ts';
import { emptyHotplugState } from '../../../src/qemu/hotplug/state.ts';
import { Deadline } from '../../../src/util/deadline.ts';
import { FakeQmpServer, NO_REPLY, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { loggedError, recordingLogger, type LogRecord } from '../../helpers/hotplug-harness.ts';

let server: FakeQmpServer;
let qmp: QmpClient;
const deadlines: Deadline[] = [];
const opened: number[] = [];
/** Which fd each command was sent with, in order (the fake sees only the bytes). */
let passed: [string, number][] = [];
let logs: LogRecord[] = [];
/** The images the fds are opened on, removed after the file's tests. */
let scratch: string;

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'svmm-hotplug-fds-'));
});

afterAll(() => rmSync(scratch, { recursive: true, force: true }));

/** The package's own fd sender, watched. */
const recordingFdSender: FdSender = {
  send(socket, message, fd, command) {
    passed.push([command, fd]);
    return defaultFdSender(command).send(socket, message, fd, command);
  },
};

beforeEach(async () => {
  passed = [];
  logs = [];
  server = await FakeQmpServer.start();
  qmp = await QmpClient.connect(server.path, { fdSender: recordingFdSender });
  server.handle('device_del', (args) => {
    server.sendEvent('DEVICE_DELETED', { device: String(args?.['id']), path: `/machine/peripheral/${String(args?.['id'])}` });
    return {};
  });
  for (const c of ['getfd', 'closefd', 'netdev_add', 'netdev_del', 'device_add', 'blockdev-add', 'blockdev-del', 'remove-fd']) server.handle(c, () => ({}));
  server.handle('add-fd', () => ({ 'fdset-id': 7, fd: 31 }));
});

afterEach(async () => {
  vi.useRealTimers();
  for (const d of deadlines.splice(0)) d.dispose();
  for (const fd of opened.splice(0)) closeSync(fd);
  await qmp.close();
  await server.close();
});

function context(timeoutMs = 5_000): HotplugContext {
  const deadline = new Deadline('test', { timeoutMs });
  deadlines.push(deadline);
  const recorded = recordingLogger();
  logs = recorded.records;
  return {
    qmp,
    config: parseSandboxConfig({ boot: { kernel: '/k' }, hotplug: { rootPorts: 2 } }),
    state: emptyHotplugState(),
    vcpuRules: vcpuRules(parseSandboxConfig({ boot: { kernel: '/k' }, hotplug: { rootPorts: 2 } }), undefined),
    deadline,
    logger: recorded.logger,
    removalTimeoutMs: 2_000,
    freedSlotSettleMs: 2_000,
  };
}

const errorLogs = (): LogRecord[] => logs.filter((r) => r.level === 'error');
const refuse = (desc: string) => () => {
  throw new QmpErrorReply('GenericError', desc);
};

function open(flags: 'r' | 'r+'): number {
  const path = join(scratch, 'disk.img');
  writeFileSync(path, 'x');
  const fd = openSync(path, flags);
  opened.push(fd);
  return fd;
}

const sent = (): [string, Record<string, unknown> | undefined][] => server.received.filter((c) => c.execute !== 'qmp_capabilities').map((c) => [c.execute, c.arguments]);

describe('a NIC from tap fds', () => {
  it('names each queue fd and vhost fd with getfd, then netdev_add takes them by name (fds=, vhostfds=)', async () => {
    const ctx = context();
    const [q0, q1, v0, v1] = [open('r+'), open('r+'), open('r+'), open('r+')];
    await hotplugDevice(ctx, { type: 'net', id: 'eth1', tap: { fds: [q0, q1], vhostFds: [v0, v1] }, queues: 2, vhost: true, mac: '52:54:00:00:00:01' });
    expect(sent()).toEqual([
      ['getfd', { fdname: 'net-eth1-q0' }],
      ['getfd', { fdname: 'net-eth1-q1' }],
      ['getfd', { fdname: 'net-eth1-vhost0' }],
      ['getfd', { fdname: 'net-eth1-vhost1' }],
      ['netdev_add', { type: 'tap', id: 'net-eth1', fds: 'net-eth1-q0:net-eth1-q1', vhostfds: 'net-eth1-vhost0:net-eth1-vhost1', vhost: true }],
      ['device_add', { driver: 'virtio-net-pci', id: 'eth1', netdev: 'net-eth1', bus: 'rp0', mac: '52:54:00:00:00:01', mq: true, vectors: 6 }],
    ]);
    // Each getfd carries its own fd, in the order of the names.
    expect(passed).toEqual([
      ['getfd', q0],
      ['getfd', q1],
      ['getfd', v0],
      ['getfd', v1],
    ]);
    // netdev_add took the names: removal deletes the netdev, which closes the taps.
    await unplugDevice(ctx, 'eth1');
    expect(sent().slice(6)).toEqual([
      ['device_del', { id: 'eth1' }],
      ['netdev_del', { id: 'net-eth1' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('one fd is netdev_add fd=<name>', async () => {
    const ctx = context();
    await hotplugDevice(ctx, { type: 'net', id: 'eth2', tap: { fds: [open('r+')] } });
    expect(sent().slice(0, 2)).toEqual([
      ['getfd', { fdname: 'net-eth2-q0' }],
      ['netdev_add', { type: 'tap', id: 'net-eth2', fd: 'net-eth2-q0' }],
    ]);
  });

  it('a refused netdev_add closes every name already sent, newest first, and frees the port', async () => {
    const ctx = context();
    server.handle('netdev_add', () => {
      throw new QmpErrorReply('GenericError', 'could not configure tap');
    });
    const error = await hotplugDevice(ctx, { type: 'net', id: 'eth3', tap: { fds: [open('r+'), open('r+')] }, queues: 2 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect((error as HotplugError).step).toBe('netdev_add');
    expect(sent()).toEqual([
      ['getfd', { fdname: 'net-eth3-q0' }],
      ['getfd', { fdname: 'net-eth3-q1' }],
      ['netdev_add', { type: 'tap', id: 'net-eth3', fds: 'net-eth3-q0:net-eth3-q1' }],
      ['closefd', { fdname: 'net-eth3-q1' }],
      ['closefd', { fdname: 'net-eth3-q0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
    expect(errorLogs()).toEqual([]);
  });

  it('a refused getfd fails the hot-add at getfd and closes only the names already sent', async () => {
    const ctx = context();
    let getfds = 0;
    server.handle('getfd', () => {
      if (++getfds === 2) throw new QmpErrorReply('GenericError', 'No file descriptor supplied via SCM_RIGHTS');
      return {};
    });
    const error = await hotplugDevice(ctx, { type: 'net', id: 'eth6', tap: { fds: [open('r+'), open('r+')] }, queues: 2 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'eth6', step: 'getfd' });
    expect(sent()).toEqual([
      ['getfd', { fdname: 'net-eth6-q0' }],
      ['getfd', { fdname: 'net-eth6-q1' }],
      ['closefd', { fdname: 'net-eth6-q0' }],
    ]);
    expect(ctx.state.devices).toEqual([]);
    expect(errorLogs()).toEqual([]);
  });

  it('a closefd QEMU refuses for another reason than "not found" is a logged rollback failure, and the other names are still closed', async () => {
    const ctx = context();
    server.handle('netdev_add', refuse('could not configure tap'));
    server.handle('closefd', (args) => {
      if (args?.['fdname'] === 'net-eth7-q1') throw new QmpErrorReply('GenericError', 'closefd is not allowed now');
      return {};
    });
    const error = await hotplugDevice(ctx, { type: 'net', id: 'eth7', tap: { fds: [open('r+'), open('r+')] }, queues: 2 }).catch((e: unknown) => e);
    expect(error).toMatchObject({ deviceId: 'eth7', step: 'netdev_add' });
    expect(sent().slice(3)).toEqual([
      ['closefd', { fdname: 'net-eth7-q1' }],
      ['closefd', { fdname: 'net-eth7-q0' }],
    ]);
    expect(errorLogs()).toEqual([{ level: 'error', msg: 'rollback step failed', step: 'closefd', err: loggedError('closefd is not allowed now') }]);
  });

  it('a closefd QEMU never answers gives up after its own 5 s bound (not the client’s 30 s), logged', async () => {
    const ctx = context(60_000);
    server.handle('netdev_add', refuse('could not configure tap'));
    server.handle('closefd', () => NO_REPLY);
    // Only setTimeout is faked: the socket, the fd helper and the fake server run as usual.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const plugged = hotplugDevice(ctx, { type: 'net', id: 'eth8', tap: { fds: [open('r+')] } }).catch((e: unknown) => e);
    await server.nextCommand('closefd');
    await vi.advanceTimersByTimeAsync(5_000);
    const error = await plugged;
    expect(error).toMatchObject({ deviceId: 'eth8', step: 'netdev_add' });
    expect(errorLogs()).toEqual([{ level: 'error', msg: 'rollback step failed', step: 'closefd', err: loggedError('closefd') }]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a refused device_add deletes the netdev, then closes the names (already taken: "not found" is fine)', async () => {
    const ctx = context();
    server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'bus rp0 is full');
    });
    server.handle('closefd', (args) => {
      throw new QmpErrorReply('GenericError', `File descriptor named '${String(args?.['fdname'])}' not found`);
    });
    const error = await hotplugDevice(ctx, { type: 'net', id: 'eth4', tap: { fds: [open('r+')] } }).catch((e: unknown) => e);
    expect((error as HotplugError).step).toBe('device_add');
    expect(sent().slice(2)).toEqual([
      ['device_add', { driver: 'virtio-net-pci', id: 'eth4', netdev: 'net-eth4', bus: 'rp0' }],
      ['netdev_del', { id: 'net-eth4' }],
      ['closefd', { fdname: 'net-eth4-q0' }],
    ]);
    expect(errorLogs()).toEqual([]);
  });

  it('refuses a closed fd, naming it, before sending anything', async () => {
    const ctx = context();
    const good = open('r+');
    const closed = openSync('/dev/null', 'r');
    closeSync(closed);
    const error = await hotplugDevice(ctx, { type: 'net', id: 'eth5', tap: { fds: [good, closed] }, queues: 2 }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).paths).toEqual(['device.tap.fds[1]']);
    expect(sent()).toEqual([]);
    expect(ctx.state.devices).toEqual([]);
  });
});

describe('a disk from an fd', () => {
  it('puts the fd in a set of its own (add-fd) and opens /dev/fdset/<id>; removal deletes the node, then the set', async () => {
    const ctx = context();
    const fd = open('r+');
    await hotplugDevice(ctx, { type: 'block', id: 'd1', fd });
    expect(sent()).toEqual([
      ['add-fd', { opaque: 'sandbox-vmm:d1' }],
      [
        'blockdev-add',
        {
          driver: 'raw',
          'node-name': 'drv-d1',
          'read-only': false,
          cache: { direct: false, 'no-flush': false },
          file: { driver: 'file', filename: '/dev/fdset/7', aio: 'threads', 'read-only': false, cache: { direct: false, 'no-flush': false } },
        },
      ],
      ['device_add', { driver: 'virtio-blk-pci', id: 'd1', drive: 'drv-d1', bus: 'rp0', 'write-cache': 'on' }],
    ]);
    expect(passed).toEqual([['add-fd', fd]]);
    expect(ctx.state.devices[0]?.backends).toEqual([
      { kind: 'blockdev', nodeName: 'drv-d1' },
      { kind: 'fdset', id: 7 },
    ]);
    await unplugDevice(ctx, 'd1');
    expect(sent().slice(3)).toEqual([
      ['device_del', { id: 'd1' }],
      ['blockdev-del', { 'node-name': 'drv-d1' }],
      ['remove-fd', { 'fdset-id': 7 }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a refused blockdev-add removes the fd set again', async () => {
    const ctx = context();
    server.handle('blockdev-add', () => {
      throw new QmpErrorReply('GenericError', "Could not open '/dev/fdset/7': Permission denied");
    });
    const error = await hotplugDevice(ctx, { type: 'block', id: 'd2', fd: open('r+') }).catch((e: unknown) => e);
    expect((error as HotplugError).step).toBe('blockdev-add');
    expect(sent().map(([c, a]) => [c, c === 'blockdev-add' ? undefined : a])).toEqual([
      ['add-fd', { opaque: 'sandbox-vmm:d2' }],
      ['blockdev-add', undefined],
      ['remove-fd', { 'fdset-id': 7 }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('a refused add-fd fails the hot-add at add-fd with nothing to take back, and frees the port', async () => {
    const ctx = context();
    server.handle('add-fd', refuse('No file descriptor supplied via SCM_RIGHTS'));
    const error = await hotplugDevice(ctx, { type: 'block', id: 'd4', fd: open('r+') }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'd4', step: 'add-fd' });
    expect(sent()).toEqual([['add-fd', { opaque: 'sandbox-vmm:d4' }]]);
    expect(ctx.state.devices).toEqual([]);
    expect(errorLogs()).toEqual([]);
    server.handle('add-fd', () => ({ 'fdset-id': 8, fd: 32 }));
    expect((await hotplugDevice(ctx, { type: 'block', id: 'd5', fd: open('r+') })).bus).toBe('rp0');
  });

  it('a remove-fd that fails takes the rollback on (logged), and the fd set’s step is named', async () => {
    const ctx = context();
    server.handle('device_add', refuse('Bus rp0 is full'));
    server.handle('remove-fd', refuse('fd set 7 is busy'));
    const error = await hotplugDevice(ctx, { type: 'block', id: 'd6', fd: open('r+') }).catch((e: unknown) => e);
    expect(error).toMatchObject({ deviceId: 'd6', step: 'device_add' });
    expect(sent().slice(2).map(([c, a]) => [c, c === 'device_add' ? undefined : a])).toEqual([
      ['device_add', undefined],
      ['blockdev-del', { 'node-name': 'drv-d6' }],
      ['remove-fd', { 'fdset-id': 7 }],
    ]);
    expect(errorLogs()).toEqual([{ level: 'error', msg: 'rollback step failed', step: 'remove-fd', err: loggedError('fd set 7 is busy') }]);
  });

  it('a removal whose remove-fd QEMU refuses fails at remove-fd; the retry resumes with the fd set alone', async () => {
    const ctx = context();
    await hotplugDevice(ctx, { type: 'block', id: 'd7', fd: open('r+') });
    server.handle('remove-fd', refuse('fd set 7 is busy'));
    const error = await unplugDevice(ctx, 'd7').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'd7', step: 'remove-fd' });
    expect(ctx.state.devices.map((d) => [d.id, d.backends])).toEqual([['d7', [{ kind: 'fdset', id: 7 }]]]);
    server.handle('remove-fd', () => ({}));
    server.handle('device_del', () => {
      throw new QmpErrorReply('DeviceNotFound', "Device 'd7' not found");
    });
    await unplugDevice(ctx, 'd7');
    expect(sent().slice(3)).toEqual([
      ['device_del', { id: 'd7' }],
      ['blockdev-del', { 'node-name': 'drv-d7' }],
      ['remove-fd', { 'fdset-id': 7 }],
      ['device_del', { id: 'd7' }],
      ['remove-fd', { 'fdset-id': 7 }],
    ]);
    expect(ctx.state.devices).toEqual([]);
  });

  it('refuses an fd whose access mode is not the disk’s (QEMU takes only a matching one from the set)', async () => {
    const ctx = context();
    const readOnly = await hotplugDevice(ctx, { type: 'block', id: 'd3', fd: open('r') }).catch((e: unknown) => e);
    expect((readOnly as ConfigError).issues).toEqual([{ path: 'device.fd', message: expect.stringMatching(/is open O_RDONLY, but must be open O_RDWR$/) as unknown }]);
    const readWrite = await hotplugDevice(ctx, { type: 'block', id: 'd3', fd: open('r+'), readOnly: true }).catch((e: unknown) => e);
    expect((readWrite as ConfigError).issues).toEqual([{ path: 'device.fd', message: expect.stringMatching(/is open O_RDWR, but must be open O_RDONLY \(a readOnly disk\)$/) as unknown }]);
    expect(sent()).toEqual([]);
  });
});
