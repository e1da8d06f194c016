// Renders the latest results under bench/results/ as the README's summary table, between the
// <!-- bench-table --> markers, so the README always shows figures from real runs: a column group
// per QEMU version, each with its ratios against the raw baseline measured in the same run. Each
// architecture's VM figures (bench/arch.ts) are rows of their own, named with its prefix.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BENCH_ARCHES } from './arch.ts';
import { resultFile, resultsDir, type Comparison } from './stats.ts';

const README = join(resultsDir, '..', '..', 'README.md');
const START = '<!-- bench-table -->';
const END = '<!-- /bench-table -->';

/** Ratio targets from the project's issues; figures without one are reported, not judged. */
const TARGETS: Record<string, number> = {
  'QMP round trip, serial': 1.1,
  'QMP round trip, pipelined': 1.1,
  'start (paused, QMP ready)': 1.1,
  'boot (agent answers)': 1.05,
  'hotplug block (add)': 1.1,
  'hotplug block (remove)': 1.1,
  'hotplug NIC (add)': 1.1,
  'hotplug NIC (remove)': 1.1,
  'template clone: start to agent (vs cold boot)': 0.15,
  'template clone: start to agent (vs raw-QMP clone)': 1.1,
  'template clones: PSS each (vs cold-booted)': 0.3,
  'start storm: start (vs raw storm)': 1.1,
  'start storm: event-loop delay p99, corrected (vs raw)': 1.25,
  'template clone storm: start (vs raw clone storm)': 1.1,
  'template clone storm: event-loop delay p99, corrected (vs raw)': 1.25,
};

interface QmpResult {
  libSerialUs: number;
  rawSerialUs: number;
  serialRatio: number;
  libPipelinedUs: number;
  rawPipelinedUs: number;
  pipelinedRatio: number;
  rounds: number;
  date: string;
}

/**
 * bench/template.bench.ts: against a cold boot, "library" is the clone and "raw baseline" a cold
 * boot of the same config; against the raw-QMP clone script and in the storm, each side is a clone.
 * Results written before the raw clone and the storm were measured lack them.
 */
interface TemplateResult {
  qemu: string;
  cloneRam: string;
  startToAgent: { cloneMs: number; coldMs: number; ratio: number; rounds: number };
  againstRaw?: Comparison;
  pss: { vms: number; cloneMiB: number; coldMiB: number; ratio: number };
  runtimeBase?: string;
  storm?: StormDelays & { vms: number; rounds: number; totalStartMs: number; rawTotalStartMs: number; startRatio: number; delayRatio: number; leakedProcessesAndDirs: number };
  date: string;
}

/** A storm's event-loop delays (bench/stats.ts); results written before the correction lack it. */
interface StormDelays {
  eventLoopDelayP99Ms: number;
  rawEventLoopDelayP99Ms: number;
  eventLoopDelayCorrectedP99Ms?: number;
  rawEventLoopDelayCorrectedP99Ms?: number;
  eventLoopDelayMaxMs?: number;
  rawEventLoopDelayMaxMs?: number;
}

/** The delays of a storm in words: per tick, corrected and the longest stall, library then raw. */
function delaysInWords(d: StormDelays): string {
  const corrected = d.eventLoopDelayCorrectedP99Ms === undefined ? '' : `, corrected for coordinated omission ${d.eventLoopDelayCorrectedP99Ms} ms (raw ${String(d.rawEventLoopDelayCorrectedP99Ms)} ms)`;
  const max = d.eventLoopDelayMaxMs === undefined ? '' : `, longest stall ${d.eventLoopDelayMaxMs} ms (raw ${String(d.rawEventLoopDelayMaxMs)} ms)`;
  return `event-loop delay p99 per tick ${d.eventLoopDelayP99Ms} ms (raw ${d.rawEventLoopDelayP99Ms} ms)${corrected}${max}`;
}

interface VmResult {
  rounds: number;
  fastRounds: number;
  figures: Record<string, Comparison>;
  /** Only where the architecture's figures include it (bench/arch.ts). */
  scale?: Record<string, number | boolean | string> & StormDelays;
  date: string;
}

/** The VM benchmarks, one per architecture, x86_64's first. */
const VM_BENCHES = Object.values(BENCH_ARCHES);
/** The result files the table reads (bench/results/<name>.qemu-<version>.json). */
const RESULT_NAMES = ['qmp', 'template', ...VM_BENCHES.map((bench) => bench.name)];

/** The QEMU versions ("7.2", "10.0") with results under bench/results/, oldest first. */
function benchmarkedVersions(dir: string): string[] {
  const versions = new Set<string>();
  for (const file of existsSync(dir) ? readdirSync(dir) : []) {
    const match = /^([\w-]+)\.qemu-(\d+\.\d+)\.json$/.exec(file);
    if (match?.[1] && match[2] && RESULT_NAMES.includes(match[1])) versions.add(match[2]);
  }
  const key = (v: string) => v.split('.').map(Number) as [number, number];
  return [...versions].sort((a, b) => key(a)[0] - key(b)[0] || key(a)[1] - key(b)[1]);
}

