// Installs the side-by-side QEMUs of scripts/qemu-versions.mjs into the git-ignored cache, for
// `npm test` and `npm run bench`: apt with a private sources list, lists and cache (the host's apt
// configuration, its dpkg database and the system QEMU are never touched), `apt-get download` of
// exact versions, `dpkg-deb -x` of each. A stamp written last marks an install as complete; an
// interrupted one is redone (downloads already verified are kept, the rest is unpacked again).
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, realpathSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { DEBIAN_ARCHIVE, SIDE_BY_SIDE, qemuCacheDir, qemuVersionOf, sideBySideQemu, sideBySideRoot } from './qemu-versions.mjs';

/** An uid no process or file of the host uses: who the unprivileged-execution check runs as (as the launcher drops each VM's QEMU to a uid of its own). */
const UNPRIVILEGED_UID = 1_900_065_500;
const STAMP = 'installed.json';

function fail(message) {
  throw new Error(`side-by-side QEMU: ${message}`);
}

/** Creates `path` and any missing parent, each mode 0755 whatever the umask (checkBinary needs that). */
function makeDirs(path) {
  if (existsSync(path)) return;
  makeDirs(dirname(path));
  mkdirSync(path);
  chmodSync(path, 0o755);
}

function run(command, args, options = {}) {
  const result = spawnSync(command, args, { encoding: 'utf8', stdio: ['ignore', 'inherit', 'inherit'], ...options });
  if (result.error) fail(`${command} could not run: ${result.error.message}`);
  if (result.status !== 0) fail(`${command} ${args.join(' ')} exited ${result.status}`);
  return result;
}

/** The apt options that make apt-get read and write only the cache's own apt directory. */
function privateApt(cacheDir) {
  const apt = join(cacheDir, 'apt');
  const sourcesList = join(apt, 'sources.list');
  const { keyring, mirror, suites } = DEBIAN_ARCHIVE;
  const sources = suites.map((suite) => `deb [signed-by=${keyring}] ${mirror} ${suite} main\n`).join('');
  makeDirs(join(apt, 'lists'));
  makeDirs(join(apt, 'cache'));
  if (!existsSync(sourcesList) || readFileSync(sourcesList, 'utf8') !== sources) writeFileSync(sourcesList, sources, { mode: 0o644 });
  const options = {
    'Dir::Etc::sourcelist': sourcesList,
    'Dir::Etc::sourceparts': '/nonexistent',
    'Dir::State::lists': join(apt, 'lists'),
    'Dir::Cache': join(apt, 'cache'),
  };
  return Object.entries(options).flatMap(([key, value]) => ['-o', `${key}=${value}`]);
}

/** The SHA-256 the archive's index gives for package=version. */
function indexedSha256(apt, name, version) {
  const shown = run('apt-cache', [...apt, 'show', `${name}=${version}`], { stdio: ['ignore', 'pipe', 'inherit'] }).stdout;
  return /^SHA256: ([0-9a-f]{64})$/m.exec(shown)?.[1] ?? fail(`apt-cache show ${name}=${version} gives no SHA256`);
}

/** The .deb of name=version in `debs` (apt-get download's name: the epoch's colon as %3a), if any. */
function downloadedDeb(debs, name, version) {
  const prefix = `${name}_${version.replace(':', '%3a')}_`;
  const file = readdirSync(debs).find((f) => f.startsWith(prefix) && f.endsWith('.deb'));
  return file === undefined ? undefined : join(debs, file);
}

