// `npm run demo`: boots the default guest through the library, proves from inside the guest that
// it runs and changes, and prints each step with its time. It leaves nothing behind.
// `npm run demo -- --arch aarch64` does the same with the arm64 guest on QEMU's virt machine, where
// vCPU hotplug is refused (UNSUPPORTED) instead of done.
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { ARCHITECTURES, archProfile, QemuHypervisor, UnsupportedOperationError, type Architecture } from '../src/index.ts';
import { runtimePaths } from '../src/qemu/runtime-paths.ts';
import { isProcessAlive } from '../src/qemu/process/proc-fs.ts';
import { GuestAgent, guestAssets, type GuestAssets } from '../test/guest/index.ts';

// KVM is the library's default; this machine's KVM hangs guests at boot, so the demo uses TCG
// unless told otherwise (SANDBOX_VMM_ACCEL=kvm).
const accel = process.env['SANDBOX_VMM_ACCEL'] === 'kvm' ? 'kvm' : 'tcg';
const logger = pino({ level: process.env['LOG_LEVEL'] ?? 'silent' });
const arch = parseArch(process.argv.slice(2));
const profile = archProfile(arch);

/** `--arch x86_64|aarch64` (default x86_64); anything else ends the demo with its usage. */
function parseArch(argv: string[]): Architecture {
  if (argv.length === 0) return 'x86_64';
  const value = argv[0] === '--arch' ? argv[1] : argv[0]?.startsWith('--arch=') ? argv[0].slice('--arch='.length) : undefined;
  const known = ARCHITECTURES.find((a) => a === value);
  if (known === undefined || argv.length > (argv[0] === '--arch' ? 2 : 1)) {
    console.error(`usage: npm run demo [-- --arch ${ARCHITECTURES.join('|')}]`);
    process.exit(2);
  }
  return known;
}

/**
 * The test guest of `arch`, as test/guest/build.sh <arch> builds it (into .cache/guest/<arch>/).
 * x86_64 is the default guest.
 */
function demoGuest(): GuestAssets {
  if (arch === 'x86_64') return guestAssets();
  const manifest = join(import.meta.dirname, '..', '.cache', 'guest', arch, 'current.json');
  if (!existsSync(manifest)) throw new Error(`the ${arch} test guest is not built (${manifest} is missing): run \`bash test/guest/build.sh ${arch}\``);
  return JSON.parse(readFileSync(manifest, 'utf8')) as GuestAssets;
}

interface Step {
  step: string;
  ms: number;
  result: string;
}
const steps: Step[] = [];

async function timed<T>(step: string, fn: () => Promise<T>, describe: (value: T) => string): Promise<T> {
  const started = performance.now();
  const value = await fn();
  steps.push({ step, ms: performance.now() - started, result: describe(value) });
  process.stderr.write(`  ✓ ${step}\n`);
  return value;
}

function printTable(): void {
  const width = Math.max(...steps.map((s) => s.step.length));
  console.log(`\n${'step'.padEnd(width)}  ${'time'.padStart(9)}  result`);
  console.log(`${'-'.repeat(width)}  ${'-'.repeat(9)}  ${'-'.repeat(40)}`);
  for (const s of steps) console.log(`${s.step.padEnd(width)}  ${`${s.ms.toFixed(1)} ms`.padStart(9)}  ${s.result}`);
}

