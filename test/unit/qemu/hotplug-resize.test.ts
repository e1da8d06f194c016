// vCPU and memory resizes against a fake QEMU, beyond the happy path: which slot and id a vCPU gets,
// which DEVICE_DELETED and MEMORY_DEVICE_SIZE_CHANGE events count, the polling fallback when the
// size-change event never comes, DIMM slots running out, and each failing step.
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HotplugError, NoFreeSlotError, ResizeIncompleteError } from '../../../src/hypervisor/errors.ts';
import { QmpCommandError } from '../../../src/qmp/index.ts';
import type { HotplugContext } from '../../../src/qemu/hotplug/context.ts';
import { resizeVcpus } from '../../../src/qemu/hotplug/cpus.ts';
import { resizeMemory } from '../../../src/qemu/hotplug/memory.ts';
import { NO_REPLY, QmpErrorReply } from '../../helpers/fake-qmp-server.ts';
import { loggedError, useHotplugHarness } from '../../helpers/hotplug-harness.ts';

const h = useHotplugHarness();
const MiB = 1024 * 1024;

/** The QMP client logs a listener or predicate that threw; none of these tests may cause one. */
const listenerTrouble = () => h.qmpLogs.filter((r) => r.level === 'warn' || r.level === 'error');

describe('vCPU hot-add', () => {
  /** QEMU's slots for cores 0..3 in the order given; core 0 is the boot vCPU. */
  function offerCores(order: number[], plugged: number[] = [0]): void {
    h.server.handle('query-hotpluggable-cpus', () =>
      order.map((core) => ({
        type: 'max-x86_64-cpu',
        'vcpus-count': 1,
        props: { 'core-id': core, 'thread-id': 0 },
        ...(plugged.includes(core) ? { 'qom-path': core === 0 ? '/machine/unattached/device[0]' : `/machine/peripheral/vcpu${core}` } : {}),
      })),
    );
    h.server.handle('device_add', (args) => {
      plugged.push(Number(args?.['core-id']));
      return {};
    });
  }

  it('takes the lowest free core whatever order QEMU lists the slots in, and logs the resize', async () => {
    const ctx = h.context({ cpus: { boot: 1, max: 4 } });
    offerCores([0, 1, 2, 3]);
    expect(await resizeVcpus(ctx, 3)).toEqual({ previous: 1, current: 3 });
    expect(h.changes()).toEqual([
      ['device_add', { driver: 'max-x86_64-cpu', id: 'vcpu1', 'core-id': 1, 'thread-id': 0 }],
      ['device_add', { driver: 'max-x86_64-cpu', id: 'vcpu2', 'core-id': 2, 'thread-id': 0 }],
    ]);
    expect(ctx.state.cpus).toEqual([
      { qemuId: 'vcpu1', coreId: 1 },
      { qemuId: 'vcpu2', coreId: 2 },
    ]);
    expect(h.logs).toEqual([{ level: 'info', msg: 'vcpus resized', previous: 1, current: 3 }]);
  });

  it('takes the lowest free core from a shuffled list too', async () => {
    const ctx = h.context({ cpus: { boot: 1, max: 4 } });
    offerCores([2, 0, 3, 1]);
    await resizeVcpus(ctx, 2);
    expect(ctx.state.cpus).toEqual([{ qemuId: 'vcpu1', coreId: 1 }]);
  });

  it('names a vCPU after its place when QEMU’s slots carry no core-id', async () => {
    const ctx = h.context({ cpus: { boot: 2, max: 4 } });
    const plugged = new Set([0, 1]);
    h.server.handle('query-hotpluggable-cpus', () =>
      [0, 1, 2, 3].map((socket) => ({
        type: 'max-x86_64-cpu',
        'vcpus-count': 1,
        props: { 'socket-id': socket },
        ...(plugged.has(socket) ? { 'qom-path': `/machine/x/cpu${socket}` } : {}),
      })),
    );
    h.server.handle('device_add', (args) => {
      plugged.add(Number(args?.['socket-id']));
      return {};
    });
    await resizeVcpus(ctx, 4);
    expect(h.changes()).toEqual([
      ['device_add', { driver: 'max-x86_64-cpu', id: 'vcpu2', 'socket-id': 2 }],
      ['device_add', { driver: 'max-x86_64-cpu', id: 'vcpu3', 'socket-id': 3 }],
    ]);
    expect(ctx.state.cpus).toEqual([
      { qemuId: 'vcpu2', coreId: 2 },
      { qemuId: 'vcpu3', coreId: 3 },
    ]);
  });

  it('names the vCPU after the core QEMU offers, not after how many there are', async () => {
    const ctx = h.context({ cpus: { boot: 1, max: 8 } });
    offerCores([0, 1, 2, 3, 4, 5], [0, 1, 2, 3, 4]);
    await resizeVcpus(ctx, 2);
    expect(h.changes()).toEqual([['device_add', { driver: 'max-x86_64-cpu', id: 'vcpu5', 'core-id': 5, 'thread-id': 0 }]]);
    expect(ctx.state.cpus).toEqual([{ qemuId: 'vcpu5', coreId: 5 }]);
  });

  it('no free slot in QEMU is a HotplugError naming query-hotpluggable-cpus, with nothing added', async () => {
    const ctx = h.context({ cpus: { boot: 1, max: 4 } });
    offerCores([0, 1, 2, 3], [0, 1, 2, 3]);
    const error = await resizeVcpus(ctx, 2).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'vcpu', step: 'query-hotpluggable-cpus (no free vCPU slot)' });
    expect(h.changes()).toEqual([]);
    expect(ctx.state.cpus).toEqual([]);
  });

  it('a refused device_add is a HotplugError for that vCPU, which is not recorded', async () => {
    const ctx = h.context({ cpus: { boot: 1, max: 4 } });
    offerCores([0, 1, 2, 3]);
    h.server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'CPU hotplug not supported');
    });
    const error = await resizeVcpus(ctx, 2).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'vcpu1', step: 'device_add' });
    expect((error as HotplugError).cause).toMatchObject({ errorClass: 'GenericError', desc: 'CPU hotplug not supported' });
    expect(ctx.state.cpus).toEqual([]);
  });

  it('the deadline at device_add keeps its own error', async () => {
    const ctx = h.context({ cpus: { boot: 1, max: 4 } }, { timeoutMs: 100 });
    offerCores([0, 1, 2, 3]);
    h.server.handle('device_add', () => NO_REPLY);
    const error = await resizeVcpus(ctx, 2).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ code: 'TIMEOUT' });
    expect(ctx.state.cpus).toEqual([]);
  });
});

