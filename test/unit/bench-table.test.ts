// The README's benchmark table (bench/readme-table.ts): a column group per QEMU version with
// results, oldest version first, each ratio judged against its figure's target.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderTable } from '../../bench/readme-table.ts';

let dir = '';
beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'svmm-bench-table-'))));
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function qmpResult(serialUs: number, rawSerialUs: number): object {
  const pipelined = { libPipelinedUs: 100, rawPipelinedUs: 100, pipelinedRatio: 1 };
  return { libSerialUs: serialUs, rawSerialUs, serialRatio: serialUs / rawSerialUs, ...pipelined, rounds: 9, date: '2026-12-02T00:00:00.000Z' };
}

function write(name: string, result: object): void {
  writeFileSync(join(dir, name), JSON.stringify(result));
}

describe('the README benchmark table', () => {
  it('is absent without results', () => {
    expect(renderTable(dir)).toBeUndefined();
  });

  it('has a column group per version, 7.2 before 10.0, with empty cells where a version lacks a figure', () => {
    write('qmp.qemu-10.0.json', qmpResult(120, 100));
    write('qmp.qemu-7.2.json', qmpResult(100, 100));
    const stop = { libMs: 9, rawMs: 10, ratio: 0.9, rounds: 15 };
    const scale = { vms: 2, rounds: 1, totalStartMs: 1, rawTotalStartMs: 1, startRatio: 1, totalStopMs: 1, heapPerVmKiB: 1, eventLoopDelayP99Ms: 1, rawEventLoopDelayP99Ms: 1, leakedProcessesAndDirs: 0 };
    write('vm.qemu-10.0.json', { rounds: 5, fastRounds: 15, figures: { 'stop (reaped, dir removed)': stop }, scale, date: '2026-12-02T00:00:00.000Z' });
    const lines = (renderTable(dir) ?? '').split('\n');
    expect(lines[0]).toBe('| figure | target | QEMU 7.2 library | raw baseline | ratio | QEMU 10.0 library | raw baseline | ratio |');
    expect(lines).toContain('| QMP round trip, serial | ≤ 1.1 | 100 µs | 100 µs | 1.000 ✓ | 120 µs | 100 µs | 1.200 ✗ |');
    expect(lines).toContain('| stop (reaped, dir removed) |  |  |  |  | 9.0 ms | 10.0 ms | 0.900 |');
    // A scale result from before the corrected delay: the storm's start row, no delay row.
    expect(lines).toContain('| start storm: start (vs raw storm) | ≤ 1.1 |  |  |  | 1.0 ms | 1.0 ms | 1.000 ✓ |');
    expect(lines.filter((line) => line.startsWith('|') && line.includes('event-loop delay'))).toEqual([]);
    expect(lines.filter((line) => line.startsWith('QEMU 10.0, '))).toHaveLength(3);
    expect(lines.filter((line) => line.startsWith('QEMU 7.2, '))).toHaveLength(1);
  });

  it('shows a cold storm with the corrected delay as two rows judged against their targets, and every delay in its note', () => {
    const delays = { eventLoopDelayP99Ms: 190, rawEventLoopDelayP99Ms: 70, eventLoopDelayCorrectedP99Ms: 200, rawEventLoopDelayCorrectedP99Ms: 1250, eventLoopDelayMaxMs: 220, rawEventLoopDelayMaxMs: 1280 };
    const scale = { vms: 50, rounds: 11, totalStartMs: 1200, rawTotalStartMs: 1000, startRatio: 1.2, totalStopMs: 150, heapPerVmKiB: 24, ...delays, delayRatio: 0.16, runtimeBase: 'a tmpfs under /dev/shm', leakedProcessesAndDirs: 0 };
    write('vm.qemu-7.2.json', { rounds: 5, fastRounds: 15, figures: {}, scale, date: '2026-12-02T00:00:00.000Z' });
    const lines = (renderTable(dir) ?? '').split('\n');
    expect(lines).toContain('| start storm: start (vs raw storm) | ≤ 1.1 | 1200.0 ms | 1000.0 ms | 1.200 ✗ |');
    expect(lines).toContain('| start storm: event-loop delay p99, corrected (vs raw) | ≤ 1.25 | 200.0 ms | 1250.0 ms | 0.160 ✓ |');
    const note = lines.find((line) => line.startsWith('QEMU 7.2, scale:'));
    expect(note).toContain('medians of 11 alternated storms');
    expect(note).toContain('event-loop delay p99 per tick 190 ms (raw 70 ms), corrected for coordinated omission 200 ms (raw 1250 ms), longest stall 220 ms (raw 1280 ms)');
    expect(note).toContain('VM directories in a tmpfs under /dev/shm;');
  });

  it('puts the arm64 VM figures in rows of their own beside x86_64\'s, each judged against its figure\'s target', () => {
    const date = '2026-12-02T00:00:00.000Z';
    const x86 = { 'start (paused, QMP ready)': { libMs: 300, rawMs: 280, ratio: 1.07, rounds: 15 } };
    const scale = { vms: 2, rounds: 1, totalStartMs: 1, rawTotalStartMs: 1, startRatio: 1, totalStopMs: 1, heapPerVmKiB: 1, eventLoopDelayP99Ms: 1, rawEventLoopDelayP99Ms: 1, leakedProcessesAndDirs: 0 };
    write('vm.qemu-7.2.json', { arch: 'x86_64', rounds: 5, fastRounds: 15, figures: x86, scale, date });
    const arm = {
      'start (paused, QMP ready)': { libMs: 1200, rawMs: 1000, ratio: 1.2, rounds: 15 },
      'resize memory +1 GiB (grow)': { libMs: 600, rawMs: 550, ratio: 1.091, rounds: 5 },
    };
    write('vm-arm64.qemu-10.0.json', { arch: 'aarch64', rounds: 5, fastRounds: 15, figures: arm, date });
    const lines = (renderTable(dir) ?? '').split('\n');
    expect(lines[0]).toBe('| figure | target | QEMU 7.2 library | raw baseline | ratio | QEMU 10.0 library | raw baseline | ratio |');
    expect(lines).toContain('| start (paused, QMP ready) | ≤ 1.1 | 300.0 ms | 280.0 ms | 1.070 ✓ |  |  |  |');
    expect(lines).toContain('| arm64: start (paused, QMP ready) | ≤ 1.1 |  |  |  | 1200.0 ms | 1000.0 ms | 1.200 ✗ |');
    expect(lines).toContain('| arm64: resize memory +1 GiB (grow) |  |  |  |  | 600.0 ms | 550.0 ms | 1.091 |');
    // x86_64's rows first; the arm64 run has no scale figure, so no scale note.
    expect(lines.findIndex((l) => l.startsWith('| start'))).toBeLessThan(lines.findIndex((l) => l.startsWith('| arm64: start')));
    expect(lines.filter((line) => line.startsWith('QEMU 10.0, '))).toEqual([
      'QEMU 10.0, arm64 VM figures (virt, the arm64 test guest): medians of 15 alternated rounds for start, stop and hotplug, 5 for boot and resize; under TCG (2026-12-02).',
    ]);
    expect(lines.filter((line) => line.startsWith('QEMU 7.2, '))).toHaveLength(2);
  });

  it('shows the template figures with their targets, and a result written before the raw clone and the storm without them', () => {
    const template = {
      qemu: '10.0.2',
      cloneRam: 'map-read-only',
      startToAgent: { cloneMs: 300, coldMs: 3000, ratio: 0.1, rounds: 5 },
      pss: { vms: 10, cloneMiB: 40, coldMiB: 200, ratio: 0.2 },
      date: '2026-12-02T00:00:00.000Z',
    };
    write('template.qemu-7.2.json', template);
    const againstRaw = { libMs: 330, rawMs: 300, ratio: 1.1, rounds: 15 };
    const delays = { eventLoopDelayP99Ms: 30, rawEventLoopDelayP99Ms: 35, eventLoopDelayCorrectedP99Ms: 40, rawEventLoopDelayCorrectedP99Ms: 25, eventLoopDelayMaxMs: 45, rawEventLoopDelayMaxMs: 400 };
    const storm = { vms: 50, rounds: 5, totalStartMs: 900, rawTotalStartMs: 1000, startRatio: 0.9, ...delays, delayRatio: 1.6, leakedProcessesAndDirs: 0 };
    write('template.qemu-10.0.json', { ...template, againstRaw, storm });
    const lines = (renderTable(dir) ?? '').split('\n');
    expect(lines).toContain('| template clone: start to agent (vs cold boot) | ≤ 0.15 | 300 ms | 3000 ms | 0.100 ✓ | 300 ms | 3000 ms | 0.100 ✓ |');
    expect(lines).toContain('| template clone: start to agent (vs raw-QMP clone) | ≤ 1.1 |  |  |  | 330 ms | 300 ms | 1.100 ✓ |');
    expect(lines).toContain('| template clones: PSS each (vs cold-booted) | ≤ 0.3 | 40.0 MiB | 200.0 MiB | 0.200 ✓ | 40.0 MiB | 200.0 MiB | 0.200 ✓ |');
    expect(lines).toContain('| template clone storm: start (vs raw clone storm) | ≤ 1.1 |  |  |  | 900.0 ms | 1000.0 ms | 0.900 ✓ |');
    // The delay row is the corrected p99; the notes give the per-tick one and the longest stall too.
    expect(lines).toContain('| template clone storm: event-loop delay p99, corrected (vs raw) | ≤ 1.25 |  |  |  | 40.0 ms | 25.0 ms | 1.600 ✗ |');
    expect(lines.find((line) => line.startsWith('QEMU 10.0, clone storm'))).toContain(
      'event-loop delay p99 per tick 30 ms (raw 35 ms), corrected for coordinated omission 40 ms (raw 25 ms), longest stall 45 ms (raw 400 ms)',
    );
    expect(lines.filter((line) => line.startsWith('QEMU 10.0, clone storm: 50 paused clones'))).toHaveLength(1);
    expect(lines.filter((line) => line.startsWith('QEMU 7.2, clone storm'))).toHaveLength(0);
  });
});
