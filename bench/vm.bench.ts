// `npm run bench -- vm` (x86_64's q35) and `npm run bench -- vm-arm64` (aarch64's virt, the arm64
// test guest; what differs is bench/arch.ts): the QEMU backend against a raw baseline that drives
// the very same QEMU command line with a bare script (child_process + a bare QMP socket; of the
// library it only uses the pure functions that compute the command line and launch spec, as data),
// in the same run, alternated. Both start QEMU the same way: through svmm-launch, with the same launch spec
// (listening sockets bound by the launcher, capabilities dropped, an unprivileged identity of its
// own, parent-death signal, empty environment). Figures are medians; ratio = library / raw.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { QemuHypervisor } from '../src/qemu/qemu-hypervisor.ts';
import { archProfile } from '../src/hypervisor/arch-profiles.ts';
import { parseSandboxConfig, type SandboxConfigInput } from '../src/hypervisor/config/index.ts';
import type { VmIdentity } from '../src/hypervisor/types.ts';
import { buildQemuArgv } from '../src/qemu/argv/index.ts';
import { resolveBinary } from '../src/qemu/binaries.ts';
import { identityOfLease } from '../src/qemu/identity/identity.ts';
import { qemuLaunchSpec } from '../src/qemu/launch/launch.ts';
import { findLauncher, launcherArgs, launcherStdio } from '../src/qemu/launch/launcher.ts';
import { runtimePaths } from '../src/qemu/runtime-paths.ts';
import { isProcessAlive } from '../src/qemu/process/proc-fs.ts';
import { GuestAgent, guestAssets } from '../test/guest/index.ts';
import { BENCH_ARCHES, type BenchArch } from './arch.ts';
import { benchQemuLabel } from './qemu.ts';
import { RawQmp } from './raw/raw-qmp.ts';
import { compare, median, printComparisons, round, startLoopDelayMonitor, STORM_ROUNDS, timeIt, writeResult, type Comparison, type LoopDelay } from './stats.ts';
import { barChart } from './chart.ts';
import { benchHypervisor, benchRuntime, benchRuntimeCleanup, inBenchRuntime } from './runtime-base.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
/** Figures of tens of milliseconds are noisier on a shared machine: they get more rounds. */
const FAST_ROUNDS = Number(process.env['BENCH_FAST_ROUNDS'] ?? 15);
const SCALE_VMS = Number(process.env['BENCH_SCALE_VMS'] ?? 50);
/**
 * The raw baseline's QEMUs each get a uid of their own, as the library's do, but a fixed one
 * (RAW_UID_BASE + i, i counting raw VMs, wrapping at RAW_UIDS, far more than ever run at once):
 * a script given a uid per VM would not lease it, and the lease (a lock, a file, a scan of /proc)
 * is part of what the library's figures pay for. The base sits near the top of the library's
 * lease range (1900000000 + 65536), which its leases, taken lowest first, do not reach here.
 */
const RAW_UID_BASE = 1_900_065_000;
const RAW_UIDS = 500;

/** The benchmarked VM of an architecture: its test guest, on its QEMU of the version under benchmark. */
function config(bench: BenchArch, extra: Partial<SandboxConfigInput> = {}): SandboxConfigInput {
  const guest = guestAssets(bench.arch);
  return {
    machine: { arch: bench.arch, accel: 'tcg' },
    boot: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams },
    // One more vCPU per round of the vCPU figure, where the machine can hot-plug vCPUs.
    cpus: archProfile(bench.arch).cpuHotplug ? { boot: 1, max: 1 + ROUNDS } : { boot: 1 },
    memory: { bootMiB: 256, maxMiB: 1280, hotplug: 'virtio-mem' },
    hotplug: { rootPorts: 2 },
    devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }],
    // The raw baseline runs the same binary (rawCommand).
    runtime: { qemuPath: bench.qemu() },
    ...extra,
  };
}

// ------------------------------------------------------------------ the raw baseline

interface RawVm {
  dir: string;
  identity: VmIdentity;
  child: ChildProcess;
  exited: Promise<void>;
  qmp: RawQmp;
}

