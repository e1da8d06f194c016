// Small helpers shared by the benchmarks: medians, percentiles, result files.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createHistogram, monitorEventLoopDelay } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';

export const resultsDir = join(dirname(fileURLToPath(import.meta.url)), 'results');

/**
 * Alternated rounds of a 50-VM storm. Its ratio is the noisiest figure (the same code measured
 * 0.97 to 1.17 over 5-9 rounds within an hour here), and a storm pair takes only seconds.
 */
export const STORM_ROUNDS = Number(process.env['BENCH_STORM_ROUNDS'] ?? 11);

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

/** How often the event loop's delay is sampled during a storm. */
const DELAY_RESOLUTION_MS = 5;

/** What a storm did to the event loop, in ms. */
export interface LoopDelay {
  /**
   * p99 of monitorEventLoopDelay's samples: one per tick, so a stall of any length counts as one
   * sample, and 99 on-time ticks elsewhere hide a single stall of a second (coordinated omission).
   */
  p99Ms: number;
  /**
   * p99 of the delay met by a callback due at any moment of the storm: a stall of d ms also counts
   * the ticks it held back (due d - 5, d - 10, ... ms before it ended), as HdrHistogram's
   * recordValueWithExpectedInterval does. What a runtime's API call arriving during a storm waits.
   */
  correctedP99Ms: number;
  maxMs: number;
}

export interface LoopDelayMonitor {
  stop(): LoopDelay;
}

/**
 * Starts measuring the event loop's delay, and resolves once the monitor has ticked: a block in the
 * very tick a monitor is enabled is never sampled, which hid the raw storm's (all its spawns run in
 * its first tick), while the library's came a tick later.
 */
export async function startLoopDelayMonitor(): Promise<LoopDelayMonitor> {
  const perTick = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS });
  perTick.enable();
  // In µs (a histogram records integers >= 1).
  const corrected = createHistogram();
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const delayMs = Math.max(0, now - last - DELAY_RESOLUTION_MS);
    last = now;
    corrected.record(Math.max(1, Math.round(delayMs * 1000)));
    for (let heldBack = delayMs - DELAY_RESOLUTION_MS; heldBack > 0; heldBack -= DELAY_RESOLUTION_MS) corrected.record(Math.max(1, Math.round(heldBack * 1000)));
  }, DELAY_RESOLUTION_MS);
  await new Promise((resolve) => setTimeout(resolve, 4 * DELAY_RESOLUTION_MS));
  return {
    stop: () => {
      clearInterval(timer);
      perTick.disable();
      return {
        p99Ms: perTick.percentile(99) / 1e6,
        correctedP99Ms: corrected.percentile(99) / 1e3,
        maxMs: Math.max(perTick.max / 1e6, corrected.max / 1e3),
      };
    },
  };
}
