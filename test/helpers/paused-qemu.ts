// Starts QEMU with a given argv (which holds -S, so the guest never runs) the way the backend does:
// through the launcher (build/svmm-launch), which creates the argv's listening sockets as root,
// keeps only the fds given on purpose, drops capabilities, switches to the given identity and sets
// the parent-death signal, then execs QEMU with an empty environment. Then connects over QMP. A
// QEMU that rejects its command line (or a launcher that fails a step) fails the launch with its
// own error message.
import { spawn } from 'node:child_process';
import type { VmIdentity } from '../../src/hypervisor/types.ts';
import { resolveBinary } from '../../src/qemu/binaries.ts';
import { findLauncher, launcherArgs, launcherStdio, type LaunchFd, type LaunchSpec } from '../../src/qemu/launch/launcher.ts';
import { QmpClient } from '../../src/qmp/index.ts';
import { QEMU_UNDER_TEST } from './qemu-under-test.ts';

/**
 * A fixed identity for QEMUs the tests launch themselves, where the library would lease one: no
 * lease store is involved, so it is a constant near the top of the library's lease range
 * (1900000000 + 65536), which leases, taken lowest first, do not reach in a test run.
 */
export const TEST_QEMU_UID = 1_900_065_500;

export function testIdentity(uid = TEST_QEMU_UID): VmIdentity {
  return { uid, gid: uid, groups: [] };
}

export interface LaunchOptions {
  args: readonly string[];
  /** What QEMU finds at each fd >= 3: the argv's `fds` (listening sockets and caller fds). */
  fds: readonly LaunchFd[];
  qmpSocket: string;
  /** Who QEMU runs as; undefined keeps this process's user. */
  user: VmIdentity | undefined;
  /**
   * Persistent taps standing in for the caller fds: one per 'inherit' entry of `fds`, in order.
   * Each is attached here (Node cannot issue TUNSETIFF) and placed at the fd QEMU expects it at.
   */
  fdTaps?: readonly string[];
  /** Default: the QEMU of this run of the version matrix (QEMU_UNDER_TEST). */
  qemuPath?: string;
}

export interface PausedQemu {
  readonly pid: number;
  readonly qmp: QmpClient;
  /** What the launcher was asked to do. */
  readonly spec: LaunchSpec;
  stderr(): string;
  /** quit over QMP, SIGKILL if that does not end it; resolves once QEMU is reaped. Idempotent. */
  stop(): Promise<void>;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Arguments: FD=TAP ... -- program args. Opens each named tap (TUNSETIFF: IFF_TAP | IFF_NO_PI |
 * IFF_VNET_HDR, as QEMU would), parks it above every target, moves it to its FD without
 * close-on-exec, and execs the rest of the command line (the launcher, told to --keep-fd them).
 */
const TAP_FD_EXEC = String.raw`
use strict; use warnings; use POSIX (); use Fcntl ();
my @taps; while (@ARGV && $ARGV[0] ne '--') { push @taps, shift @ARGV } shift @ARGV;
my (@keep, @high);
for my $spec (@taps) {
  my ($fd, $tap) = $spec =~ /^(\d+)=(.+)$/s or die "bad tap spec $spec";
  $fd < 100 or die "fd $fd: targets must be below 100";
  open(my $fh, '+<', '/dev/net/tun') or die "open /dev/net/tun: $!";
  ioctl($fh, 0x400454ca, pack('a16 s x22', $tap, 0x0002 | 0x1000 | 0x4000)) or die "TUNSETIFF $tap: $!";
  push @keep, $fh;
  push @high, [$fd, fcntl($fh, Fcntl::F_DUPFD, 100) // die "F_DUPFD: $!"];
}
for my $h (@high) { defined POSIX::dup2($h->[1], $h->[0]) or die "dup2: $!"; POSIX::close($h->[1]); }
exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!";
`;

export async function launchPaused(options: LaunchOptions): Promise<PausedQemu> {
  const spec: LaunchSpec = {
    program: resolveBinary(options.qemuPath ?? QEMU_UNDER_TEST, 'qemuPath'),
    args: options.args,
    fds: options.fds,
    user: options.user,
    // As the library launches QEMU (qemuLaunchSpec): no capability left, killed if we die.
    dropCapabilities: true,
    dieWithParent: true,
  };
  const launcher = findLauncher();
  const inherited = spec.fds.filter((entry) => entry.kind === 'inherit');
  const fdTaps = options.fdTaps ?? [];
  if (fdTaps.length !== inherited.length) throw new Error(`${inherited.length} caller fds to stand in for, but ${fdTaps.length} taps given`);

  let file: string;
  let args: string[];
  let stdio: ReturnType<typeof launcherStdio>;
  if (inherited.length === 0) {
    [file, args, stdio] = [launcher, launcherArgs(spec), launcherStdio(spec, 'pipe')];
  } else {
    // The taps are opened by perl and are already at their fds when it execs the launcher, whose
    // argv (launcherArgs) keeps each inherited fd with --keep-fd.
    const pairs = inherited.map((entry, i) => `${entry.fd}=${fdTaps[i] as string}`);
    [file, args, stdio] = [resolveBinary('perl', 'perl'), ['-e', TAP_FD_EXEC, ...pairs, '--', launcher, ...launcherArgs(spec)], ['ignore', 'ignore', 'pipe']];
  }
  // Nothing of this process's environment reaches QEMU, as with the library (env: {}).
  const child = spawn(file, args, { stdio, env: {} });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<Exit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', (error) => {
      stderr += `${error.message}\n`;
      resolve({ code: null, signal: null });
    });
  });
  let hasExited = false;
  void exited.then(() => (hasExited = true));

  const stop = async () => {
    if (!hasExited) child.kill('SIGKILL');
    await exited;
  };

  let qmp: QmpClient;
  try {
    qmp = await QmpClient.connect(options.qmpSocket, { exited, timeoutMs: 60_000 });
  } catch (error) {
    await stop();
    const exit = await exited;
    throw new Error(`QEMU did not come up (exit code ${exit.code}, signal ${exit.signal}): ${stderr.trim() || (error as Error).message}`, { cause: error });
  }

  let stopping: Promise<void> | undefined;
  return {
    pid: child.pid as number,
    qmp,
    spec,
    stderr: () => stderr,
    stop: () =>
      (stopping ??= (async () => {
        if (!hasExited) {
          await qmp.execute('quit', undefined, { timeoutMs: 10_000 }).catch(() => undefined);
          // Cleanup only, not an assertion: a QEMU that does not leave after quit is killed.
          const killTimer = setTimeout(() => child.kill('SIGKILL'), 10_000);
          await exited;
          clearTimeout(killTimer);
        }
        await qmp.close();
      })()),
  };
}