let rawCounter = 0;
let rawBaseDir: string | undefined;

/** Where the raw baseline's VMs live, made on first use (importing this module creates nothing). */
function rawBase(): string {
  if (rawBaseDir === undefined) {
    rawBaseDir = mkdtempSync(join(benchRuntime().rawParent, 'svmm-raw-'));
    // Traversable by the unprivileged QEMU, as the library makes its runtime base (mode 0711).
    chmodSync(rawBaseDir, 0o711);
  }
  return rawBaseDir;
}

/** The launcher, and each QEMU binary by its configured path, resolved once as the library resolves them at createVM. */
let rawLauncher: string | undefined;
const rawQemus = new Map<string, string>();

/**
 * The launcher's path and argv and the stdio the library spawns QEMU with: the very spec the
 * library builds (qemuLaunchSpec) from the same argv, for this VM's identity, computed as data.
 */
function rawCommand(input: SandboxConfigInput, dir: string, uid: number): { identity: VmIdentity; file: string; args: string[]; stdio: ReturnType<typeof launcherStdio> } {
  rawLauncher ??= findLauncher();
  const qemuPath = input.runtime?.qemuPath ?? '';
  if (!rawQemus.has(qemuPath)) rawQemus.set(qemuPath, resolveBinary(qemuPath, 'runtime.qemuPath'));
  const qemu = rawQemus.get(qemuPath) ?? '';
  const config = parseSandboxConfig({ ...input, runtime: { dir } });
  // The identity a leased uid gets (its own group, plus kvm under kvm).
  const identity = identityOfLease(uid, config.machine.accel);
  const paths = runtimePaths(dir);
  const plan = { config, paths, argv: buildQemuArgv(config, paths), qemuPath: qemu, virtiofsdPath: undefined, launcherPath: rawLauncher };
  const spec = qemuLaunchSpec(plan, identity);
  return { identity, file: rawLauncher, args: launcherArgs(spec), stdio: launcherStdio(spec, 'pipe') };
}

async function rawStart(input: SandboxConfigInput, run: boolean): Promise<RawVm> {
  const index = rawCounter++;
  const dir = join(rawBase(), String(index));
  const command = rawCommand(input, dir, RAW_UID_BASE + (index % RAW_UIDS));
  const { identity } = command;
  // As the library makes a VM's directory: root's, QEMU's group may only traverse it (0710).
  mkdirSync(dir, { mode: 0o710 });
  chownSync(dir, 0, identity.gid);
  const child = spawn(command.file, command.args, { stdio: command.stdio, env: {} });
  child.stderr?.resume();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const qmp = await RawQmp.connect(join(dir, 'qmp.sock'));
  if (run) await qmp.execute('cont');
  return { dir, identity, child, exited, qmp };
}

async function rawStop(vm: RawVm): Promise<void> {
  await vm.qmp.execute('quit').catch(() => {});
  await vm.exited;
  vm.qmp.close();
  rmSync(vm.dir, { recursive: true, force: true });
}

// ------------------------------------------------------------------ guest probes

async function waitFor(check: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > end) throw new Error('the guest did not get there in time');
  }
}

const countDisks = async (agent: GuestAgent) => Number((await agent.runOk('ls /sys/block | grep -c ^vd || true')).trim());
const countNics = async (agent: GuestAgent) => Number((await agent.runOk('ls /sys/class/net | grep -vc ^lo || true')).trim());

// ------------------------------------------------------------------ figures

async function startFigure(bench: BenchArch): Promise<{ start: Comparison; stop: Comparison }> {
  const input = config(bench);
  const stopLib: number[] = [];
  const stopRaw: number[] = [];
  const start = await compare(
    FAST_ROUNDS,
    async () => {
      const vm = benchHypervisor();
      const ms = await timeIt(async () => {
        await vm.createVM(inBenchRuntime(input));
        await vm.startVM({ paused: true });
      });
      stopLib.push(await timeIt(() => vm.stopVM()));
      return ms;
    },
    async () => {
      let raw: RawVm | undefined;
      const ms = await timeIt(async () => {
        raw = await rawStart(input, false);
      });
      if (raw) {
        const vm = raw;
        stopRaw.push(await timeIt(() => rawStop(vm)));
      }
      return ms;
    },
  );
  return { start, stop: await pair(stopLib, stopRaw) };
}

