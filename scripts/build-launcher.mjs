#!/usr/bin/env node
// Builds the native helpers from native/: build/svmm-launch (the exec helper QEMU is started
// through), build/svmm-sendfd (sends an fd to QEMU's QMP socket, which Node cannot) and
// build/svmm-memfd (a sealed in-memory copy of a template's RAM, for QEMUs before 8.2).
// Run by npm as the package's "install" script and by scripts/bootstrap.mjs. Plain Node with no
// dependencies, because node_modules may not exist yet.
//   --require  fail (exit 1) when no C compiler is found; by default that only prints a hint, so
//              that an `npm install` never fails for want of a compiler.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const PROGRAMS = ['svmm-launch', 'svmm-sendfd', 'svmm-memfd'];
const args = process.argv.slice(2);
const required = args.includes('--require');
// Warnings fail our own builds (bootstrap, CI), never a user's install with a newer compiler.
const flags = ['-O2', '-Wall', '-Wextra', ...(required ? ['-Werror'] : []), '-std=gnu11'];

function say(message) {
  process.stderr.write(`[build-launcher] ${message}\n`);
}

if (args.some((arg) => arg !== '--require')) {
  say(`unknown argument: ${args.join(' ')} (only --require is accepted)`);
  process.exit(2);
}

// A program is rebuilt when it or a header of native/ (shared by the programs) is newer than it.
const headers = readdirSync(join(root, 'native')).filter((name) => name.endsWith('.h')).map((name) => join(root, 'native', name));
const stale = PROGRAMS.map((name) => ({ source: join(root, 'native', `${name}.c`), output: join(root, 'build', name) })).filter(
  ({ source, output }) => !existsSync(output) || [source, ...headers].some((input) => statSync(output).mtimeMs <= statSync(input).mtimeMs),
);
if (stale.length === 0) process.exit(0);

// The first compiler that runs at all; ENOENT means it is not installed.
const compiler = ['cc', 'gcc'].find((name) => !spawnSync(name, ['--version'], { stdio: 'ignore' }).error);
if (!compiler) {
  say(`no C compiler (cc or gcc) to build ${stale.map((p) => p.output).join(' and ')}: install one with 'apt-get install gcc libc6-dev', then run 'npm rebuild sandbox-vmm' (in a clone: 'node scripts/build-launcher.mjs')`);
  process.exit(required ? 1 : 0);
}

for (const { source, output } of stale) {
  // Compile next to the target and rename, so that a half-written binary is never taken as built.
  mkdirSync(dirname(output), { recursive: true });
  const partial = `${output}.${process.pid}.tmp`;
  const result = spawnSync(compiler, [...flags, '-o', partial, source], { stdio: 'inherit' });
  if (result.error || result.status !== 0) {
    rmSync(partial, { force: true });
    say(`${compiler} failed to compile ${source}${result.error ? `: ${result.error.message}` : ''}`);
    process.exit(1);
  }
  chmodSync(partial, 0o755);
  renameSync(partial, output);
  say(`built ${output}`);
}