function sha256(path) {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/**
 * The library runs QEMU as root's choice of binary, then as an unprivileged uid: the binary and
 * every directory above it must be root's and writable by root alone, or sticky like /tmp (else
 * someone else could swap it), and that uid must be able to reach and execute it.
 */
function checkBinary(binary, expectedVersion) {
  const real = realpathSync(binary);
  for (let path = real; ; path = dirname(path)) {
    const stat = statSync(path);
    if (stat.uid !== 0) fail(`${path} is owned by uid ${stat.uid}, not root: QEMU must be root's (install as root, in a root-owned checkout)`);
    // A sticky directory (/tmp) lets others add entries but not rename or remove ours.
    const sticky = stat.isDirectory() && (stat.mode & 0o1000) !== 0 && path !== real;
    if ((stat.mode & 0o022) !== 0 && !sticky) fail(`${path} is writable by its group or others (mode ${(stat.mode & 0o777).toString(8)})`);
    if (path === dirname(path)) break;
  }
  const version = qemuVersionOf(binary);
  if (version !== expectedVersion) fail(`${binary} --version says ${version ?? 'nothing'}, expected ${expectedVersion}`);
  // Through sh: setpriv itself execs with root's capabilities still in hand, sh no longer has them.
  const asVm = spawnSync('setpriv', [`--reuid=${UNPRIVILEGED_UID}`, `--regid=${UNPRIVILEGED_UID}`, '--clear-groups', 'sh', '-c', 'exec "$0" --version', binary], { encoding: 'utf8', env: {} });
  if (asVm.status !== 0) fail(`uid ${UNPRIVILEGED_UID} cannot execute ${binary}: ${(asVm.stderr || asVm.error?.message || '').trim()}`);
}

function install(cacheDir, entry, say) {
  const { version, packages } = entry;
  const root = sideBySideRoot(cacheDir, version);
  const debs = join(cacheDir, version, 'debs');
  makeDirs(debs);
  makeDirs(root);
  const apt = privateApt(cacheDir);
  say(`installing QEMU ${version} side by side in ${join(cacheDir, version)} (Debian packages, private apt state)`);
  run('apt-get', [...apt, '-q', 'update']);
  for (const [name, wanted] of Object.entries(packages)) {
    const existing = downloadedDeb(debs, name, wanted);
    if (existing && sha256(existing) === indexedSha256(apt, name, wanted)) continue;
    // Downloaded as root (into root's cache directory, which apt's _apt user may not write to).
    run('apt-get', [...apt, '-o', 'APT::Sandbox::User=root', '-q', 'download', `${name}=${wanted}`], { cwd: debs });
    const fetched = downloadedDeb(debs, name, wanted) ?? fail(`apt-get download ${name}=${wanted} left no .deb in ${debs}`);
    if (sha256(fetched) !== indexedSha256(apt, name, wanted)) fail(`${fetched} does not match the archive's SHA256`);
  }
  for (const [name, wanted] of Object.entries(packages)) run('dpkg-deb', ['-x', downloadedDeb(debs, name, wanted), root]);
  // QEMU looks for its modules and firmware under <its directory>/qemu-bundle/<built-in path> first:
  // this link makes that the unpacked tree. Without it QEMU 10 loads the system QEMU's (7.2's)
  // modules and aborts with "Only modules from the same build can be loaded".
  const bundle = join(root, 'usr', 'bin', 'qemu-bundle');
  const linked = lstatSync(bundle, { throwIfNoEntry: false });
  if (linked && !(linked.isSymbolicLink() && readlinkSync(bundle) === '../..')) fail(`${bundle} exists and is not the link ../..`);
  if (!linked) symlinkSync('../..', bundle);
  checkBinary(sideBySideQemu(cacheDir, version), version);
  writeFileSync(join(cacheDir, version, STAMP), `${JSON.stringify({ version, packages }, null, 2)}\n`, { mode: 0o644 });
}

function installed(cacheDir, entry) {
  try {
    const stamp = JSON.parse(readFileSync(join(cacheDir, entry.version, STAMP), 'utf8'));
    return JSON.stringify(stamp) === JSON.stringify({ version: entry.version, packages: entry.packages });
  } catch {
    return false;
  }
}

/** Installs every side-by-side QEMU not yet (completely) installed, then checks each binary. */
export function ensureSideBySideQemus(repositoryRoot, say) {
  const cacheDir = qemuCacheDir(repositoryRoot);
  for (const entry of SIDE_BY_SIDE) {
    if (!installed(cacheDir, entry)) install(cacheDir, entry, say);
    checkBinary(sideBySideQemu(cacheDir, entry.version), entry.version);
  }
}