async function bootFigure(bench: BenchArch): Promise<Comparison> {
  const input = config(bench);
  return compare(
    ROUNDS,
    async () => {
      const vm = benchHypervisor();
      let agent: GuestAgent | undefined;
      const ms = await timeIt(async () => {
        await vm.createVM(inBenchRuntime(input));
        await vm.startVM();
        agent = await GuestAgent.connect(runtimePaths(vm.runtimeDir ?? '').channelSocket('agent'), { timeoutMs: 60_000 });
        await agent.runOk('true');
      });
      await agent?.close();
      await vm.stopVM();
      return ms;
    },
    async () => {
      let raw: RawVm | undefined;
      let agent: GuestAgent | undefined;
      const ms = await timeIt(async () => {
        raw = await rawStart(input, true);
        agent = await GuestAgent.connect(join(raw.dir, 'ch-agent.sock'), { timeoutMs: 60_000 });
        await agent.runOk('true');
      });
      await agent?.close();
      if (raw) await rawStop(raw);
      return ms;
    },
  );
}

interface Booted {
  lib: QemuHypervisor;
  libAgent: GuestAgent;
  raw: RawVm;
  rawAgent: GuestAgent;
}

async function bootPair(bench: BenchArch): Promise<Booted> {
  const input = config(bench);
  const lib = benchHypervisor();
  await lib.createVM(inBenchRuntime(input));
  await lib.startVM();
  const libAgent = await GuestAgent.connect(runtimePaths(lib.runtimeDir ?? '').channelSocket('agent'), { timeoutMs: 60_000 });
  const raw = await rawStart(input, true);
  const rawAgent = await GuestAgent.connect(join(raw.dir, 'ch-agent.sock'), { timeoutMs: 60_000 });
  return { lib, libAgent, raw, rawAgent };
}

/** Each VM's QEMU runs as a uid of its own: what it opens must be that uid's. */
function ownersOf(b: Booted): { lib: number; raw: number } {
  const lib = b.lib.identity?.uid;
  if (lib === undefined) throw new Error('the library VM has no identity of its own: run the benchmark as root');
  return { lib, raw: b.raw.identity.uid };
}

/** Medians of per-round times recorded inside other rounds, paired as compare() pairs them. */
function pair(lib: number[], raw: number[]): Promise<Comparison> {
  let i = 0;
  let j = 0;
  return compare(lib.length, () => Promise.resolve(lib[i++] ?? Number.NaN), () => Promise.resolve(raw[j++] ?? Number.NaN));
}

async function blockFigures(b: Booted, scratch: string): Promise<Record<string, Comparison>> {
  const owners = ownersOf(b);
  // One image per side, each its QEMU's (the rounds never attach them at once, but the uids differ).
  const disks = { lib: join(scratch, 'disk-lib.img'), raw: join(scratch, 'disk-raw.img') };
  for (const which of ['lib', 'raw'] as const) {
    writeFileSync(disks[which], Buffer.alloc(4 * 1024 * 1024));
    chownSync(disks[which], owners[which], owners[which]);
  }
  const addLib: number[] = [];
  const delLib: number[] = [];
  const addRaw: number[] = [];
  const delRaw: number[] = [];
  const blockRound = async (which: 'lib' | 'raw') => {
    const agent = which === 'lib' ? b.libAgent : b.rawAgent;
    const before = await countDisks(agent);
    if (which === 'lib') {
      addLib.push(await timeIt(async () => {
        await b.lib.hotplugAddDevice({ type: 'block', id: 'bench0', path: disks.lib });
        await waitFor(async () => (await countDisks(agent)) === before + 1);
      }));
      delLib.push(await timeIt(async () => {
        await b.lib.hotplugRemoveDevice('bench0');
        await waitFor(async () => (await countDisks(agent)) === before);
      }));
    } else {
      const q = b.raw.qmp;
      addRaw.push(await timeIt(async () => {
        await q.execute('blockdev-add', { driver: 'raw', 'node-name': 'drv-bench0', file: { driver: 'file', filename: disks.raw } });
        await q.execute('device_add', { driver: 'virtio-blk-pci', id: 'bench0', drive: 'drv-bench0', bus: 'rp0' });
        await waitFor(async () => (await countDisks(agent)) === before + 1);
      }));
      delRaw.push(await timeIt(async () => {
        const deleted = q.waitEvent('DEVICE_DELETED', (d) => d['device'] === 'bench0');
        await q.execute('device_del', { id: 'bench0' });
        await deleted;
        await q.execute('blockdev-del', { 'node-name': 'drv-bench0' });
        await waitFor(async () => (await countDisks(agent)) === before);
      }));
    }
    return 0;
  };
  await compare(FAST_ROUNDS, () => blockRound('lib'), () => blockRound('raw'));
  return { 'hotplug block (add)': await pair(addLib, addRaw), 'hotplug block (remove)': await pair(delLib, delRaw) };
}

