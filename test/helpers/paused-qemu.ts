// Starts QEMU with a given argv (which holds -S, so the guest never runs) the way the backend does:
// through setpriv, as the config's user, killed by the kernel if this process dies. Then connects
// over QMP. A QEMU that rejects its command line fails the launch with its own error message.
import { spawn } from 'node:child_process';
import { QmpClient } from '../../src/qmp/index.ts';
import { setprivArgs, type DropPrivileges } from '../../src/qemu/process/vmm-process.ts';

export interface LaunchOptions {
  args: readonly string[];
  qmpSocket: string;
  /** Who QEMU runs as; undefined keeps the current user. */
  user: DropPrivileges | undefined;
  /** Persistent taps to attach and hand to QEMU as fd 3, 4, … (Node cannot issue TUNSETIFF). */
  fdTaps?: readonly string[];
  qemuPath?: string;
}

export interface PausedQemu {
  readonly pid: number;
  readonly qmp: QmpClient;
  stderr(): string;
  /** quit over QMP, SIGKILL if that does not end it; resolves once QEMU is reaped. Idempotent. */
  stop(): Promise<void>;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * Opens each named tap (TUNSETIFF: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, as QEMU would), moves it to
 * fd 3, 4, … without close-on-exec, and execs the rest of the command line.
 */
const TAP_FD_EXEC = String.raw`
use strict; use warnings; use POSIX (); use Fcntl ();
my @taps; while (@ARGV && $ARGV[0] ne '--') { push @taps, shift @ARGV } shift @ARGV;
my (@keep, @high);
for my $tap (@taps) {
  open(my $fh, '+<', '/dev/net/tun') or die "open /dev/net/tun: $!";
  ioctl($fh, 0x400454ca, pack('a16 s x22', $tap, 0x0002 | 0x1000 | 0x4000)) or die "TUNSETIFF $tap: $!";
  push @keep, $fh;
  push @high, fcntl($fh, Fcntl::F_DUPFD, 100) // die "F_DUPFD: $!";
}
for my $i (0 .. $#high) { defined POSIX::dup2($high[$i], 3 + $i) or die "dup2: $!"; POSIX::close($high[$i]); }
exec { $ARGV[0] } @ARGV or die "exec $ARGV[0]: $!";
`;

export async function launchPaused(options: LaunchOptions): Promise<PausedQemu> {
  const qemu = ['setpriv', ...setprivArgs({ user: options.user, detached: false }), '--', options.qemuPath ?? 'qemu-system-x86_64', ...options.args];
  const fdTaps = options.fdTaps ?? [];
  const [file, ...args] = fdTaps.length > 0 ? ['perl', '-e', TAP_FD_EXEC, ...fdTaps, '--', ...qemu] : qemu;
  const child = spawn(file as string, args, { stdio: ['ignore', 'ignore', 'pipe'] });
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
