#!/usr/bin/env node
// Fetches what the arm64 test guest is built from (Debian 12's arm64 cloud kernel and
// busybox-static:arm64) into .cache/arm64/<pin key>/ and prints that directory.
//
// The host's apt is never reconfigured (no `dpkg --add-architecture`): apt runs with a private
// sources list, package lists, cache and an empty dpkg status, all under .cache/arm64/apt, and the
// packages are only unpacked (dpkg-deb -x), never installed. .cache is shared by every worktree of
// a clone: the tree is assembled in a directory of its own, its stamp written last, then renamed
// into place, so a present stamp means a complete install and a second run returns at once.
// Plain Node with no dependencies: `test/guest/build.sh aarch64` runs it (and so `npm test`, whose
// scripts/bootstrap.mjs builds both guests).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const cache = join(root, '.cache', 'arm64');

/**
 * The pins. bookworm-security keeps only the newest kernel of each ABI: when a new one lands the
 * pinned version disappears from the archive, and this script says so. Then set the version (and
 * the ABI in the name) to what `apt-cache policy linux-image-cloud-arm64` names in this apt setup.
 */
export const ARM64_GUEST_PACKAGES = {
  kernel: { name: 'linux-image-6.1.0-57-cloud-arm64', version: '6.1.192-3' },
  busybox: { name: 'busybox-static', version: '1:1.35.0-4+deb12u1+b1' },
};

const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';
const SOURCES = [
  'http://deb.debian.org/debian bookworm main',
  'http://deb.debian.org/debian bookworm-updates main',
  'http://deb.debian.org/debian-security bookworm-security main',
];

/** The directory of this pin set: both names and versions, so that a new pin is a new directory. */
export function arm64PiecesDir() {
  const { kernel, busybox } = ARM64_GUEST_PACKAGES;
  const key = `${kernel.name}_${kernel.version}_${busybox.name}_${busybox.version}`.replace(/[^A-Za-z0-9._+-]/g, '_');
  return join(cache, key);
}

const STAMP = 'pieces.json';

class FetchError extends Error {}

function aptOptions(apt) {
  return [
    '-q',
    '-o', 'APT::Architecture=arm64',
    '-o', 'APT::Architectures=arm64',
    '-o', 'Dir::State::status=/dev/null',
    '-o', `Dir::Etc::sourcelist=${join(apt, 'sources.list')}`,
    // An empty directory of our own rather than a missing one: apt warns about a missing one.
    '-o', `Dir::Etc::sourceparts=${join(apt, 'empty')}`,
    '-o', `Dir::Etc::preferencesparts=${join(apt, 'empty')}`,
    '-o', `Dir::Etc::preferences=${join(apt, 'empty', 'preferences')}`,
    '-o', `Dir::State::lists=${join(apt, 'lists')}`,
    '-o', `Dir::Cache=${join(apt, 'cache')}`,
    // A failed index download is an error, not a warning with stale or no lists.
    '-o', 'APT::Update::Error-Mode=any',
  ];
}

/** Runs a command under the apt setup's lock (two worktrees may bootstrap at once); returns its output. */
function runLocked(apt, command, args, cwd) {
  const result = spawnSync('flock', [join(apt, 'lock'), command, ...args], { cwd, encoding: 'utf8' });
  if (result.error) throw new FetchError(`cannot run ${command}: ${result.error.message}`);
  // apt's errors (E:, Err: and their indented details), without its progress lines.
  const output = `${result.stdout}${result.stderr}`
    .split('\n')
    .filter((line) => /^(E:|Err:| {2})/.test(line))
    .join('\n');
  return { ok: result.status === 0, output };
}

function prepareApt() {
  const apt = join(cache, 'apt');
  for (const dir of ['empty', 'lists/partial', 'cache/archives/partial']) mkdirSync(join(apt, dir), { recursive: true });
  const list = SOURCES.map((source) => `deb [arch=arm64 signed-by=${KEYRING}] ${source}`).join('\n');
  writeFileSync(join(apt, 'sources.list'), `${list}\n`);
  return apt;
}