async function nicFigures(b: Booted): Promise<Record<string, Comparison>> {
  const owners = ownersOf(b);
  const tap = 'svmmbench0';
  const tapRaw = 'svmmbench1';
  // Each tap is its QEMU's, as a runtime hands a VM's taps to vm.identity.
  for (const [t, owner] of [[tap, owners.lib], [tapRaw, owners.raw]] as const) execFileSync('ip', ['tuntap', 'add', 'dev', t, 'mode', 'tap', 'user', String(owner)]);
  const nicAddLib: number[] = [];
  const nicDelLib: number[] = [];
  const nicAddRaw: number[] = [];
  const nicDelRaw: number[] = [];
  try {
    const nicRound = async (which: 'lib' | 'raw') => {
      const agent = which === 'lib' ? b.libAgent : b.rawAgent;
      const before = await countNics(agent);
      if (which === 'lib') {
        nicAddLib.push(await timeIt(async () => {
          await b.lib.hotplugAddDevice({ type: 'net', id: 'nic0', tap: { ifname: tap }, mac: '52:54:00:be:ec:01' });
          await waitFor(async () => (await countNics(agent)) === before + 1);
        }));
        nicDelLib.push(await timeIt(async () => {
          await b.lib.hotplugRemoveDevice('nic0');
          await waitFor(async () => (await countNics(agent)) === before);
        }));
      } else {
        const q = b.raw.qmp;
        nicAddRaw.push(await timeIt(async () => {
          await q.execute('netdev_add', { type: 'tap', id: 'net-nic0', ifname: tapRaw, script: 'no', downscript: 'no' });
          await q.execute('device_add', { driver: 'virtio-net-pci', id: 'nic0', netdev: 'net-nic0', bus: 'rp1', mac: '52:54:00:be:ec:02' });
          await waitFor(async () => (await countNics(agent)) === before + 1);
        }));
        nicDelRaw.push(await timeIt(async () => {
          const deleted = q.waitEvent('DEVICE_DELETED', (d) => d['device'] === 'nic0');
          await q.execute('device_del', { id: 'nic0' });
          await deleted;
          await q.execute('netdev_del', { id: 'net-nic0' });
          await waitFor(async () => (await countNics(agent)) === before);
        }));
      }
      return 0;
    };
    await compare(FAST_ROUNDS, () => nicRound('lib'), () => nicRound('raw'));
  } finally {
    for (const t of [tap, tapRaw]) execFileSync('ip', ['link', 'del', t]);
  }
  return {
    'hotplug NIC (add)': await pair(nicAddLib, nicAddRaw),
    'hotplug NIC (remove)': await pair(nicDelLib, nicDelRaw),
  };
}

