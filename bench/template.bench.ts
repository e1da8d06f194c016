// `npm run bench -- template`: clones restored from a template, in the same run, alternated:
// - start to agent (createVM → startVM → the agent answers) of a library clone against a cold boot
//   of the same config (ratio clone / cold), and against a raw-QMP clone script (bench/raw/raw-clone.ts:
//   the same QEMU command line and launch, a minimal QMP exchange; ratio library / raw);
// - the proportional memory (PSS, /proc/<pid>/smaps_rollup) of N running clones against N
//   cold-booted VMs (ratio clone / cold);
// - a clone start storm (STORM_VMS paused clones from one Node process) against a storm of raw
//   clones, measured as bench/vm.bench.ts measures the cold storm: wall time and event-loop delay p99.
// Figures are medians. The QEMU is SANDBOX_VMM_QEMU (bench/run.ts sets it per version of the
// matrix), which decides how clones map the template's RAM (see src/qemu/template/ram.ts).
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SandboxConfigInput } from '../src/hypervisor/config/index.ts';
import { QemuHypervisor } from '../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../src/qemu/runtime-paths.ts';
import { isProcessAlive } from '../src/qemu/process/proc-fs.ts';
import { cloneRamMode } from '../src/qemu/template/ram.ts';
import { GuestAgent, guestAssets } from '../test/guest/index.ts';
import { barChart } from './chart.ts';
import { benchHypervisor, benchRuntime, benchRuntimeCleanup, inBenchRuntime } from './runtime-base.ts';
import { rawCloneCleanup, rawCloneStart, rawCloneStop } from './raw/raw-clone.ts';
import { compare, median, printComparisons, round, startLoopDelayMonitor, STORM_ROUNDS, timeIt, writeResult, type Comparison, type LoopDelay } from './stats.ts';
import { benchQemuLabel } from './qemu.ts';

/** Rounds of the figures that include a cold boot (seconds each under TCG). */
const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
/** Clones start in a fraction of a second: their figure against the raw script gets more rounds. */
const CLONE_ROUNDS = Number(process.env['BENCH_FAST_ROUNDS'] ?? 15);
const PSS_VMS = Number(process.env['BENCH_PSS_VMS'] ?? 10);
/** As many VMs a storm as bench/vm.bench.ts's cold storm. */
const STORM_VMS = Number(process.env['BENCH_SCALE_VMS'] ?? 50);
const QEMU = process.env['SANDBOX_VMM_QEMU'] ?? '/usr/bin/qemu-system-x86_64';

function config(id: string): SandboxConfigInput {
  const guest = guestAssets();
  return {
    id,
    machine: { accel: 'tcg' },
    boot: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams },
    memory: { bootMiB: 256 },
    hotplug: { rootPorts: 2 },
    devices: [
      { type: 'channel', id: 'agent', name: 'agent.0' },
      { type: 'rng', id: 'rng0' },
    ],
    runtime: { qemuPath: QEMU },
  };
}

let serial = 0;
const nextId = (what: string) => `bench-${what}-${process.pid}-${++serial}`;

/** Starts a VM (cold, or from `template`) and waits until its agent answers. */
async function startToAgent(template?: string): Promise<{ vm: QemuHypervisor; agent: GuestAgent }> {
  const vm = benchHypervisor();
  await vm.createVM(inBenchRuntime(config(nextId(template ? 'clone' : 'cold'))), template ? { fromTemplate: template } : {});
  await vm.startVM();
  const agent = await GuestAgent.connect(runtimePaths(vm.runtimeDir as string).channelSocket('agent'), { timeoutMs: 120_000 });
  return { vm, agent };
}

async function stop({ vm, agent }: { vm: QemuHypervisor; agent: GuestAgent }): Promise<void> {
  await agent.close();
  await vm.stopVM();
}

/**
 * A clone's settle time: its agent's first round trip from `resumeVM` (the channel connected while
 * the restored guest was paused, so the guest never sees the host hang up), then a second one. The
 * first pays for QEMU's empty TCG translation cache (ARCHITECTURE.md, "Where a clone's settle time goes").
 */
async function agentAfterResume(template: string): Promise<{ firstMs: number; secondMs: number }> {
  const vm = benchHypervisor();
  await vm.createVM(inBenchRuntime(config(nextId('settle'))), { fromTemplate: template });
  await vm.startVM({ paused: true });
  const connecting = GuestAgent.connect(runtimePaths(vm.runtimeDir as string).channelSocket('agent'), { timeoutMs: 120_000 });
  let agent: GuestAgent | undefined;
  try {
    const firstMs = await timeIt(async () => {
      await vm.resumeVM();
      agent = await connecting;
    });
    const secondMs = await timeIt(() => (agent as GuestAgent).run('true'));
    return { firstMs, secondMs };
  } finally {
    await agent?.close();
    await vm.stopVM();
  }
}

function pssKiB(pid: number): number {
  const match = /^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'));
  return Number(match?.[1] ?? Number.NaN);
}