function read<T>(dir: string, name: string, version: string): T | undefined {
  const path = join(dir, basename(resultFile(name, version)));
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as T) : undefined;
}

/** One version's cells of a figure: library, raw baseline, and the ratio judged against its target. */
interface Cells {
  lib: string;
  raw: string;
  ratio: number;
}

/** A figure's target: an architecture's VM figure has the target of the figure it names. */
function targetOf(figure: string): number | undefined {
  const bench = VM_BENCHES.find((b) => b.figurePrefix !== '' && figure.startsWith(b.figurePrefix));
  return TARGETS[bench ? figure.slice(bench.figurePrefix.length) : figure];
}

function ratioCell(figure: string, ratio: number): string {
  const target = targetOf(figure);
  return target === undefined ? ratio.toFixed(3) : `${ratio.toFixed(3)} ${ratio <= target ? '✓' : '✗'}`;
}

/** Figure name → version → cells, in the order the figures are first met. */
function figuresByVersion(dir: string, versions: string[]): Map<string, Map<string, Cells>> {
  const figures = new Map<string, Map<string, Cells>>();
  const add = (figure: string, version: string, cells: Cells) => {
    if (!figures.has(figure)) figures.set(figure, new Map());
    figures.get(figure)?.set(version, cells);
  };
  for (const version of versions) {
    const qmp = read<QmpResult>(dir, 'qmp', version);
    if (qmp) {
      add('QMP round trip, serial', version, { lib: `${qmp.libSerialUs.toFixed(0)} µs`, raw: `${qmp.rawSerialUs.toFixed(0)} µs`, ratio: qmp.serialRatio });
      add('QMP round trip, pipelined', version, { lib: `${qmp.libPipelinedUs.toFixed(0)} µs`, raw: `${qmp.rawPipelinedUs.toFixed(0)} µs`, ratio: qmp.pipelinedRatio });
    }
    for (const bench of VM_BENCHES) {
      const vm = read<VmResult>(dir, bench.name, version);
      for (const [figure, c] of Object.entries(vm?.figures ?? {})) {
        add(`${bench.figurePrefix}${figure}`, version, { lib: `${c.libMs.toFixed(1)} ms`, raw: `${c.rawMs.toFixed(1)} ms`, ratio: c.ratio });
      }
      const scale = vm?.scale;
      if (scale) {
        const ms = (key: string) => `${Number(scale[key]).toFixed(1)} ms`;
        add(`${bench.figurePrefix}start storm: start (vs raw storm)`, version, { lib: ms('totalStartMs'), raw: ms('rawTotalStartMs'), ratio: Number(scale['startRatio']) });
        if (scale.eventLoopDelayCorrectedP99Ms !== undefined && typeof scale['delayRatio'] === 'number') {
          add(`${bench.figurePrefix}start storm: event-loop delay p99, corrected (vs raw)`, version, { lib: ms('eventLoopDelayCorrectedP99Ms'), raw: ms('rawEventLoopDelayCorrectedP99Ms'), ratio: scale['delayRatio'] });
        }
      }
    }
    const template = read<TemplateResult>(dir, 'template', version);
    if (template) {
      const { startToAgent: start, againstRaw, pss, storm } = template;
      add('template clone: start to agent (vs cold boot)', version, { lib: `${start.cloneMs.toFixed(0)} ms`, raw: `${start.coldMs.toFixed(0)} ms`, ratio: start.ratio });
      if (againstRaw) add('template clone: start to agent (vs raw-QMP clone)', version, { lib: `${againstRaw.libMs.toFixed(0)} ms`, raw: `${againstRaw.rawMs.toFixed(0)} ms`, ratio: againstRaw.ratio });
      add('template clones: PSS each (vs cold-booted)', version, { lib: `${pss.cloneMiB.toFixed(1)} MiB`, raw: `${pss.coldMiB.toFixed(1)} MiB`, ratio: pss.ratio });
      if (storm) {
        add('template clone storm: start (vs raw clone storm)', version, { lib: `${storm.totalStartMs.toFixed(1)} ms`, raw: `${storm.rawTotalStartMs.toFixed(1)} ms`, ratio: storm.startRatio });
        if (storm.eventLoopDelayCorrectedP99Ms !== undefined && storm.rawEventLoopDelayCorrectedP99Ms !== undefined) {
          add('template clone storm: event-loop delay p99, corrected (vs raw)', version, { lib: `${storm.eventLoopDelayCorrectedP99Ms.toFixed(1)} ms`, raw: `${storm.rawEventLoopDelayCorrectedP99Ms.toFixed(1)} ms`, ratio: storm.delayRatio });
        }
      }
    }
  }
  return figures;
}

