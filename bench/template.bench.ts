// `npm run bench -- template`: a clone restored from a template against a cold boot of the same
// config, in the same run, alternated: start-to-agent (createVM → startVM → the agent answers) and
// the proportional memory (PSS, /proc/<pid>/smaps_rollup) of N running clones against N cold-booted
// VMs. Figures are medians; ratio = clone / cold. The QEMU is SANDBOX_VMM_QEMU (default 7.2), which
// decides how clones map the template's RAM (see src/qemu/template/ram.ts).
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { SandboxConfigInput } from '../src/hypervisor/config/index.ts';
import { QemuHypervisor } from '../src/qemu/qemu-hypervisor.ts';
import { runtimePaths } from '../src/qemu/runtime-paths.ts';
import { cloneRamMode } from '../src/qemu/template/ram.ts';
import { GuestAgent, guestAssets } from '../test/guest/index.ts';
import { compare, median, round, timeIt, writeResult } from './stats.ts';
import { benchQemuLabel } from './qemu.ts';

const ROUNDS = Number(process.env['BENCH_ROUNDS'] ?? 5);
const PSS_VMS = Number(process.env['BENCH_PSS_VMS'] ?? 10);
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
  const vm = new QemuHypervisor();
  await vm.createVM(config(nextId(template ? 'clone' : 'cold')), template ? { fromTemplate: template } : {});
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
  const vm = new QemuHypervisor();
  await vm.createVM(config(nextId('settle')), { fromTemplate: template });
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

export async function run(): Promise<void> {
  const base = mkdtempSync('/dev/shm/svmm-bench-');
  chmodSync(base, 0o755);
  try {
    const dir = join(base, 'template');
    const maker = new QemuHypervisor();
    const madeMs = await timeIt(async () => {
      await maker.createVM(config(nextId('template')), { templateDir: dir });
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
    const clonePss = await pssOf(PSS_VMS, dir);
    const coldPss = await pssOf(PSS_VMS);
    const pssRatio = round(clonePss / coldPss);
    console.log(`PSS of ${PSS_VMS} running: clone ${clonePss.toFixed(1)} MiB, cold ${coldPss.toFixed(1)} MiB, ratio ${pssRatio} (target <= 0.3)`);
    const path = writeResult('template', benchQemuLabel(), {
      qemu: info.hypervisorVersion,
      cloneRam: cloneRamMode(info.hypervisorVersion),
      templateBootMs: round(madeMs, 1),
      stateBytes: info.stateBytes,
      startToAgent: { cloneMs: start.libMs, coldMs: start.rawMs, ratio: start.ratio, rounds: start.rounds },
      agentAfterResume: settle,
      pss: { vms: PSS_VMS, cloneMiB: round(clonePss, 1), coldMiB: round(coldPss, 1), ratio: pssRatio },
    });
    console.log(`wrote ${path}`);
  } finally {
    rmSync(base, { recursive: true, force: true });
  }
}
