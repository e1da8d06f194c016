// The command line of svmm-launch (native/svmm-launch.c), the exec helper QEMU and its daemons are
// started through: it closes every fd we did not pass, creates the listening sockets, drops the
// capability bounding set and the user's privileges, sets no-new-privs and the parent-death
// signal, then execs the program (which keeps the launcher's pid).
import { isAbsolute } from 'node:path';
import { ConfigError } from '../../hypervisor/config/index.ts';
import { builtHelperPath, nativeHelperProblem } from '../../util/native-helper.ts';

/**
 * An fd QEMU finds open at `fd`: one of ours passed through (`inherit`), or a unix socket the
 * launcher creates and listens on (`listen`).
 */
export type LaunchFd = { fd: number; kind: 'inherit'; from: number } | { fd: number; kind: 'listen'; path: string };

export interface LaunchSpec {
  /** Absolute path of the program to exec. */
  program: string;
  args: readonly string[];
  /** What the program finds at each fd >= 3: one of our fds passed through (stdio mapping), or a listening socket the launcher creates. */
  fds: readonly LaunchFd[];
  user: { uid: number; gid: number; groups: readonly number[] } | undefined;
  dropCapabilities: boolean;
  dieWithParent: boolean;
  /** A network namespace file the program starts inside. */
  netns?: string | undefined;
}

/** Highest fd a spec may place: the stdio array has one entry per fd up to it. */
const MAX_FD = 1023;
/** A unix socket path and its NUL must fit in sun_path (108 bytes). */
const MAX_SOCKET_PATH_BYTES = 107;
/** (uid_t)-1 means "unchanged" to the set*id calls, so the launcher refuses it. */
const MAX_ID = 4_294_967_294;

/** The launcher's own argv (everything after the launcher's path). */
export function launcherArgs(spec: LaunchSpec): string[] {
  validate(spec);
  const args: string[] = [];
  for (const entry of spec.fds) {
    // An inherited fd is already at its place (launcherStdio puts it there): the launcher only keeps it.
    if (entry.kind === 'inherit') args.push('--keep-fd', String(entry.fd));
    else args.push('--listen', `${entry.fd}:${entry.path}`);
  }
  if (spec.user) {
    args.push('--uid', String(spec.user.uid), '--gid', String(spec.user.gid));
    if (spec.user.groups.length > 0) args.push('--groups', spec.user.groups.join(','));
  }
  if (spec.dropCapabilities) args.push('--drop-caps');
  if (spec.dieWithParent) args.push('--die-with-parent');
  if (spec.netns !== undefined) args.push('--netns', spec.netns);
  args.push('--', spec.program, ...spec.args);
  return args;
}

/** execa/child_process stdio array: [ 'ignore', 'ignore', stderr, ...] with our fd at each inherit position and 'ignore' elsewhere. */
export function launcherStdio(spec: LaunchSpec, stderr: 'pipe' | number): Array<'ignore' | 'pipe' | number> {
  validate(spec);
  const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'ignore', stderr];
  const highest = Math.max(2, ...spec.fds.map((entry) => entry.fd));
  // 'ignore' above fd 2 leaves the slot empty in the launcher; the launcher closes whatever else is there.
  for (let fd = 3; fd <= highest; fd++) stdio.push('ignore');
  for (const entry of spec.fds) if (entry.kind === 'inherit') stdio[entry.fd] = entry.from;
  return stdio;
}

/** Internal programming errors: the spec is built by this library, never taken from a user. */
function validate(spec: LaunchSpec): void {
  const bad = (field: string, message: string): never => {
    throw new Error(`invalid LaunchSpec: ${field} ${message}`);
  };
  if (!isAbsolute(spec.program) || spec.program.includes('\0')) bad('program', `must be an absolute path (got ${JSON.stringify(spec.program)})`);
  spec.args.forEach((arg, i) => {
    if (arg.includes('\0')) bad(`args[${i}]`, 'contains a NUL byte');
  });
  if (spec.netns !== undefined && (!isAbsolute(spec.netns) || spec.netns.includes('\0'))) bad('netns', `must be an absolute path (got ${JSON.stringify(spec.netns)})`);
  const seen = new Set<number>();
  spec.fds.forEach((entry, i) => {
    if (!Number.isInteger(entry.fd) || entry.fd < 3 || entry.fd > MAX_FD) bad(`fds[${i}].fd`, `must be an integer in 3..${MAX_FD} (got ${entry.fd})`);
    if (seen.has(entry.fd)) bad(`fds[${i}].fd`, `${entry.fd} is given twice`);
    seen.add(entry.fd);
    if (entry.kind === 'inherit') {
      if (!Number.isInteger(entry.from) || entry.from < 0) bad(`fds[${i}].from`, `must be an open fd number (got ${entry.from})`);
    } else {
      const { path } = entry;
      if (!isAbsolute(path) || path.includes('\0')) bad(`fds[${i}].path`, `must be an absolute path (got ${JSON.stringify(path)})`);
      if (Buffer.byteLength(path) > MAX_SOCKET_PATH_BYTES) bad(`fds[${i}].path`, `must fit in ${MAX_SOCKET_PATH_BYTES} bytes (a unix socket path)`);
    }
  });
  if (spec.user) {
    const ids: Array<[string, number]> = [
      ['user.uid', spec.user.uid],
      ['user.gid', spec.user.gid],
      ...spec.user.groups.map((id, i): [string, number] => [`user.groups[${i}]`, id]),
    ];
    for (const [field, id] of ids) if (!Number.isInteger(id) || id < 0 || id > MAX_ID) bad(field, `must be an id in 0..${MAX_ID} (got ${id})`);
  }
}

/**
 * Absolute path of the built launcher: `configured` if given, else build/svmm-launch at the root of
 * this package. It runs as root, so it must pass nativeHelperProblem's checks.
 */
export function findLauncher(configured?: string): string {
  const path = configured ?? builtHelperPath('svmm-launch');
  if (path === undefined) {
    throw new ConfigError([{ path: 'runtime.launcherPath', message: 'no sandbox-vmm package.json above this module, so the launcher cannot be found: set runtime.launcherPath' }]);
  }
  const problem = nativeHelperProblem('launcher', path, configured !== undefined);
  if (problem) throw new ConfigError([{ path: 'runtime.launcherPath', message: problem }]);
  return path;
}