describe('vCPU removal', () => {
  /** A kvm VM with vcpu1 and vcpu2 hot-added; query-cpus-fast lists what `listed` holds. */
  async function withTwoVcpus(removalTimeoutMs = 2_000): Promise<{ ctx: HotplugContext; listed: Set<number> }> {
    const ctx = h.context({ cpus: { boot: 1, max: 4 } }, { removalTimeoutMs });
    const listed = new Set([0]);
    h.server.handle('query-hotpluggable-cpus', () =>
      [0, 1, 2, 3].map((core) => ({ type: 'max-x86_64-cpu', 'vcpus-count': 1, props: { 'core-id': core }, ...(listed.has(core) ? { 'qom-path': `/q/${core}` } : {}) })),
    );
    h.server.handle('device_add', (args) => {
      listed.add(Number(args?.['core-id']));
      return {};
    });
    h.server.handle('query-cpus-fast', () =>
      [...listed].map((core) => ({ 'cpu-index': core, 'thread-id': 100 + core, 'qom-path': core === 0 ? '/machine/unattached/device[0]' : `/machine/peripheral/vcpu${core}` })),
    );
    await resizeVcpus(ctx, 3);
    h.server.received.length = 0;
    return { ctx, listed };
  }

  /** device_del of vcpuN sends these events, and QEMU forgets the vCPU. */
  function releaseWith(listed: Set<number>, events: (id: string) => Record<string, unknown>[]): void {
    h.server.handle('device_del', (args) => {
      const id = String(args?.['id']);
      listed.delete(Number(id.slice(4)));
      for (const data of events(id)) h.server.sendEvent('DEVICE_DELETED', data);
      return {};
    });
  }

  it('DEVICE_DELETED naming the vCPU alone ends the wait', async () => {
    const { ctx, listed } = await withTwoVcpus();
    releaseWith(listed, (id) => [{ device: id }]);
    expect(await resizeVcpus(ctx, 2)).toEqual({ previous: 3, current: 2 });
    expect(h.sent()).toEqual([
      ['device_del', { id: 'vcpu2' }],
      ['query-cpus-fast', undefined],
    ]);
    expect(ctx.state.cpus).toEqual([{ qemuId: 'vcpu1', coreId: 1 }]);
    expect(ctx.state.vcpuRemoved).toBe(true);
  });

  it('DEVICE_DELETED with only the vCPU’s own path ends the wait', async () => {
    const { ctx, listed } = await withTwoVcpus();
    releaseWith(listed, (id) => [{ path: `/machine/peripheral/${id}` }]);
    expect(await resizeVcpus(ctx, 1)).toEqual({ previous: 3, current: 1 });
    expect(h.sent().filter(([name]) => name === 'device_del')).toEqual([
      ['device_del', { id: 'vcpu2' }],
      ['device_del', { id: 'vcpu1' }],
    ]);
    expect(ctx.state.cpus).toEqual([]);
  });

  it('DEVICE_DELETED of another vCPU or device does not count: the removal times out and the vCPU stays', async () => {
    const { ctx } = await withTwoVcpus(100);
    h.server.handle('device_del', () => {
      for (const data of [{ device: 'vcpu1' }, { path: '/machine/peripheral/vcpu1/lapic' }, { path: '/machine/peripheral/vcpu21/lapic' }, { device: 'd0' }, { path: '/machine/peripheral/d0' }]) {
        h.server.sendEvent('DEVICE_DELETED', data);
      }
      return {};
    });
    await expect(resizeVcpus(ctx, 2)).rejects.toMatchObject({ code: 'DEVICE_REMOVAL_TIMEOUT', deviceId: 'vcpu2' });
    expect(h.sent()).toEqual([['device_del', { id: 'vcpu2' }]]);
    expect(ctx.state.cpus.map((c) => c.qemuId)).toEqual(['vcpu1', 'vcpu2']);
    expect(listenerTrouble()).toEqual([]);
  });

  it('a vCPU QEMU still lists after DEVICE_DELETED is a HotplugError, and stays recorded', async () => {
    const { ctx } = await withTwoVcpus();
    h.server.handle('device_del', (args) => {
      h.server.sendEvent('DEVICE_DELETED', { path: `/machine/peripheral/${String(args?.['id'])}/lapic` });
      return {};
    });
    const error = await resizeVcpus(ctx, 2).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'vcpu2', step: 'device_del (the vCPU is still listed by QEMU)' });
    expect(ctx.state.cpus.map((c) => c.qemuId)).toEqual(['vcpu1', 'vcpu2']);
    // The unplug was requested: under tcg no device change would be safe any more.
    expect(ctx.state.vcpuRemoved).toBe(true);
  });
});

