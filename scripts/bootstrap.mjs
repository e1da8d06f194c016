#!/usr/bin/env node
// Entry point of `npm test`, `npm run demo` and `npm run bench`: installs what a fresh clone on a
// fresh machine lacks (npm dependencies, QEMU, a C compiler, the x86-64 and arm64 guest images, the
// side-by-side QEMUs of the version matrix), builds the launcher QEMU is started through
// (build/svmm-launch), then runs the real command.
// Plain Node with no dependencies, because node_modules may not exist yet.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureSideBySideQemus } from './qemu-side-by-side.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const [task, ...rest] = process.argv.slice(2);
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
// Debian packages the tests and the demo need: QEMU itself (x86-64, and aarch64 for the arm64
// guest), what builds the guest, and a C compiler for the launcher (native/svmm-launch.c). The
// arm64 guest's own kernel and busybox are not installed: test/guest/build.sh aarch64 fetches them
// into .cache/arm64 with a private apt setup (scripts/arm64-guest-pieces.mjs).
const debianPackages = ['qemu-system-x86', 'qemu-system-arm', 'qemu-utils', 'busybox-static', 'cpio', 'util-linux', 'iproute2', 'gcc', 'libc6-dev'];

function say(message) {
  process.stderr.write(`[bootstrap] ${message}\n`);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit', ...options });
  if (result.error) throw result.error;
  return result.status ?? 1;
}

function onPath(command) {
  return spawnSync('sh', ['-c', `command -v ${command}`], { stdio: 'ignore' }).status === 0;
}

function ensureNodeModules() {
  if (existsSync(join(root, 'node_modules', '.bin', 'vitest'))) return;
  const hasLock = existsSync(join(root, 'package-lock.json'));
  say(`node_modules is missing: running npm ${hasLock ? 'ci' : 'install'}`);
  if (run('npm', [hasLock ? 'ci' : 'install', '--no-audit', '--no-fund']) !== 0) {
    throw new Error('npm could not install the dependencies');
  }
}

function ensureDebianPackages() {
  const missing = [];
  if (!onPath('qemu-system-x86_64')) missing.push('qemu-system-x86');
  if (!onPath('qemu-system-aarch64')) missing.push('qemu-system-arm');
  if (!onPath('qemu-img')) missing.push('qemu-utils');
  if (!existsSync('/bin/busybox') && !existsSync('/usr/bin/busybox')) missing.push('busybox-static');
  if (!onPath('cpio')) missing.push('cpio');
  if (!onPath('setpriv') || !onPath('flock')) missing.push('util-linux');
  if (!onPath('ip')) missing.push('iproute2');
  if (!onPath('cc')) missing.push('gcc', 'libc6-dev');
  if (missing.length === 0) return;
  const command = `apt-get update && apt-get install -y --no-install-recommends ${debianPackages.join(' ')}`;
  if (!isRoot) {
    say(`missing Debian packages: ${missing.join(', ')}. Install them with:\n  sudo sh -c '${command}'`);
    process.exit(1);
  }
  say(`installing Debian packages: ${missing.join(', ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  if (run('sh', ['-c', command], { env }) !== 0) throw new Error(`apt-get could not install ${missing.join(', ')}`);
}

/** Compiles build/svmm-launch unless it is newer than its source; without a compiler, fails. */
function ensureLauncher() {
  if (run(process.execPath, [join(root, 'scripts', 'build-launcher.mjs'), '--require']) !== 0) {
    throw new Error('building the launcher failed (scripts/build-launcher.mjs)');
  }
}

/**
 * An unprivileged QEMU attaches to a tap it owns through /dev/net/tun, which Debian's udev makes
 * 0666; some machines ship it 0600 (root only). Opening it grants nothing by itself: creating or
 * configuring a tap still needs CAP_NET_ADMIN.
 */
function ensureTunAccess() {
  const tun = '/dev/net/tun';
  if (!isRoot || !existsSync(tun)) return;
  const mode = statSync(tun).mode & 0o777;
  if (mode === 0o666) return;
  say(`${tun} is mode ${mode.toString(8)}: setting Debian's default 0666 so that QEMU, running unprivileged, can open its taps`);
  chmodSync(tun, 0o666);
}

/** The architectures the test guest is built for (test/guest/build.sh takes one as its argument). */
const guestArchitectures = ['x86_64', 'aarch64'];

function ensureGuest() {
  for (const arch of guestArchitectures) {
    if (run('bash', [join(root, 'test', 'guest', 'build.sh'), arch]) !== 0) {
      throw new Error(`building the ${arch} guest image failed (test/guest/build.sh ${arch}; its message is above)`);
    }
  }
}

/**
 * The QEMU versions of the matrix (scripts/qemu-versions.mjs) beside the system one, unless
 * SANDBOX_VMM_QEMU names the one QEMU to run against. Installing needs root (the binaries must be
 * root's, as the library runs them for a VM's unprivileged uid).
 */
function ensureQemuMatrix() {
  if (process.env.SANDBOX_VMM_QEMU) return;
  ensureSideBySideQemus(root, say);
}

const bin = (name) => join(root, 'node_modules', '.bin', name);

try {
  ensureNodeModules();
  ensureDebianPackages();
  ensureLauncher();
  switch (task) {
    case 'test':
      ensureTunAccess();
      ensureGuest();
      ensureQemuMatrix();
      process.exit(run(bin('vitest'), ['run', ...rest]));
      break;
    case 'demo':
      ensureGuest();
      process.exit(run(bin('tsx'), [join(root, 'demo', 'main.ts'), ...rest]));
      break;
    case 'bench':
      ensureTunAccess();
      ensureGuest();
      ensureQemuMatrix();
      // --expose-gc: the scale benchmark measures heap per VM after a collection.
      process.exit(run(process.execPath, ['--expose-gc', '--import', 'tsx', join(root, 'bench', 'run.ts'), ...rest]));
      break;
    case 'deps':
      ensureGuest();
      ensureQemuMatrix();
      break;
    case 'qemu':
      ensureQemuMatrix();
      break;
    default:
      say(`unknown task '${task ?? ''}': use test, demo, bench, deps or qemu`);
      process.exit(2);
  }
} catch (error) {
  say(error instanceof Error ? error.message : String(error));
  process.exit(1);
}