/** Median PSS of `count` VMs running at once, each with its agent up. */
async function pssOf(count: number, template?: string): Promise<number> {
  const vms: { vm: QemuHypervisor; agent: GuestAgent }[] = [];
  try {
    for (let i = 0; i < count; i++) vms.push(await startToAgent(template));
    return median(vms.map(({ vm }) => pssKiB(vm.getPids()[0] as number))) / 1024;
  } finally {
    for (const running of vms) await stop(running);
  }
}

/** A raw-QMP clone started to its agent, and stopped after. */
async function rawCloneToAgent(template: string, version: string): Promise<number> {
  let vm: Awaited<ReturnType<typeof rawCloneStart>> | undefined;
  let agent: GuestAgent | undefined;
  try {
    return await timeIt(async () => {
      vm = await rawCloneStart(config(nextId('raw-clone')), template, version);
      agent = await GuestAgent.connect(vm.agentSocket, { timeoutMs: 120_000 });
    });
  } finally {
    await agent?.close();
    if (vm) await rawCloneStop(vm);
  }
}

interface StormFigure {
  vms: number;
  rounds: number;
  totalStartMs: number;
  rawTotalStartMs: number;
  startRatio: number;
  /** Per-tick p99 (monitorEventLoopDelay), library and raw: blind to a single long stall (stats.ts). */
  eventLoopDelayP99Ms: number;
  rawEventLoopDelayP99Ms: number;
  /** The delay a callback due at any moment met: p99 with coordinated omission corrected (stats.ts). */
  eventLoopDelayCorrectedP99Ms: number;
  rawEventLoopDelayCorrectedP99Ms: number;
  eventLoopDelayMaxMs: number;
  rawEventLoopDelayMaxMs: number;
  /** Library / raw corrected p99 (target ≤ 1.25). */
  delayRatio: number;
  /** Library / raw per-tick p99. */
  perTickDelayRatio: number;
  leakedProcessesAndDirs: number;
}

/** One storm of STORM_VMS paused clones through the library, measured; all stopped after. */
async function libraryCloneStorm(template: string): Promise<{ startMs: number; delay: LoopDelay; leaked: number }> {
  const monitor = await startLoopDelayMonitor();
  const vms = Array.from({ length: STORM_VMS }, () => benchHypervisor());
  const started = performance.now();
  const settled = await Promise.allSettled(
    vms.map(async (vm) => {
      await vm.createVM(inBenchRuntime(config(nextId('storm'))), { fromTemplate: template });
      await vm.startVM({ paused: true, timeoutMs: 300_000 });
    }),
  );
  const startMs = performance.now() - started;
  const delay = monitor.stop();
  const failures = settled.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
  const pids = vms.flatMap((vm) => vm.getPids());
  const dirs = vms.map((vm) => vm.runtimeDir ?? '');
  await Promise.allSettled(vms.map((vm) => vm.stopVM()));
  if (failures.length > 0) {
    throw new AggregateError(failures, `${failures.length} of ${STORM_VMS} clones of the storm failed to start, the first with: ${String((failures[0] as Error).message)}`);
  }
  const leaked = pids.filter((pid) => isProcessAlive(pid)).length + dirs.filter((dir) => existsSync(dir)).length;
  return { startMs, delay, leaked };
}

/** STORM_VMS paused clones from one Node process, library and raw storms alternated. */
async function cloneStormFigure(template: string, version: string): Promise<StormFigure> {
  const storms: Awaited<ReturnType<typeof libraryCloneStorm>>[] = [];
  const rawDelays: LoopDelay[] = [];
  const comparison = await compare(
    STORM_ROUNDS,
    async () => {
      const storm = await libraryCloneStorm(template);
      storms.push(storm);
      return storm.startMs;
    },
    async () => {
      const monitor = await startLoopDelayMonitor();
      const started = performance.now();
      const settled = await Promise.allSettled(Array.from({ length: STORM_VMS }, () => rawCloneStart(config(nextId('raw-storm')), template, version, true)));
      const ms = performance.now() - started;
      rawDelays.push(monitor.stop());
      await Promise.all(settled.flatMap((result) => (result.status === 'fulfilled' ? [rawCloneStop(result.value)] : [])));
      const failed = settled.find((result) => result.status === 'rejected');
      if (failed) throw new Error('a raw clone of the storm failed to start', { cause: failed.reason });
      return ms;
    },
  );
  const lib = (pick: (delay: LoopDelay) => number) => median(storms.map((s) => pick(s.delay)));
  const raw = (pick: (delay: LoopDelay) => number) => median(rawDelays.map(pick));
  return {
    vms: STORM_VMS,
    rounds: STORM_ROUNDS,
    totalStartMs: round(comparison.libMs, 1),
    rawTotalStartMs: round(comparison.rawMs, 1),
    startRatio: comparison.ratio,
    eventLoopDelayP99Ms: round(lib((d) => d.p99Ms), 2),
    rawEventLoopDelayP99Ms: round(raw((d) => d.p99Ms), 2),
    eventLoopDelayCorrectedP99Ms: round(lib((d) => d.correctedP99Ms), 2),
    rawEventLoopDelayCorrectedP99Ms: round(raw((d) => d.correctedP99Ms), 2),
    eventLoopDelayMaxMs: round(lib((d) => d.maxMs), 2),
    rawEventLoopDelayMaxMs: round(raw((d) => d.maxMs), 2),
    delayRatio: round(lib((d) => d.correctedP99Ms) / raw((d) => d.correctedP99Ms)),
    perTickDelayRatio: round(lib((d) => d.p99Ms) / raw((d) => d.p99Ms)),
    leakedProcessesAndDirs: storms.reduce((sum, s) => sum + s.leaked, 0),
  };
}