describe('virtio-mem', () => {
  const config = { memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' } } as const;
  const qomGet = (property: string) => ['qom-get', { path: 'vmem0', property }];

  /** block-size 2 MiB; `size` answers what `sizes` gives, call by call (its last value after that). */
  function device(sizes: number[], onRequest: (bytes: number) => void = () => {}): void {
    let reads = 0;
    h.server.handle('qom-get', (args) => {
      if (args?.['property'] === 'block-size') return 2 * MiB;
      return sizes[Math.min(reads++, sizes.length - 1)];
    });
    h.server.handle('qom-set', (args) => {
      onRequest(Number(args?.['value']));
      return {};
    });
  }

  it('a size change naming the device by id alone ends the wait, without reading the size', async () => {
    const ctx = h.context(config);
    device([0], (bytes) => h.server.sendEvent('MEMORY_DEVICE_SIZE_CHANGE', { id: 'vmem0', size: bytes }));
    expect(await resizeMemory(ctx, 512)).toEqual({ previousMiB: 256, currentMiB: 512 });
    expect(h.sent()).toEqual([qomGet('block-size'), ['qom-set', { path: 'vmem0', property: 'requested-size', value: 256 * MiB }]]);
    expect(ctx.state.virtioMemMiB).toBe(256);
    expect(h.logs).toEqual([{ level: 'info', msg: 'memory resized', previousMiB: 256, currentMiB: 512 }]);
  });

  it('a size change giving only the QOM path ends the wait', async () => {
    const ctx = h.context(config);
    device([0], (bytes) => h.server.sendEvent('MEMORY_DEVICE_SIZE_CHANGE', { size: bytes, 'qom-path': '/machine/peripheral/vmem0' }));
    expect(await resizeMemory(ctx, 512)).toEqual({ previousMiB: 256, currentMiB: 512 });
    expect(h.sent().map(([name]) => name)).toEqual(['qom-get', 'qom-set']);
  });

  it('size changes of other memory devices do not count: the resize stops where the device stands', async () => {
    const ctx = h.context(config, { timeoutMs: 300 });
    device([64 * MiB], (bytes) => {
      for (const data of [
        { id: 'vmem1', size: bytes, 'qom-path': '/machine/peripheral/vmem1' },
        { id: 'dimm0', size: bytes },
        { size: bytes, 'qom-path': '/machine/peripheral/xvmem0' },
        { size: bytes, 'qom-path': '/machine/peripheral/vmem0/child' },
      ]) {
        h.server.sendEvent('MEMORY_DEVICE_SIZE_CHANGE', data);
      }
    });
    const error = await resizeMemory(ctx, 1280).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ResizeIncompleteError);
    expect(error).toMatchObject({ targetMiB: 1280, reachedMiB: 256 + 64 });
    expect((error as ResizeIncompleteError).cause).toMatchObject({ code: 'TIMEOUT' });
    expect(h.sent().at(-1)).toEqual(qomGet('size'));
    // The request stays in place (the guest may catch up), and is what the state records.
    expect(ctx.state.virtioMemMiB).toBe(1024);
    expect(listenerTrouble()).toEqual([]);
  });

  it('without any size-change event, polling the size finds the target', async () => {
    const ctx = h.context(config);
    device([0, 128 * MiB, 256 * MiB]);
    expect(await resizeMemory(ctx, 512)).toEqual({ previousMiB: 256, currentMiB: 512 });
    expect(h.sent()).toEqual([
      qomGet('block-size'),
      ['qom-set', { path: 'vmem0', property: 'requested-size', value: 256 * MiB }],
      qomGet('size'),
      qomGet('size'),
      qomGet('size'),
    ]);
  });

  it('a refused qom-set is QEMU’s error, not a resize that stopped part-way', async () => {
    const ctx = h.context(config);
    device([0]);
    h.server.handle('qom-set', () => {
      throw new QmpErrorReply('GenericError', 'requested-size cannot change while unplugging');
    });
    const error = await resizeMemory(ctx, 512).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(QmpCommandError);
    expect(error).toMatchObject({ command: 'qom-set', desc: 'requested-size cannot change while unplugging' });
    expect(ctx.state.virtioMemMiB).toBe(0);
  });

  it('a QEMU that stops answering bounds the final size read too', async () => {
    const ctx = h.context(config, { timeoutMs: 100 });
    device([0]);
    h.server.handle('qom-get', (args) => (args?.['property'] === 'block-size' ? 2 * MiB : NO_REPLY));
    const error = await resizeMemory(ctx, 512).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(ResizeIncompleteError);
    expect(h.sent().slice(-2)).toEqual([qomGet('size'), qomGet('size')]);
    expect(error).toMatchObject({ code: 'QMP_TIMEOUT', command: 'qom-get' });
  });
});

