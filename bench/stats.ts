// Small helpers shared by the benchmarks: medians, percentiles, result files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 ? (sorted[mid] ?? Number.NaN) : ((sorted[mid - 1] ?? 0) + (sorted[mid] ?? 0)) / 2;
}

export function round(value: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** The result file of benchmark `name` on QEMU `qemuLabel` ("7.2"): results are kept per version. */
export function resultFile(name: string, qemuLabel: string): string {
  return join(resultsDir, `${name}.qemu-${qemuLabel}.json`);
}

export function writeResult(name: string, qemuLabel: string, result: object): string {
  mkdirSync(resultsDir, { recursive: true });
  const path = resultFile(name, qemuLabel);
  writeFileSync(path, `${JSON.stringify({ ...result, date: new Date().toISOString() }, null, 2)}\n`);
  return path;
}

export async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return performance.now() - start;
}

/** One figure: library vs raw baseline, medians over alternated rounds. */
export interface Comparison {
  libMs: number;
  rawMs: number;
  ratio: number;
  rounds: number;
}

/**
 * Runs `lib` and `raw` alternately (which goes first alternates too, so neither always meets a
 * warmer or colder machine) and returns the medians.
 */
export async function compare(rounds: number, lib: () => Promise<number>, raw: () => Promise<number>): Promise<Comparison> {
  const libTimes: number[] = [];
  const rawTimes: number[] = [];
  for (let i = 0; i < rounds; i++) {
    if (i % 2 === 0) {
      libTimes.push(await lib());
      rawTimes.push(await raw());
    } else {
      rawTimes.push(await raw());
      libTimes.push(await lib());
    }
  }
  const libMs = median(libTimes);
  const rawMs = median(rawTimes);
  return { libMs: round(libMs), rawMs: round(rawMs), ratio: round(libMs / rawMs), rounds };
}

export function printComparisons(title: string, rows: Record<string, Comparison>): void {
  console.log(`\n${title}`);
  console.log(`${'figure'.padEnd(28)} ${'library'.padStart(11)} ${'raw'.padStart(11)} ${'ratio'.padStart(7)}`);
  for (const [name, c] of Object.entries(rows)) {
    console.log(`${name.padEnd(28)} ${`${c.libMs.toFixed(1)} ms`.padStart(11)} ${`${c.rawMs.toFixed(1)} ms`.padStart(11)} ${c.ratio.toFixed(3).padStart(7)}`);
  }
}

/**
 * An event-loop delay monitor that has already ticked: a block in the very tick a monitor is
 * enabled is never sampled (see bench/vm.bench.ts's storms, which measure the same way).
 */
export async function startDelayMonitor(): Promise<ReturnType<typeof monitorEventLoopDelay>> {
  const delay = monitorEventLoopDelay({ resolution: 5 });
  delay.enable();
  await new Promise((resolve) => setTimeout(resolve, 20));
  return delay;
}
