// Integers beyond 2^53 (uint64 sizes, guest addresses, qom-get values) through the client: QEMU
// round-trips 9007199254740993 exactly, so must we. Safe integers stay numbers.
import { describe, expect, it } from 'vitest';
import type { MemoryDeviceInfo } from '../../../src/qmp/index.ts';
import { NO_REPLY } from '../../helpers/fake-qmp-server.ts';
import { startPair } from './harness.ts';

describe('integers beyond 2^53', () => {
  it('are read exactly, as bigints, in replies and events; safe integers stay numbers', async () => {
    const { server, client } = await startPair();
    server.handle('qom-get', () => NO_REPLY);
    const received = server.nextCommand('qom-get');
    const value = client.execute('qom-get', { path: '/machine/peripheral/vmem0', property: 'size' });
    const { id } = await received;
    const event = client.waitForEvent('MEMORY_DEVICE_SIZE_CHANGE', undefined, { timeoutMs: 5_000 });
    server.sendLine(`{"event": "MEMORY_DEVICE_SIZE_CHANGE", "data": {"size": 18446744073709551615, "id": "vmem0"}, "timestamp": {"seconds": 1, "microseconds": 2}}`);
    server.sendLine(`{"return": [9007199254740993, 9007199254740991, -9223372036854775808, 1.5], "id": ${String(id)}}`);
    expect(await value).toEqual([9007199254740993n, 9007199254740991, -9223372036854775808n, 1.5]);
    expect((await event).data).toEqual({ size: 18446744073709551615n, id: 'vmem0' });
  });

  it('are read exactly in typed results (query-memory-devices)', async () => {
    const { server, client } = await startPair();
    server.handle('query-memory-devices', () => NO_REPLY);
    const received = server.nextCommand('query-memory-devices');
    const devices = client.execute('query-memory-devices');
    const { id } = await received;
    server.sendLine(
      `{"return": [{"type": "dimm", "data": {"id": "dimm0", "addr": 18446744069414584320, "size": 1073741824, "slot": 0, "node": 0, "memdev": "/objects/m0", "hotplugged": true, "hotpluggable": true}}], "id": ${String(id)}}`,
    );
    const [dimm] = await devices;
    const data = dimm?.data as Extract<MemoryDeviceInfo, { type: 'dimm' | 'nvdimm' }>['data'];
    expect(data.addr).toBe(18446744069414584320n);
    expect(data.size).toBe(1073741824);
  });

  it('are written exactly from bigint arguments, as plain JSON integers', async () => {
    const { server, client } = await startPair();
    server.handle('qom-set', () => ({}));
    await client.execute('qom-set', { path: '/machine/peripheral/vmem0', property: 'requested-size', value: 9007199254740993n });
    await client.execute('qom-set', { path: '/x', property: 'list', value: [2n ** 64n - 1n, 7, -(2n ** 63n)] });
    const [first, second] = server.receivedLines.filter((line) => line.includes('qom-set'));
    expect(first).toMatch(/"value":9007199254740993[,}]/);
    expect(second).toMatch(/"value":\[18446744073709551615,7,-9223372036854775808\]/);
    expect(JSON.parse(first ?? '')).toMatchObject({ execute: 'qom-set', arguments: { property: 'requested-size' } });
  });

  it('a reply echoing a written bigint reads back the same bigint', async () => {
    const { server, client } = await startPair();
    server.handle('echo', () => NO_REPLY);
    const received = server.nextCommand('echo');
    const echoed = client.executeUntyped('echo', { value: 9007199254740993n });
    await received;
    const line = server.receivedLines.at(-1) ?? '';
    // Answer with the argument's own text, as QEMU would: the fake's JSON.parse would round it.
    const { id } = JSON.parse(line) as { id: number };
    const valueText = /"value":(-?\d+)/.exec(line)?.[1] ?? '';
    server.sendLine(`{"return": ${valueText}, "id": ${String(id)}}`);
    expect(await echoed).toBe(9007199254740993n);
  });
});