describe('DIMM', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('running out of memory slots is NoFreeSlotError naming the next DIMM; the ones added stay', async () => {
    const ctx = h.context({ memory: { bootMiB: 128, maxMiB: 128 + 128 * 60, hotplug: 'dimm', slots: 1 } });
    h.server.handle('object-add', () => ({})).handle('device_add', () => ({}));
    const error = await resizeMemory(ctx, 128 + 128 * 60).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(NoFreeSlotError);
    expect(error).toMatchObject({ deviceId: 'dimm1', message: 'cannot hotplug dimm1: no free memory slot (all 1 are in use) (reserve more in the config)' });
    expect(h.sent().map(([name]) => name)).toEqual(['object-add', 'device_add']);
    expect(ctx.state.dimms).toEqual([{ qemuId: 'dimm0', backendId: 'mem-dimm0', sizeMiB: 128 * 48 }]);
  });

  it('the last free slot is used', async () => {
    const ctx = h.context({ memory: { bootMiB: 128, maxMiB: 128 + 128 * 60, hotplug: 'dimm', slots: 2 } });
    h.server.handle('object-add', () => ({})).handle('device_add', () => ({}));
    expect(await resizeMemory(ctx, 128 + 128 * 60)).toEqual({ previousMiB: 128, currentMiB: 128 + 128 * 60 });
    expect(ctx.state.dimms.map((d) => d.qemuId)).toEqual(['dimm0', 'dimm1']);
    expect(h.logs).toEqual([{ level: 'info', msg: 'memory resized', previousMiB: 128, currentMiB: 128 + 128 * 60 }]);
  });

  it('a refused object-add is a HotplugError at object-add, with no pc-dimm tried', async () => {
    const ctx = h.context({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } });
    h.server.handle('object-add', () => {
      throw new QmpErrorReply('GenericError', 'cannot allocate memory');
    });
    const error = await resizeMemory(ctx, 512).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'dimm0', step: 'object-add' });
    expect((error as HotplugError).cause).toMatchObject({ desc: 'cannot allocate memory' });
    expect(h.sent().map(([name]) => name)).toEqual(['object-add']);
    expect(ctx.state.dimms).toEqual([]);
  });

  it('the deadline at object-add keeps its own error', async () => {
    const ctx = h.context({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } }, { timeoutMs: 100 });
    h.server.handle('object-add', () => NO_REPLY);
    const error = await resizeMemory(ctx, 512).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ code: 'TIMEOUT' });
  });

  it('a refused pc-dimm deletes its backend by id, and a failing delete is logged', async () => {
    const ctx = h.context({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } });
    h.server.handle('object-add', () => ({}));
    h.server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'not enough space');
    });
    h.server.handle('object-del', () => {
      throw new QmpErrorReply('GenericError', 'object mem-dimm0 is in use');
    });
    const error = await resizeMemory(ctx, 512).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ deviceId: 'dimm0', step: 'device_add' });
    expect((error as HotplugError).cause).toMatchObject({ desc: 'not enough space' });
    expect(h.sent()).toEqual([
      ['object-add', { 'qom-type': 'memory-backend-ram', id: 'mem-dimm0', size: 256 * MiB }],
      ['device_add', { driver: 'pc-dimm', id: 'dimm0', memdev: 'mem-dimm0' }],
      ['object-del', { id: 'mem-dimm0' }],
    ]);
    expect(h.logs).toEqual([
      { level: 'error', msg: 'rollback of the dimm backend failed', err: loggedError('object mem-dimm0 is in use') },
    ]);
    expect(ctx.state.dimms).toEqual([]);
  });

  it('an object-del QEMU never answers gives up after its own bound (not the client’s 30 s), logged', async () => {
    const ctx = h.context({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } }, { timeoutMs: 60_000 });
    h.server.handle('object-add', () => ({})).handle('object-del', () => NO_REPLY);
    h.server.handle('device_add', () => {
      throw new QmpErrorReply('GenericError', 'not enough space');
    });
    // Only setTimeout is faked: the socket and the fake server run as usual.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    const resized = resizeMemory(ctx, 512).catch((e: unknown) => e);
    await h.server.nextCommand('object-del');
    await vi.advanceTimersByTimeAsync(5_000);
    const error = await resized;
    expect(error).toMatchObject({ code: 'HOTPLUG_FAILED', deviceId: 'dimm0', step: 'device_add' });
    expect(h.logs).toEqual([{ level: 'error', msg: 'rollback of the dimm backend failed', err: loggedError('object-del') }]);
  });

  it('the deadline at device_add keeps its own error, and the backend is still deleted', async () => {
    const ctx = h.context({ memory: { bootMiB: 256, maxMiB: 512, hotplug: 'dimm' } }, { timeoutMs: 100 });
    h.server.handle('object-add', () => ({})).handle('object-del', () => ({}));
    h.server.handle('device_add', () => NO_REPLY);
    const error = await resizeMemory(ctx, 512).catch((e: unknown) => e);
    expect(error).not.toBeInstanceOf(HotplugError);
    expect(error).toMatchObject({ code: 'TIMEOUT' });
    expect(h.sent().at(-1)).toEqual(['object-del', { id: 'mem-dimm0' }]);
    expect(h.logs).toEqual([]);
  });
});
