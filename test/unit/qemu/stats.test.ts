// stats() of the QEMU backend below the Hypervisor: the /proc and QMP parsers on fake content, then
// collectStats against a fake QMP server with this test process standing in for QEMU (its own
// threads, memory and network namespace are real /proc entries), so that every source is read.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { describe, expect, it, onTestFinished } from 'vitest';
import { parseSandboxConfig } from '../../../src/hypervisor/config/index.ts';
import { InvalidReplyError } from '../../../src/hypervisor/errors.ts';
import { readProcStat } from '../../../src/qemu/process/proc-fs.ts';
import { collectStats } from '../../../src/qemu/stats/collect.ts';
import { parseNetDev, readNetDev } from '../../../src/qemu/stats/net-dev.ts';
import { findLauncher } from '../../../src/qemu/launch/launcher.ts';
import { HelperError } from '../../../src/hypervisor/errors.ts';
import { parseCpuTimes, parseSmapsRollup, readOwnProcFile, readThreadCpuTimes, uptimeMsSince } from '../../../src/qemu/stats/proc-stats.ts';
import { parseBalloonActual, parseBalloonGuestStats, parseBlockStats, parsePluggedBytes } from '../../../src/qemu/stats/qmp-stats.ts';
import { NO_REPLY, type FakeQmpServer } from '../../helpers/fake-qmp-server.ts';
import { startPair } from '../qmp/harness.ts';

const BEYOND_2_53 = '9007199254740993';
const UINT64_MAX = '18446744073709551615';

function invalidReply(fn: () => unknown, command: string): string {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidReplyError);
    expect((error as InvalidReplyError).command).toBe(command);
    return (error as InvalidReplyError).message;
  }
  throw new Error('the reply was accepted');
}

/** A stat line whose command name holds spaces and parentheses, with utime, stime and starttime set. */
function statLine(utime: string, stime: string): string {
  const after = ['S', '1', '2', '3', '0', '-1', '4194368', '10', '0', '0', '0', utime, stime, '0', '0', '20', '0', '3', '0', '5000'];
  return `4321 (CPU 0/TCG) (x) ${after.join(' ')} 100 200\n`;
}

describe('/proc parsers', () => {
  it('reads utime and stime (clock ticks of 10 ms) as nanoseconds, after the last ")" of the name', () => {
    expect(parseCpuTimes(statLine('150', '25'))).toEqual({ userTimeNs: 1_500_000_000n, systemTimeNs: 250_000_000n });
    // A tick count whose nanoseconds pass 2^53 stays exact.
    expect(parseCpuTimes(statLine('99999999999', '0'))?.userTimeNs).toBe(999_999_999_990_000_000n);
    expect(parseCpuTimes(statLine('-1', '0'))).toBeUndefined();
    expect(parseCpuTimes('no parenthesis')).toBeUndefined();
  });

  it("reads smaps_rollup's Rss and Pss (kB) as bytes, and nothing from a file without both", () => {
    const rollup = ['55d0c0a00000-7ffd1a3fe000 ---p 00000000 00:00 0    [rollup]', 'Rss:              262144 kB', 'Pss:              131072 kB', 'Pss_Anon:         100000 kB', 'Shared_Clean:       4096 kB', ''].join('\n');
    expect(parseSmapsRollup(rollup)).toEqual({ rssBytes: 268_435_456n, pssBytes: 134_217_728n });
    expect(parseSmapsRollup('Rss:  4 kB\n')).toBeUndefined();
  });

  it('computes uptime from /proc/uptime (two decimals) and a start time in ticks', () => {
    expect(uptimeMsSince(1000, '25.50 100.00\n')).toBe(15_500);
    expect(uptimeMsSince(1000, 'garbage')).toBeUndefined();
  });

  it("reads /proc/net/dev's rows by interface, exact beyond 2^53, skipping the headers and malformed rows", () => {
    const text = [
      'Inter-|   Receive                                                |  Transmit',
      ' face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed',
      `  tap0: ${UINT64_MAX}  7 1 2 0 0 0 0 ${BEYOND_2_53} 9 3 4 0 0 0 0`,
      '    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0',
      ' bad0: 1 2 3',
      '',
    ].join('\n');
    const table = parseNetDev(text);
    expect([...table.keys()]).toEqual(['tap0', 'lo']);
    expect(table.get('tap0')).toEqual({
      rxBytes: 18446744073709551615n,
      rxPackets: 7n,
      rxErrors: 1n,
      rxDropped: 2n,
      txBytes: 9007199254740993n,
      txPackets: 9n,
      txErrors: 3n,
      txDropped: 4n,
    });
  });

  it('reads the counters of a namespace through the launcher, and says which NICs and why when it cannot', async () => {
    const missing = '/run/netns/svmm-unit-no-such-netns';
    const error = await readNetDev(missing, findLauncher(), new AbortController().signal, 'eth0, eth1').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HelperError);
    expect((error as HelperError).code).toBe('HELPER_FAILED');
    expect((error as HelperError).message).toContain(`in ${missing}) for eth0, eth1 failed`);
    expect((error as HelperError).stderrTail).toContain(missing);
    // An aborted read rejects with the deadline's own reason, not as a helper failure.
    const reason = new Error('deadline');
    await expect(readNetDev(missing, findLauncher(), AbortSignal.abort(reason), 'eth0')).rejects.toBe(reason);
  });

  it("reads a process's file only while its pid has the start time we know, and a thread only if it is one of the process's", () => {
    const self = { pid: process.pid, startTime: readProcStat(process.pid)?.startTime };
    expect(readOwnProcFile(self, 'stat')).toContain(`${process.pid} (`);
    expect(readOwnProcFile({ ...self, startTime: (self.startTime ?? 0) + 1 }, 'stat')).toBeUndefined();
    expect(readOwnProcFile({ ...self, startTime: undefined }, 'stat')).toBeUndefined();
    expect(readThreadCpuTimes(self, process.pid)).toBeDefined();
    // pid 1's thread is not one of ours, though /proc/<pid>/task/1 may not even be looked up.
    expect(readThreadCpuTimes(self, 1)).toBeUndefined();
  });
});