async function memoryRoundTripFigure(b: Booted): Promise<Record<string, Comparison>> {
  const memLib = await b.libAgent.memTotalKiB();
  const memRaw = await b.rawAgent.memTotalKiB();
  const memory = await compare(
    ROUNDS,
    () =>
      timeIt(async () => {
        await b.lib.resizeMemory(256 + 1024);
        await waitFor(async () => (await b.libAgent.memTotalKiB()) >= memLib + 1000 * 1024);
        await b.lib.resizeMemory(256);
        await waitFor(async () => (await b.libAgent.memTotalKiB()) <= memLib);
      }),
    () =>
      timeIt(async () => {
        await b.raw.qmp.execute('qom-set', { path: 'vmem0', property: 'requested-size', value: 1024 * 1024 * 1024 });
        await waitFor(async () => (await b.rawAgent.memTotalKiB()) >= memRaw + 1000 * 1024);
        await b.raw.qmp.execute('qom-set', { path: 'vmem0', property: 'requested-size', value: 0 });
        await waitFor(async () => (await b.rawAgent.memTotalKiB()) <= memRaw);
      }),
  );
  return { 'resize memory +1 GiB and back': memory };
}

/** virtio-mem grow by 1 GiB and shrink back, each its own figure (each waits for the guest's MemTotal). */
async function memoryGrowShrinkFigures(b: Booted): Promise<Record<string, Comparison>> {
  const memLib = await b.libAgent.memTotalKiB();
  const memRaw = await b.rawAgent.memTotalKiB();
  const growLib: number[] = [];
  const shrinkLib: number[] = [];
  const growRaw: number[] = [];
  const shrinkRaw: number[] = [];
  const rawResize = (bytes: number) => b.raw.qmp.execute('qom-set', { path: 'vmem0', property: 'requested-size', value: bytes });
  await compare(
    ROUNDS,
    async () => {
      growLib.push(await timeIt(async () => {
        await b.lib.resizeMemory(256 + 1024);
        await waitFor(async () => (await b.libAgent.memTotalKiB()) >= memLib + 1000 * 1024);
      }));
      shrinkLib.push(await timeIt(async () => {
        await b.lib.resizeMemory(256);
        await waitFor(async () => (await b.libAgent.memTotalKiB()) <= memLib);
      }));
      return 0;
    },
    async () => {
      growRaw.push(await timeIt(async () => {
        await rawResize(1024 * 1024 * 1024);
        await waitFor(async () => (await b.rawAgent.memTotalKiB()) >= memRaw + 1000 * 1024);
      }));
      shrinkRaw.push(await timeIt(async () => {
        await rawResize(0);
        await waitFor(async () => (await b.rawAgent.memTotalKiB()) <= memRaw);
      }));
      return 0;
    },
  );
  return { 'resize memory +1 GiB (grow)': await pair(growLib, growRaw), 'resize memory -1 GiB (shrink)': await pair(shrinkLib, shrinkRaw) };
}

async function vcpuFigure(b: Booted): Promise<Record<string, Comparison>> {
  // Each round adds one more vCPU and none is removed: under TCG, QEMU 7.2 crashes on the next
  // device_add after a vCPU unplug, so removing them between rounds would end the run.
  let libCpus = 1;
  let rawCpus = 1;
  const vcpu = await compare(
    ROUNDS,
    () =>
      timeIt(async () => {
        libCpus += 1;
        await b.lib.resizeVCPUs(libCpus);
        await waitFor(async () => (await b.libAgent.onlineCpus()) === libCpus);
      }),
    () =>
      timeIt(async () => {
        rawCpus += 1;
        const q = b.raw.qmp;
        const slots = (await q.execute('query-hotpluggable-cpus')) as { type: string; 'qom-path'?: string; props: Record<string, number> }[];
        const free = slots.filter((s) => !s['qom-path']).sort((x, y) => (x.props['core-id'] ?? 0) - (y.props['core-id'] ?? 0))[0];
        if (!free) throw new Error('no free vCPU slot');
        await q.execute('device_add', { driver: free.type, id: `rawcpu${rawCpus}`, ...free.props });
        await waitFor(async () => (await b.rawAgent.onlineCpus()) === rawCpus);
      }),
  );
  return { 'resize +1 vCPU (online)': vcpu };
}

/**
 * CPU time this process's main thread has used, in ms (/proc's schedstat, in ns): what a storm
 * costs the event loop itself, which wall-clock figures on a shared machine only blur.
 */
function mainThreadCpuMs(): number {
  return Number(readFileSync(`/proc/self/task/${process.pid}/schedstat`, 'utf8').split(' ')[0]) / 1e6;
}

