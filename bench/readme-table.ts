// Renders the latest results under bench/results/ as the README's summary table, between the
// <!-- bench-table --> markers, so the README always shows figures from one real run.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { resultsDir, type Comparison } from './stats.ts';

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

interface VmResult {
  rounds: number;
  fastRounds: number;
  figures: Record<string, Comparison>;
  scale: Record<string, number | boolean>;
  date: string;
}

interface TemplateResult {
  qemu: string;
  cloneRam: string;
  startToAgent: { cloneMs: number; coldMs: number; ratio: number; rounds: number };
  pss: { vms: number; cloneMiB: number; coldMiB: number; ratio: number };
  date: string;
}

function read<T>(name: string): T | undefined {
  const path = join(resultsDir, `${name}.json`);
  return existsSync(path) ? (JSON.parse(readFileSync(path, 'utf8')) as T) : undefined;
}

function row(figure: string, lib: string, raw: string, ratio: number): string {
  const target = TARGETS[figure];
  const verdict = target === undefined ? '' : ratio <= target ? `≤ ${target} ✓` : `≤ ${target} ✗`;
  return `| ${figure} | ${lib} | ${raw} | ${ratio.toFixed(3)} | ${verdict} |`;
}

export function renderTable(): string | undefined {
  const qmp = read<QmpResult>('qmp');
  const vm = read<VmResult>('vm');
  const template = read<TemplateResult>('template');
  if (!qmp && !vm && !template) return undefined;
  const lines = ['| figure | library | raw baseline | ratio | target |', '| --- | ---: | ---: | ---: | --- |'];
  if (qmp) {
    lines.push(row('QMP round trip, serial', `${qmp.libSerialUs.toFixed(0)} µs`, `${qmp.rawSerialUs.toFixed(0)} µs`, qmp.serialRatio));
    lines.push(row('QMP round trip, pipelined', `${qmp.libPipelinedUs.toFixed(0)} µs`, `${qmp.rawPipelinedUs.toFixed(0)} µs`, qmp.pipelinedRatio));
  }
  for (const [figure, c] of Object.entries(vm?.figures ?? {})) {
    lines.push(row(figure, `${c.libMs.toFixed(1)} ms`, `${c.rawMs.toFixed(1)} ms`, c.ratio));
  }
  if (template) {
    // Here "library" is the clone and "raw baseline" the cold boot of the same config.
    lines.push(row('template clone: start to agent (vs cold boot)', `${template.startToAgent.cloneMs.toFixed(0)} ms`, `${template.startToAgent.coldMs.toFixed(0)} ms`, template.startToAgent.ratio));
    lines.push(row('template clones: PSS each (vs cold-booted)', `${template.pss.cloneMiB.toFixed(1)} MiB`, `${template.pss.coldMiB.toFixed(1)} MiB`, template.pss.ratio));
  }
  const notes: string[] = [];
  if (qmp) notes.push(`QMP: medians of ${qmp.rounds} alternated rounds (${qmp.date.slice(0, 10)}).`);
  if (vm) {
    notes.push(`VM figures: medians of ${vm.fastRounds} alternated rounds for start, stop and hotplug, ${vm.rounds} for boot, resize and scale; under TCG (${vm.date.slice(0, 10)}).`);
    const s = vm.scale;
    notes.push(
      `Scale: ${String(s['vms'])} paused VMs from one Node process started in ${String(s['totalStartMs'])} ms ` +
        `(raw ${String(s['rawTotalStartMs'])} ms, ratio ${String(s['startRatio'])}; medians of ${String(s['rounds'])} alternated storms), stopped in ${String(s['totalStopMs'])} ms; ` +
        `Node heap ${String(s['heapPerVmKiB'])} KiB per VM; event-loop delay p99 ${String(s['eventLoopDelayP99Ms'])} ms during the start storm ` +
        `(${String(s['rawEventLoopDelayP99Ms'])} ms during the raw one: both are the storm's burst of spawns, each fork waiting ` +
        `for its child's exec while the QEMUs already started hold both cores; the monitor starts a tick before either storm); ` +
        `processes or runtime directories left behind: ${String(s['leakedProcessesAndDirs'])}.`,
    );
  }
  if (template) {
    notes.push(
      `Templates: a clone against a cold boot of the same config (library both), medians of ${template.startToAgent.rounds} alternated rounds, ` +
        `PSS medians of ${template.pss.vms} running VMs each; QEMU ${template.qemu}, clones' RAM: ${template.cloneRam} (${template.date.slice(0, 10)}).`,
    );
  }
  return [...lines, '', ...notes].join('\n');
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
