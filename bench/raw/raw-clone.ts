// The raw baseline of a template clone: what a script restoring a template by hand does, with plain
// QEMU and a minimal QMP exchange. Of the library it uses only the pure functions that compute the
// command line and the launch spec, as data (as bench/vm.bench.ts's raw baseline does), so both
// sides start QEMU the same way: through svmm-launch, as a uid of its own, capabilities dropped.
// Then: the template's argv with -incoming defer, x-ignore-shared, migrate-incoming from the state
// file (an fd it inherited at spawn), wait for completion, and `cont` unless asked for a paused VM.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, mkdirSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseSandboxConfig, type SandboxConfigInput } from '../../src/hypervisor/config/index.ts';
import { buildQemuArgv } from '../../src/qemu/argv/index.ts';
import { resolveBinary } from '../../src/qemu/binaries.ts';
import { BOOT_MEMORY_ID } from '../../src/qemu/devices/memory.ts';
import { identityOfLease } from '../../src/qemu/identity/identity.ts';
import { qemuLaunchSpec } from '../../src/qemu/launch/launch.ts';
import { findLauncher, launcherArgs, launcherStdio } from '../../src/qemu/launch/launcher.ts';
import { runtimePaths } from '../../src/qemu/runtime-paths.ts';
import { templateArgv } from '../../src/qemu/template/argv.ts';
import { STATE_FILE } from '../../src/qemu/template/manifest.ts';
import { atLeast } from '../../src/qemu/template/qemu-version.ts';
import { cloneRamMode, inheritSealedRam, TEMPLATE_RAM_FILE, templateRamProps } from '../../src/qemu/template/ram.ts';
import { leaseSealedRam, type SealedRamLease } from '../../src/qemu/template/sealed-ram.ts';
import { inheritStateFd } from '../../src/qemu/template/state-channel.ts';
import { RawQmp } from './raw-qmp.ts';
import { benchRuntime } from '../runtime-base.ts';

/**
 * Each raw clone's QEMU gets a uid of its own, as the library's do, but a fixed one (no lease: a
 * script given a uid per VM would not take one). Below the base bench/vm.bench.ts's raw VMs use,
 * above what the library's leases reach here.
 */
const RAW_UID_BASE = 1_900_064_000;
const RAW_UIDS = 500;

export interface RawClone {
  dir: string;
  child: ChildProcess;
  exited: Promise<void>;
  qmp: RawQmp;
  /** The guest agent's channel socket. */
  agentSocket: string;
  /** The sealed copy of the template's RAM this clone holds (QEMU before 8.2). */
  sealed: SealedRamLease | undefined;
}

let counter = 0;
let baseDir: string | undefined;

function base(): string {
  if (baseDir === undefined) {
    baseDir = mkdtempSync(join(benchRuntime().rawParent, 'svmm-raw-clone-'));
    // Traversable by the unprivileged QEMUs, as the library makes its runtime base.
    chmodSync(baseDir, 0o711);
  }
  return baseDir;
}

/**
 * Starts a clone of the template in `templateDir`, made by QEMU `version` from `input`: returns once
 * the state is restored (and the guest runs, unless `paused`).
 */
export async function rawCloneStart(input: SandboxConfigInput, templateDir: string, version: string, paused = false): Promise<RawClone> {
  const index = counter++;
  const dir = join(base(), String(index));
  const config = parseSandboxConfig({ ...input, runtime: { ...input.runtime, dir } });
  const identity = identityOfLease(RAW_UID_BASE + (index % RAW_UIDS), config.machine.accel);
  mkdirSync(dir, { mode: 0o710 });
  chownSync(dir, 0, identity.gid);
  const paths = runtimePaths(dir);
  // QEMU before 8.2 opens a memory-backend-file read-write whatever the mapping: the clones running
  // at a time map one sealed copy privately (src/qemu/template/ram.ts), as a script running QEMU
  // unprivileged must; it inherits the copy at the first free fd.
  const mode = cloneRamMode(version);
  const sealed = mode === 'map-sealed' ? await leaseSealedRam(join(templateDir, TEMPLATE_RAM_FILE), BOOT_MEMORY_ID) : undefined;
  const bytes = config.memory.bootMiB * 1024 * 1024;
  const built = buildQemuArgv({ ...config, memory: { ...config.memory, prealloc: false } }, paths);
  const withRam = sealed ? inheritSealedRam(built, sealed.fd) : { argv: built, ramPath: join(templateDir, TEMPLATE_RAM_FILE) };
  const argv = templateArgv(withRam.argv, templateRamProps(BOOT_MEMORY_ID, bytes, withRam.ramPath, mode, false), { incoming: true });
  // The state at the next free fd; QEMU with a file migration address (8.2) reads it as an fd set,
  // older ones as a plain fd (fd: to a file is deprecated since 9.1). A script knows its QEMU's
  // version: no schema probe.
  const stateFd = openSync(join(templateDir, STATE_FILE), 'r');
  const { argv: withState, state } = inheritStateFd(argv, stateFd, atLeast(version, 8, 2) ? 'file-fdset' : 'named-fd');
  const uri = state.uri;
  const plan = {
    config,
    paths,
    argv: withState,
    qemuPath: resolveBinary(config.runtime.qemuPath, 'runtime.qemuPath'),
    virtiofsdPath: undefined,
    launcherPath: findLauncher(),
  };
  const spec = qemuLaunchSpec(plan, identity);
  let child: ChildProcess;
  try {
    child = spawn(plan.launcherPath, launcherArgs(spec), { stdio: launcherStdio(spec, 'pipe'), env: {} });
  } finally {
    closeSync(stateFd);
  }
  child.stderr?.resume();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const qmp = await RawQmp.connect(join(dir, 'qmp.sock'));
  await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
  await qmp.execute('migrate-incoming', { uri });
  for (;;) {
    const { status } = (await qmp.execute('query-migrate')) as { status?: string };
    if (status === 'completed') break;
    if (status === 'failed' || status === 'cancelled') throw new Error(`raw clone: restoring failed (${status})`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  if (!paused) await qmp.execute('cont');
  return { dir, child, exited, qmp, agentSocket: paths.channelSocket('agent'), sealed };
}

export async function rawCloneStop(vm: RawClone): Promise<void> {
  await vm.qmp.execute('quit').catch(() => {});
  await vm.exited;
  vm.qmp.close();
  await vm.sealed?.release();
  rmSync(vm.dir, { recursive: true, force: true });
}

/** Removes the raw clones' base directory (each clone's own is removed when it stops). */
export function rawCloneCleanup(): void {
  if (baseDir) rmSync(baseDir, { recursive: true, force: true });
  baseDir = undefined;
}