describe('QMP parsers', () => {
  const stats = (rd: unknown = 1) => ({ rd_bytes: rd, wr_bytes: 2, rd_operations: 3, wr_operations: 4, flush_operations: 5, rd_total_time_ns: 6, wr_total_time_ns: 7, flush_total_time_ns: 8 });

  it("maps query-blockstats' backends to disks by the node name the library gave them, in the disks' order", () => {
    const reply = [
      { device: '', 'node-name': 'drv-b', qdev: '/machine/peripheral/b/virtio-backend', stats: stats(BigInt(BEYOND_2_53)) },
      { device: '', qdev: '/machine/peripheral/x', stats: stats() },
      { device: '', 'node-name': 'drv-a', stats: stats() },
      { device: '', 'node-name': 'someone-elses', stats: stats() },
    ];
    const disks = parseBlockStats(reply, ['a', 'b', 'gone']);
    expect(disks.map((d) => d.id)).toEqual(['a', 'b']);
    expect(disks[1]).toEqual({
      id: 'b',
      readBytes: 9007199254740993n,
      writeBytes: 2n,
      readOperations: 3n,
      writeOperations: 4n,
      flushOperations: 5n,
      readTimeNs: 6n,
      writeTimeNs: 7n,
      flushTimeNs: 8n,
    });
  });

  it('refuses a disk listed twice, a counter that is negative, fractional or missing, and a reply of the wrong shape', () => {
    expect(invalidReply(() => parseBlockStats([{ 'node-name': 'drv-a', stats: stats() }, { 'node-name': 'drv-a', stats: stats() }], ['a']), 'query-blockstats')).toContain('repeats node');
    expect(invalidReply(() => parseBlockStats([{ 'node-name': 'drv-a', stats: stats(-1) }], ['a']), 'query-blockstats')).toContain('[0].stats.rd_bytes is -1');
    expect(invalidReply(() => parseBlockStats([{ 'node-name': 'drv-a', stats: stats(1.5) }], ['a']), 'query-blockstats')).toContain('rd_bytes is 1.5');
    expect(invalidReply(() => parseBlockStats([{ 'node-name': 'drv-a', stats: { ...stats(), wr_bytes: undefined } }], ['a']), 'query-blockstats')).toContain('wr_bytes is missing');
    expect(invalidReply(() => parseBlockStats({}, ['a']), 'query-blockstats')).toContain('expected an array');
    expect(invalidReply(() => parseBlockStats([{ 'node-name': 'drv-a', stats: [] }], ['a']), 'query-blockstats')).toContain('not an object');
  });

  it("sums DIMMs' sizes and virtio-mem's plugged size (not its maximum), exact beyond 2^53", () => {
    const reply = [
      { type: 'dimm', data: { id: 'd0', size: 134217728 } },
      { type: 'virtio-mem', data: { id: 'vmem0', size: BigInt(BEYOND_2_53), 'max-size': 2n ** 62n, 'requested-size': 0 } },
      { type: 'nvdimm', data: { size: 1 } },
    ];
    expect(parsePluggedBytes(reply)).toBe(134217728n + 9007199254740993n);
    expect(invalidReply(() => parsePluggedBytes([{ type: 'dimm', data: { size: -5 } }]), 'query-memory-devices')).toContain('[0].data.size is -5');
  });

  it("reads the balloon's actual size and the guest's statistics, leaving out what the guest did not report", () => {
    expect(parseBalloonActual({ actual: 268435456 })).toBe(268435456n);
    expect(invalidReply(() => parseBalloonActual({ actual: 'lots' }), 'query-balloon')).toContain('actual is "lots"');
    const guest = parseBalloonGuestStats({
      stats: { 'stat-total-memory': 268435456, 'stat-free-memory': BigInt(BEYOND_2_53), 'stat-swap-in': 2n ** 64n - 1n, 'stat-major-faults': 3 },
      'last-update': 1_700_000_000,
    });
    expect(guest).toEqual({ updatedAtSeconds: 1_700_000_000, totalBytes: 268435456n, freeBytes: 9007199254740993n, majorFaults: 3n });
    expect(parseBalloonGuestStats({ stats: {}, 'last-update': 0 })).toBeUndefined();
    expect(invalidReply(() => parseBalloonGuestStats({ stats: {}, 'last-update': 2n ** 60n }), 'qom-get guest-stats')).toContain('not a time in seconds');
  });
});

