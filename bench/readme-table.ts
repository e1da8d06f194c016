// Renders the latest results under bench/results/ as the README's summary table, between the
// <!-- bench-table --> markers, so the README always shows figures from real runs: a column group
// per QEMU version, each with its ratios against the raw baseline measured in the same run.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
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
  'template clones: PSS each (vs cold-booted)': 0.3,
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

/** bench/template.bench.ts: here "library" is the clone and "raw baseline" a cold boot of the same config. */
interface TemplateResult {
  qemu: string;
  cloneRam: string;
  startToAgent: { cloneMs: number; coldMs: number; ratio: number; rounds: number };
  pss: { vms: number; cloneMiB: number; coldMiB: number; ratio: number };
  date: string;
}

interface VmResult {
  rounds: number;
  fastRounds: number;
  figures: Record<string, Comparison>;
  scale: Record<string, number | boolean>;
  date: string;
}

/** The QEMU versions ("7.2", "10.0") with results under bench/results/, oldest first. */
function benchmarkedVersions(dir: string): string[] {
  const versions = new Set<string>();
  for (const file of existsSync(dir) ? readdirSync(dir) : []) {
    const match = /^(?:qmp|vm|template)\.qemu-(\d+\.\d+)\.json$/.exec(file);
    if (match?.[1]) versions.add(match[1]);
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

function ratioCell(figure: string, ratio: number): string {
  const target = TARGETS[figure];
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
    for (const [figure, c] of Object.entries(read<VmResult>(dir, 'vm', version)?.figures ?? {})) {
      add(figure, version, { lib: `${c.libMs.toFixed(1)} ms`, raw: `${c.rawMs.toFixed(1)} ms`, ratio: c.ratio });
    }
    const template = read<TemplateResult>(dir, 'template', version);
    if (template) {
      const { startToAgent: start, pss } = template;
      add('template clone: start to agent (vs cold boot)', version, { lib: `${start.cloneMs.toFixed(0)} ms`, raw: `${start.coldMs.toFixed(0)} ms`, ratio: start.ratio });
      add('template clones: PSS each (vs cold-booted)', version, { lib: `${pss.cloneMiB.toFixed(1)} MiB`, raw: `${pss.coldMiB.toFixed(1)} MiB`, ratio: pss.ratio });
    }
  }
  return figures;
}

function notesOf(dir: string, version: string): string[] {
  const notes: string[] = [];
  const qmp = read<QmpResult>(dir, 'qmp', version);
  const vm = read<VmResult>(dir, 'vm', version);
  if (qmp) notes.push(`QEMU ${version}, QMP: medians of ${qmp.rounds} alternated rounds (${qmp.date.slice(0, 10)}).`);
  if (vm) {
    notes.push(`QEMU ${version}, VM figures: medians of ${vm.fastRounds} alternated rounds for start, stop and hotplug, ${vm.rounds} for boot, resize and scale; under TCG (${vm.date.slice(0, 10)}).`);
    const s = vm.scale;
    notes.push(
      `QEMU ${version}, scale: ${String(s['vms'])} paused VMs from one Node process started in ${String(s['totalStartMs'])} ms ` +
        `(raw ${String(s['rawTotalStartMs'])} ms, ratio ${String(s['startRatio'])}; medians of ${String(s['rounds'])} alternated storms), stopped in ${String(s['totalStopMs'])} ms; ` +
        `Node heap ${String(s['heapPerVmKiB'])} KiB per VM; event-loop delay p99 ${String(s['eventLoopDelayP99Ms'])} ms during the start storm ` +
        `(${String(s['rawEventLoopDelayP99Ms'])} ms during the raw one; each fork waits for its child's exec while the QEMUs already started ` +
        `hold both cores: the library spawns at most 5 QEMUs per event-loop turn, the raw script all of them in one turn, which the monitor counts ` +
        `as a single delay; the monitor starts a tick before either storm); ` +
        (s['mainThreadCpuPerVmMs'] === undefined ? '' : `event-loop CPU per VM started ${String(s['mainThreadCpuPerVmMs'])} ms (raw ${String(s['rawMainThreadCpuPerVmMs'])} ms); `) +
        `processes or runtime directories left behind: ${String(s['leakedProcessesAndDirs'])}.`,
    );
  }
  const template = read<TemplateResult>(dir, 'template', version);
  if (template) {
    notes.push(
      `QEMU ${version}, templates: a clone against a cold boot of the same config (the library both), medians of ${template.startToAgent.rounds} alternated rounds, ` +
        `PSS medians of ${template.pss.vms} running VMs each; clones' RAM: ${template.cloneRam} (${template.date.slice(0, 10)}).`,
    );
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
    const target = TARGETS[figure];
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