/** One start storm of SCALE_VMS paused VMs through the library, measured; all stopped after. */
async function libraryStorm(input: SandboxConfigInput): Promise<{ startMs: number; stopMs: number; heapPerVmKiB: number; delay: LoopDelay; cpuPerVmMs: number; leaked: number }> {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  const monitor = await startLoopDelayMonitor();
  const vms = Array.from({ length: SCALE_VMS }, () => benchHypervisor());
  const cpuBefore = mainThreadCpuMs();
  const started = performance.now();
  const settled = await Promise.allSettled(
    vms.map(async (vm) => {
      await vm.createVM(inBenchRuntime(input));
      await vm.startVM({ paused: true, timeoutMs: 120_000 });
    }),
  );
  const failures = settled.flatMap((result) => (result.status === 'rejected' ? [result.reason as unknown] : []));
  if (failures.length > 0) {
    // Stop the VMs that did start, so that a failed storm leaves no QEMU, directory or uid lease behind.
    await Promise.allSettled(vms.map((vm) => vm.stopVM()));
    throw new AggregateError(failures, `${failures.length} of ${SCALE_VMS} VMs of the storm failed to start, the first with: ${String((failures[0] as Error).message)}`);
  }
  const startMs = performance.now() - started;
  const cpuPerVmMs = (mainThreadCpuMs() - cpuBefore) / SCALE_VMS;
  const delay = monitor.stop();
  gc?.();
  const heapPerVmKiB = (process.memoryUsage().heapUsed - heapBefore) / SCALE_VMS / 1024;
  const pids = vms.flatMap((vm) => vm.getPids());
  const dirs = vms.map((vm) => vm.runtimeDir ?? '');
  const stopStarted = performance.now();
  await Promise.all(vms.map((vm) => vm.stopVM()));
  const stopMs = performance.now() - stopStarted;
  const leaked = pids.filter((pid) => isProcessAlive(pid)).length + dirs.filter((dir) => existsSync(dir)).length;
  return { startMs, stopMs, heapPerVmKiB, delay, cpuPerVmMs, leaked };
}

/** SCALE_VMS paused VMs from one Node process, library and raw storms alternated. */
export async function scaleFigure(bench: BenchArch): Promise<Record<string, number | boolean | string>> {
  const input = config(bench, { memory: { bootMiB: 128 }, cpus: { boot: 1 }, hotplug: { rootPorts: 0 } });
  const storms: Awaited<ReturnType<typeof libraryStorm>>[] = [];
  // The same measure during the raw storms: 50 QEMUs starting on 2 cores delay any process's timers.
  const rawDelays: LoopDelay[] = [];
  const rawCpuPerVm: number[] = [];
  const comparison = await compare(
    STORM_ROUNDS,
    async () => {
      const storm = await libraryStorm(input);
      storms.push(storm);
      return storm.startMs;
    },
    async () => {
      const monitor = await startLoopDelayMonitor();
      const cpuBefore = mainThreadCpuMs();
      const started = performance.now();
      const raws = await Promise.all(Array.from({ length: SCALE_VMS }, () => rawStart(input, false)));
      const ms = performance.now() - started;
      rawCpuPerVm.push((mainThreadCpuMs() - cpuBefore) / SCALE_VMS);
      rawDelays.push(monitor.stop());
      await Promise.all(raws.map((r) => rawStop(r)));
      return ms;
    },
  );
  return {
    vms: SCALE_VMS,
    rounds: STORM_ROUNDS,
    totalStartMs: round(comparison.libMs, 1),
    rawTotalStartMs: round(comparison.rawMs, 1),
    startRatio: comparison.ratio,
    totalStopMs: round(median(storms.map((s) => s.stopMs)), 1),
    heapPerVmKiB: round(median(storms.map((s) => s.heapPerVmKiB)), 1),
    heapMeasuredAfterGc: (globalThis as { gc?: () => void }).gc !== undefined,
    // Per tick (blind to one long stall) and corrected for coordinated omission (bench/stats.ts).
    eventLoopDelayP99Ms: round(median(storms.map((s) => s.delay.p99Ms)), 2),
    rawEventLoopDelayP99Ms: round(median(rawDelays.map((d) => d.p99Ms)), 2),
    eventLoopDelayCorrectedP99Ms: round(median(storms.map((s) => s.delay.correctedP99Ms)), 2),
    rawEventLoopDelayCorrectedP99Ms: round(median(rawDelays.map((d) => d.correctedP99Ms)), 2),
    eventLoopDelayMaxMs: round(median(storms.map((s) => s.delay.maxMs)), 2),
    rawEventLoopDelayMaxMs: round(median(rawDelays.map((d) => d.maxMs)), 2),
    delayRatio: round(median(storms.map((s) => s.delay.correctedP99Ms)) / median(rawDelays.map((d) => d.correctedP99Ms))),
    runtimeBase: benchRuntime().label,
    // The event loop's own CPU per VM started, library and raw: what both figures above come from.
    mainThreadCpuPerVmMs: round(median(storms.map((s) => s.cpuPerVmMs)), 2),
    rawMainThreadCpuPerVmMs: round(median(rawCpuPerVm), 2),
    leakedProcessesAndDirs: storms.reduce((sum, s) => sum + s.leaked, 0),
  };
}