function notesOf(dir: string, version: string): string[] {
  const notes: string[] = [];
  const qmp = read<QmpResult>(dir, 'qmp', version);
  if (qmp) notes.push(`QEMU ${version}, QMP: medians of ${qmp.rounds} alternated rounds (${qmp.date.slice(0, 10)}).`);
  for (const bench of VM_BENCHES) {
    const vm = read<VmResult>(dir, bench.name, version);
    if (!vm) continue;
    notes.push(`QEMU ${version}, ${bench.notesName}: medians of ${vm.fastRounds} alternated rounds for start, stop and hotplug, ${vm.rounds} for boot and resize; under TCG (${vm.date.slice(0, 10)}).`);
    const s = vm.scale;
    if (!s) continue;
    notes.push(
      `QEMU ${version}, scale: ${String(s['vms'])} paused VMs from one Node process started in ${String(s['totalStartMs'])} ms ` +
        `(raw ${String(s['rawTotalStartMs'])} ms, ratio ${String(s['startRatio'])}; medians of ${String(s['rounds'])} alternated storms), stopped in ${String(s['totalStopMs'])} ms; ` +
        `Node heap ${String(s['heapPerVmKiB'])} KiB per VM; ${delaysInWords(s)} during the start storm ` +
        `(each fork waits for its child's exec while the QEMUs already started hold both cores: the library spawns at most 5 QEMUs per ` +
        `event-loop turn, the raw script all of them in one turn, which a per-tick monitor counts as a single delay); ` +
        (s['runtimeBase'] === undefined ? '' : `VM directories in ${String(s['runtimeBase'])}; `) +
        (s['mainThreadCpuPerVmMs'] === undefined ? '' : `event-loop CPU per VM started ${String(s['mainThreadCpuPerVmMs'])} ms (raw ${String(s['rawMainThreadCpuPerVmMs'])} ms); `) +
        `processes or runtime directories left behind: ${String(s['leakedProcessesAndDirs'])}.`,
    );
  }
  const template = read<TemplateResult>(dir, 'template', version);
  if (template) {
    notes.push(
      `QEMU ${version}, templates: a clone against a cold boot of the same config (the library both), medians of ${template.startToAgent.rounds} alternated rounds` +
        (template.againstRaw ? `; against a raw-QMP clone script (the same command line and launch, x-ignore-shared, migrate-incoming, cont), ${template.againstRaw.rounds} rounds` : '') +
        `; PSS medians of ${template.pss.vms} running VMs each; clones' RAM: ${template.cloneRam}` +
        (template.runtimeBase === undefined ? '' : `; VM directories in ${template.runtimeBase}`) +
        ` (${template.date.slice(0, 10)}).`,
    );
    const storm = template.storm;
    if (storm) {
      notes.push(
        `QEMU ${version}, clone storm: ${storm.vms} paused clones from one Node process restored in ${storm.totalStartMs} ms (raw clones ${storm.rawTotalStartMs} ms, ratio ${storm.startRatio}; ` +
          `medians of ${storm.rounds} alternated storms), ${delaysInWords(storm)}, measured as the cold storm is; ` +
          `processes or runtime directories left behind: ${storm.leakedProcessesAndDirs}.`,
      );
    }
  }
  return notes;
}

/** One column group (library, raw baseline, ratio) per QEMU version benchmarked, ratios within each version's own run. */
export function renderTable(dir: string = resultsDir): string | undefined {
  const versions = benchmarkedVersions(dir);
  if (versions.length === 0) return undefined;
  const header = ['figure', 'target', ...versions.flatMap((v) => [`QEMU ${v} library`, 'raw baseline', 'ratio'])];
  const align = ['---', '---', ...versions.flatMap(() => ['---:', '---:', '---:'])];
  const lines = [`| ${header.join(' | ')} |`, `| ${align.join(' | ')} |`];
  for (const [figure, byVersion] of figuresByVersion(dir, versions)) {
    const target = targetOf(figure);
    const cells = versions.flatMap((v) => {
      const c = byVersion.get(v);
      return c ? [c.lib, c.raw, ratioCell(figure, c.ratio)] : ['', '', ''];
    });
    lines.push(`| ${[figure, target === undefined ? '' : `≤ ${target}`, ...cells].join(' | ')} |`);
  }
  return [...lines, '', ...versions.flatMap((v) => notesOf(dir, v))].join('\n');
}

/** Replaces the table in the README (or appends the markers after the first one). */
export function updateReadmeTable(): boolean {
  const table = renderTable();
  if (!table) return false;
  const readme = readFileSync(README, 'utf8');
  const start = readme.indexOf(START);
  if (start === -1) return false;
  const end = readme.indexOf(END, start);
  const after = end === -1 ? readme.slice(start + START.length) : readme.slice(end + END.length);
  writeFileSync(README, `${readme.slice(0, start)}${START}\n${table}\n${END}${after}`);
  return true;
}