export async function run(): Promise<void> {
  const base = mkdtempSync('/dev/shm/svmm-bench-');
  chmodSync(base, 0o755);
  try {
    const dir = join(base, 'template');
    const maker = benchHypervisor();
    const madeMs = await timeIt(async () => {
      await maker.createVM(inBenchRuntime(config(nextId('template'))), { templateDir: dir });
      await maker.startVM({ waitForChannel: 'agent' });
    });
    const info = await maker.saveTemplate();
    console.log(`template made: booted in ${madeMs.toFixed(0)} ms, state ${info.stateBytes} bytes, QEMU ${info.hypervisorVersion} (clones: ${cloneRamMode(info.hypervisorVersion)})`);
    const start = await compare(
      ROUNDS,
      async () => {
        let running: { vm: QemuHypervisor; agent: GuestAgent } | undefined;
        const ms = await timeIt(async () => (running = await startToAgent(dir)));
        if (running) await stop(running);
        return ms;
      },
      async () => {
        let running: { vm: QemuHypervisor; agent: GuestAgent } | undefined;
        const ms = await timeIt(async () => (running = await startToAgent()));
        if (running) await stop(running);
        return ms;
      },
    );
    console.log(`start to agent: clone ${start.libMs.toFixed(0)} ms, cold boot ${start.rawMs.toFixed(0)} ms, ratio ${start.ratio} (target <= 0.15)`);
    const settles: { firstMs: number; secondMs: number }[] = [];
    for (let i = 0; i < ROUNDS; i++) settles.push(await agentAfterResume(dir));
    const settle = { firstMs: round(median(settles.map((s) => s.firstMs)), 1), secondMs: round(median(settles.map((s) => s.secondMs)), 1), rounds: ROUNDS };
    console.log(`clone's agent after resumeVM: first answer ${settle.firstMs} ms, the next ${settle.secondMs} ms`);
    const version = info.hypervisorVersion;
    const againstRaw = await compare(
      CLONE_ROUNDS,
      async () => {
        let running: { vm: QemuHypervisor; agent: GuestAgent } | undefined;
        const ms = await timeIt(async () => (running = await startToAgent(dir)));
        if (running) await stop(running);
        return ms;
      },
      () => rawCloneToAgent(dir, version),
    );
    console.log(`clone start to agent: library ${againstRaw.libMs.toFixed(0)} ms, raw-QMP script ${againstRaw.rawMs.toFixed(0)} ms, ratio ${againstRaw.ratio} (target <= 1.10)`);
    const clonePss = await pssOf(PSS_VMS, dir);
    const coldPss = await pssOf(PSS_VMS);
    const pssRatio = round(clonePss / coldPss);
    console.log(`PSS of ${PSS_VMS} running: clone ${clonePss.toFixed(1)} MiB, cold ${coldPss.toFixed(1)} MiB, ratio ${pssRatio} (target <= 0.3)`);
    const storm = await cloneStormFigure(dir, version);
    console.log('clone storm:', storm);
    const label = benchQemuLabel();
    const figures: Record<string, Comparison> = {
      'clone vs cold boot: start to agent': start,
      'library vs raw-QMP clone: start to agent': againstRaw,
      [`clone storm, ${STORM_VMS} paused: library vs raw`]: { libMs: storm.totalStartMs, rawMs: storm.rawTotalStartMs, ratio: storm.startRatio, rounds: storm.rounds },
    };
    printComparisons(`templates on QEMU ${version} (medians; first side / second side)`, figures);
    const path = writeResult('template', label, {
      qemu: info.hypervisorVersion,
      cloneRam: cloneRamMode(info.hypervisorVersion),
      templateBootMs: round(madeMs, 1),
      stateBytes: info.stateBytes,
      startToAgent: { cloneMs: start.libMs, coldMs: start.rawMs, ratio: start.ratio, rounds: start.rounds },
      agentAfterResume: settle,
      againstRaw: { libMs: againstRaw.libMs, rawMs: againstRaw.rawMs, ratio: againstRaw.ratio, rounds: againstRaw.rounds },
      pss: { vms: PSS_VMS, cloneMiB: round(clonePss, 1), coldMiB: round(coldPss, 1), ratio: pssRatio },
      storm,
      runtimeBase: benchRuntime().label,
    });
    const svg = join(path, '..', `template.qemu-${label}.svg`);
    writeFileSync(svg, barChart(`sandbox-vmm templates, QEMU ${label} (median ms; blue = the first side named, grey = the second)`, figures));
    console.log(`wrote ${path} and ${svg}`);
  } finally {
    rawCloneCleanup();
    benchRuntimeCleanup();
    rmSync(base, { recursive: true, force: true });
  }
}