/** The VM figures of one architecture (bench/arch.ts) on the QEMU under benchmark, written to bench/results/<name>.qemu-<version>.json and .svg. */
export async function runVm(bench: BenchArch): Promise<void> {
  const scratch = mkdtempSync('/tmp/svmm-bench-');
  // Root's; both VMs' QEMUs (each its own uid) traverse it to their own disk image.
  chmodSync(scratch, 0o711);
  const wants = (figures: (typeof bench.figures)[number]) => bench.figures.includes(figures);
  try {
    const { start, stop } = await startFigure(bench);
    const boot = await bootFigure(bench);
    const booted = await bootPair(bench);
    const hotplug: Record<string, Comparison> = {};
    try {
      Object.assign(hotplug, await blockFigures(booted, scratch));
      if (wants('nic')) Object.assign(hotplug, await nicFigures(booted));
      if (wants('memory-round-trip')) Object.assign(hotplug, await memoryRoundTripFigure(booted));
      if (wants('memory-grow-shrink')) Object.assign(hotplug, await memoryGrowShrinkFigures(booted));
      if (archProfile(bench.arch).cpuHotplug) Object.assign(hotplug, await vcpuFigure(booted));
    } finally {
      await booted.libAgent.close();
      await booted.rawAgent.close();
      await booted.lib.stopVM();
      await rawStop(booted.raw);
    }
    const figures: Record<string, Comparison> = {
      'start (paused, QMP ready)': start,
      'boot (agent answers)': boot,
      ...hotplug,
      'stop (reaped, dir removed)': stop,
    };
    const label = benchQemuLabel();
    const machine = `${archProfile(bench.arch).machineType} (${bench.arch}), QEMU ${label}`;
    printComparisons(`QEMU backend vs raw baseline on ${machine} (medians of ${FAST_ROUNDS} alternated rounds for start, stop and hotplug, ${ROUNDS} for the others)`, figures);
    const scale = wants('scale') ? await scaleFigure(bench) : undefined;
    if (scale) console.log('\nscale:', scale);
    const path = writeResult(bench.name, label, { arch: bench.arch, rounds: ROUNDS, fastRounds: FAST_ROUNDS, figures, ...(scale ? { scale } : {}) });
    const svg = join(path, '..', `${bench.name}.qemu-${label}.svg`);
    writeFileSync(svg, barChart(`sandbox-vmm vs raw QEMU scripting, ${machine} (median ms; blue = library, grey = raw)`, figures));
    console.log(`\nwrote ${path} and ${svg}`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
    if (rawBaseDir) rmSync(rawBaseDir, { recursive: true, force: true });
    rawBaseDir = undefined;
    benchRuntimeCleanup();
  }
}

/** x86_64's figures (q35); bench/vm-arm64.bench.ts runs aarch64's. */
export function run(): Promise<void> {
  return runVm(BENCH_ARCHES.x86_64);
}