function download(apt, into) {
  const update = runLocked(apt, 'apt-get', [...aptOptions(apt), 'update'], into);
  if (!update.ok) {
    throw new FetchError(
      `cannot download the Debian 12 arm64 package lists from ${[...new Set(SOURCES.map((s) => new URL(s.split(' ')[0] ?? '').host))].join(', ')}; ` +
        `is the network reachable?\napt-get update said:\n${update.output}`,
    );
  }
  const wanted = Object.values(ARM64_GUEST_PACKAGES).map(({ name, version }) => `${name}=${version}`);
  const fetched = runLocked(apt, 'apt-get', [...aptOptions(apt), 'download', ...wanted], into);
  if (!fetched.ok) {
    const gone = /was not found|Unable to locate package/.test(fetched.output);
    throw new FetchError(
      gone
        ? `a pinned arm64 package is not in the archive any more (${wanted.join(', ')}): update ARM64_GUEST_PACKAGES ` +
            `in scripts/arm64-guest-pieces.mjs.\napt-get download said:\n${fetched.output}`
        : `cannot download ${wanted.join(', ')}; is the network reachable?\napt-get download said:\n${fetched.output}`,
    );
  }
}

function unpack(deb, into) {
  const result = spawnSync('dpkg-deb', ['-x', deb, into], { encoding: 'utf8' });
  if (result.status !== 0) throw new FetchError(`dpkg-deb -x ${deb} failed: ${result.stderr || result.error?.message}`);
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code === 'EPERM';
  }
}

/** Installs the pinned pieces unless their stamp is there; returns their directory. */
export function ensureArm64GuestPieces() {
  const dir = arm64PiecesDir();
  if (existsSync(join(dir, STAMP))) return dir;
  const apt = prepareApt();
  const building = `${dir}.tmp-${process.pid}`;
  rmSync(building, { recursive: true, force: true });
  mkdirSync(join(building, 'debs'), { recursive: true });
  try {
    download(apt, join(building, 'debs'));
    const debs = readdirSync(join(building, 'debs'));
    const kernelDeb = debs.find((name) => name.startsWith(`${ARM64_GUEST_PACKAGES.kernel.name}_`));
    const busyboxDeb = debs.find((name) => name.startsWith(`${ARM64_GUEST_PACKAGES.busybox.name}_`));
    if (!kernelDeb || !busyboxDeb) throw new FetchError(`apt-get download left ${debs.join(', ') || 'nothing'}`);
    unpack(join(building, 'debs', kernelDeb), join(building, 'kernel'));
    unpack(join(building, 'debs', busyboxDeb), join(building, 'busybox'));
    rmSync(join(building, 'debs'), { recursive: true });
    const kernelRelease = readdirSync(join(building, 'kernel', 'lib', 'modules'))[0];
    if (!kernelRelease || !existsSync(join(building, 'kernel', 'boot', `vmlinuz-${kernelRelease}`))) {
      throw new FetchError(`${kernelDeb} holds no kernel image and modules of one release`);
    }
    if (!existsSync(join(building, 'busybox', 'bin', 'busybox'))) throw new FetchError(`${busyboxDeb} holds no bin/busybox`);
    // The stamp, written last: its presence means the tree is complete.
    writeFileSync(join(building, STAMP), `${JSON.stringify({ ...ARM64_GUEST_PACKAGES, kernelRelease }, null, 2)}\n`);
    try {
      renameSync(building, dir);
    } catch (error) {
      // Another bootstrap finished the same pins first: theirs is as good as ours.
      if (!existsSync(join(dir, STAMP))) throw error;
    }
  } finally {
    rmSync(building, { recursive: true, force: true });
  }
  // Trees of earlier pins (and ones left by interrupted runs) are of no further use.
  for (const name of readdirSync(cache)) {
    const path = join(cache, name);
    const builder = /\.tmp-(\d+)$/.exec(name);
    const inUse = path === dir || name === 'apt' || (builder !== null && isAlive(Number(builder[1])));
    if (!inUse) rmSync(path, { recursive: true, force: true });
  }
  return dir;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  try {
    process.stdout.write(`${ensureArm64GuestPieces()}\n`);
  } catch (error) {
    const message = error instanceof FetchError ? error.message : `fetching the arm64 guest packages failed: ${String(error)}`;
    process.stderr.write(`[arm64] ${message}\n`);
    process.exit(1);
  }
}