/** Answers `command` with the JSON text `result` as is (so integers beyond 2^53 reach the client exactly). */
function answerRaw(server: FakeQmpServer, command: string, result: string): void {
  server.handle(command, (_args, received) => {
    setImmediate(() => server.sendLine(`{"return": ${result}, "id": ${JSON.stringify(received.id)}}`));
    return NO_REPLY;
  });
}

describe('collectStats', () => {
  const startTime = readProcStat(process.pid)?.startTime;
  const config = parseSandboxConfig({
    boot: { kernel: '/vmlinuz' },
    memory: { bootMiB: 256, maxMiB: 512, hotplug: 'virtio-mem' },
    devices: [
      { type: 'block', id: 'disk0', path: '/disk0.img' },
      { type: 'balloon', id: 'balloon0', statsIntervalSeconds: 2 },
      // This process's loopback stands in for a tap, in this process's namespace (no runtime.netns).
      { type: 'net', id: 'nic0', tap: { ifname: 'lo' } },
      { type: 'net', id: 'nic1', tap: { ifname: 'svmm-no-such' } },
    ],
  });

  async function fakeQemu(threadId: number): ReturnType<typeof startPair> {
    const pair = await startPair();
    const { server } = pair;
    server.handle('query-cpus-fast', () => [{ 'cpu-index': 0, 'qom-path': '/machine/unattached/device[0]', 'thread-id': threadId, target: 'x86_64' }]);
    answerRaw(
      server,
      'query-blockstats',
      `[{"device": "", "node-name": "drv-disk0", "stats": {"rd_bytes": ${BEYOND_2_53}, "wr_bytes": 4096, "rd_operations": 1, "wr_operations": 2, "flush_operations": 0, "rd_total_time_ns": 10, "wr_total_time_ns": 20, "flush_total_time_ns": 0}},` +
        ` {"device": "", "node-name": "drv-hot1", "stats": {"rd_bytes": 1, "wr_bytes": 1, "rd_operations": 1, "wr_operations": 1, "flush_operations": 1, "rd_total_time_ns": 1, "wr_total_time_ns": 1, "flush_total_time_ns": 1}}]`,
    );
    server.handle('query-memory-devices', () => [{ type: 'virtio-mem', data: { id: 'vmem0', memaddr: 0, 'requested-size': 268435456, size: 134217728, 'max-size': 268435456, 'block-size': 2097152, node: 0, memdev: '/objects/mem-vmem0' } }]);
    server.handle('query-balloon', () => ({ actual: 402653184 }));
    answerRaw(server, 'qom-get', `{"stats": {"stat-total-memory": 402653184, "stat-available-memory": ${UINT64_MAX}}, "last-update": 1700000000}`);
    return pair;
  }

  it('puts QMP and /proc figures together: the vCPU thread, the processes, memory, balloon, disks and NICs', async () => {
    const { server, client } = await fakeQemu(process.pid);
    const helper = spawn('sleep', ['30'], { stdio: 'ignore' });
    onTestFinished(() => void helper.kill('SIGKILL'));
    await once(helper, 'spawn');
    const helperPid = helper.pid as number;
    const helperStart = readProcStat(helperPid)?.startTime as number;
    const stats = await collectStats({
      qmp: client,
      signal: new AbortController().signal,
      config,
      hotplugged: [{ type: 'block', id: 'hot1', path: '/hot1.img', driver: 'virtio-blk', format: 'raw', readOnly: false, cache: 'writeback', aio: 'threads' }],
      qemu: { pid: process.pid, startTime },
      helpers: [
        { name: 'virtiofsd', deviceId: 'fs0', pid: helperPid, startTime: helperStart },
        // A helper whose pid now belongs to another process: left out.
        { name: 'virtiofsd', deviceId: 'fs1', pid: helperPid, startTime: helperStart + 1 },
      ],
      launcher: '/nonexistent/svmm-launch',
    });

    expect(stats.vcpus).toHaveLength(1);
    const vcpu = stats.vcpus[0];
    expect(vcpu).toMatchObject({ index: 0, threadId: process.pid });
    // This test process has run for a while: its main thread has CPU time.
    expect((vcpu?.cpuTimeNs ?? 0n) > 0n).toBe(true);
    expect(vcpu?.cpuTimeNs).toBe((vcpu?.userTimeNs ?? -1n) + (vcpu?.systemTimeNs ?? -1n));

    expect(stats.processes.map((p) => [p.pid, p.role, p.deviceId])).toEqual([
      [process.pid, 'hypervisor', undefined],
      [helperPid, 'virtiofsd', 'fs0'],
    ]);
    for (const p of stats.processes) expect(p.rssBytes > 0n && p.pssBytes > 0n && p.pssBytes <= p.rssBytes).toBe(true);

    expect(stats.memory).toEqual({
      bootBytes: 268435456n,
      pluggedBytes: 134217728n,
      balloon: { actualBytes: 402653184n, guest: { updatedAtSeconds: 1700000000, totalBytes: 402653184n } },
    });
    expect(server.received.find((c) => c.execute === 'qom-get')?.arguments).toEqual({ path: '/machine/peripheral/balloon0', property: 'guest-stats' });

    expect(stats.disks.map((d) => [d.id, d.readBytes, d.writeBytes])).toEqual([
      ['disk0', 9007199254740993n, 4096n],
      ['hot1', 1n, 1n],
    ]);
    // The tap that is not in the namespace is left out; the one that is has the kernel's counters.
    expect(stats.nics.map((n) => [n.id, n.tap])).toEqual([['nic0', 'lo']]);
    expect(typeof stats.nics[0]?.rxBytes).toBe('bigint');
    expect(stats.uptimeMs).toBeGreaterThan(0);
  });

  it("refuses a vCPU thread that is not one of QEMU's tasks, reading nothing of it", async () => {
    const { client } = await fakeQemu(1);
    await expect(
      collectStats({ qmp: client, signal: new AbortController().signal, config, hotplugged: [], qemu: { pid: process.pid, startTime }, helpers: [], launcher: '/nonexistent' }),
    ).rejects.toThrow(/thread-id'\] is 1, which is not a thread of the QEMU process/);
  });
});