async function main(): Promise<void> {
  const guest = demoGuest();
  const scratch = mkdtempSync('/tmp/svmm-demo-');
  const vm = new QemuHypervisor({ logger });
  let agent: GuestAgent | undefined;
  let pid: number | undefined;
  try {
    // A disk to hot-plug later: written now, given to the VM's own user once createVM has leased it.
    chmodSync(scratch, 0o755);
    const disk = join(scratch, 'data.img');
    writeFileSync(disk, Buffer.concat([Buffer.from('hello from the host\n'), Buffer.alloc(8 * 1024 * 1024 - 20)]), { mode: 0o600 });

    await timed(
      'createVM',
      () =>
        vm.createVM({
          machine: { arch, accel },
          boot: { kernel: guest.kernel, initrd: guest.initrd, kernelParams: guest.kernelParams },
          // A second vCPU to add where the machine can hot-plug one (not on aarch64's virt).
          cpus: { boot: 1, max: profile.cpuHotplug ? 2 : 1 },
          memory: { bootMiB: 256, maxMiB: 768, hotplug: 'virtio-mem' },
          // Removing a vCPU under tcg leaves QEMU 7.2 unable to add or remove devices afterwards; the
          // demo removes one only as its last change, so it opts in (KVM needs no such switch).
          hotplug: { rootPorts: 2, tcgVcpuUnplug: accel === 'tcg' && profile.cpuHotplug },
          devices: [{ type: 'channel', id: 'agent', name: 'agent.0' }],
        }),
      () => `${arch} on ${vm.config?.machine.type ?? '?'}, id ${vm.id ?? '?'}, runtime dir ${vm.runtimeDir ?? '?'}`,
    );
    const id = vm.id ?? '';
    const identity = vm.identity;
    // As a runtime does: QEMU's user is known from createVM on; it gets the files it may open.
    // (Without root, QEMU runs as this process's user, who owns the disk already.)
    await timed(
      'give the disk to QEMU\'s user',
      () => {
        if (identity) chownSync(disk, identity.uid, identity.gid);
        return Promise.resolve();
      },
      () => (identity ? `QEMU runs as uid ${identity.uid}, gid ${identity.gid} (leased for this VM)` : 'QEMU runs as this process\'s user'),
    );
    await timed('startVM (QEMU up, QMP negotiated)', () => vm.startVM({ timeoutMs: 30_000 }), () => {
      pid = vm.getPids()[0];
      return `state ${vm.state}, QEMU pid ${pid ?? '?'}`;
    });
    const dir = vm.runtimeDir ?? '';
    agent = await timed(
      'guest boot (agent answers)',
      () => GuestAgent.connect(runtimePaths(dir).channelSocket('agent'), { timeoutMs: 60_000 }),
      () => `kernel ${guest.kernelVersion}`,
    );
    const a = agent;
    await timed('run a command in the guest', () => a.runOk('uname -srm; cat /proc/cpuinfo | grep -c ^processor'), (out) =>
      out.trim().replace(/\n/g, ', ') + ' vCPU',
    );
    await timed('getThreadIds', () => vm.getThreadIds(), (ids) => [...ids].map(([cpu, tid]) => `vCPU${cpu}→tid ${tid}`).join(', '));
    await timed('pauseVM', () => vm.pauseVM(), () => `state ${vm.state}`);
    await timed('resumeVM', () => vm.resumeVM(), () => `state ${vm.state}`);
    await timed('guest still answers', () => a.runOk('echo alive'), (out) => out.trim());
    await timed('hot-add a virtio-blk disk', () => vm.hotplugAddDevice({ type: 'block', id: 'data', path: disk, readOnly: true }), (r) => `on ${r.bus}`);
    await timed('guest reads the disk', () => waitFor(() => a.runOk('head -c 19 /dev/vda')), (out) => `/dev/vda starts with ${JSON.stringify(out)}`);
    await timed('remove the disk', () => vm.hotplugRemoveDevice('data'), () => 'DEVICE_DELETED received');
    await timed('guest no longer has it', () => a.runOk('ls /sys/block'), (out) => `block devices: ${out.trim() || '(none)'}`);
    const memBefore = await a.memTotalKiB();
    await timed('resizeMemory 256 → 768 MiB', () => vm.resizeMemory(768), (r) => `${r.previousMiB} → ${r.currentMiB} MiB (virtio-mem)`);
    // The guest onlines the plugged blocks one by one after resizeMemory returns: wait until it has
    // (about) all of them, as the conformance suite does (90 % of the 512 MiB).
    const memTotalReaching = (target: (kib: number) => boolean) =>
      waitFor(async () => {
        const kib = await a.memTotalKiB();
        if (!target(kib)) throw new Error(`MemTotal ${Math.round(kib / 1024)} MiB`);
        return kib;
      });
    await timed('guest MemTotal', () => memTotalReaching((kib) => kib - memBefore >= 0.9 * 512 * 1024), (kib) => `${Math.round(memBefore / 1024)} → ${Math.round(kib / 1024)} MiB (+${Math.round((kib - memBefore) / 1024)})`);
    await timed('resizeMemory back to 256 MiB', () => vm.resizeMemory(256), (r) => `${r.previousMiB} → ${r.currentMiB} MiB`);
    await timed('guest MemTotal', () => memTotalReaching((kib) => kib <= memBefore), (kib) => `${Math.round(kib / 1024)} MiB`);
    if (vm.capabilities().cpuHotplug) {
      await timed('resizeVCPUs 1 → 2', () => vm.resizeVCPUs(2), (r) => `${r.previous} → ${r.current}`);
      await timed('guest online CPUs', () => waitFor(async () => {
        const n = await a.onlineCpus();
        if (n !== 2) throw new Error(`${n} online`);
        return n;
      }), (n) => `${n}`);
      await timed('resizeVCPUs 2 → 1', () => vm.resizeVCPUs(1), (r) => `${r.previous} → ${r.current} (the guest released the vCPU)`);
    } else {
      await timed('resizeVCPUs 1 → 2 is refused', () => refusal(vm.resizeVCPUs(2)), (e) => `${e.code}: ${e.message}`);
    }
    await timed('guest online CPUs', () => a.onlineCpus(), (n) => `${n}`);
    await timed('check (health)', () => vm.check(), () => 'healthy');
    await agent.close();
    agent = undefined;
    await timed('stopVM', () => vm.stopVM(), () => `state ${vm.state}`);
    await timed('nothing left behind', () => {
      const leftovers: string[] = [];
      if (pid !== undefined && isProcessAlive(pid)) leftovers.push(`QEMU ${pid} alive`);
      if (existsSync(dir)) leftovers.push(`${dir} exists`);
      const leases = leasesOf(id, dir);
      if (leases.length > 0) leftovers.push(`uid lease ${leases.join(', ')} still held`);
      if (leftovers.length > 0) return Promise.reject(new Error(leftovers.join(', ')));
      return Promise.resolve(identity ? `no QEMU process, no runtime directory, uid ${identity.uid} released` : 'no QEMU process, no runtime directory');
    }, (s) => s);
    printTable();
  } finally {
    await agent?.close();
    await vm.stopVM();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The uid lease files naming VM `id`, in the lease directory next to its runtime directory. */
function leasesOf(id: string, runtimeDir: string): string[] {
  const leaseDir = join(runtimeDir, '..', '.leases');
  let names: string[];
  try {
    names = readdirSync(leaseDir);
  } catch {
    return [];
  }
  return names.filter((name) => {
    try {
      return (JSON.parse(readFileSync(join(leaseDir, name), 'utf8')) as { vmId?: unknown }).vmId === id;
    } catch {
      return false;
    }
  });
}

/** The UnsupportedOperationError `promise` must reject with. */
async function refusal(promise: Promise<unknown>): Promise<UnsupportedOperationError> {
  const outcome = await promise.then(() => undefined, (error: unknown) => error);
  if (outcome instanceof UnsupportedOperationError) return outcome;
  throw new Error(`expected an UnsupportedOperationError, got ${String(outcome)}`);
}

/** Retries `fn` until it succeeds (the guest reacts to hotplug asynchronously). */
async function waitFor<T>(fn: () => Promise<T>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      return await fn();
    } catch (error) {
      if (Date.now() > deadline) throw error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
}

main().catch((error: unknown) => {
  printTable();
  console.error('\ndemo failed:', error);
  process.exit(1);
});
