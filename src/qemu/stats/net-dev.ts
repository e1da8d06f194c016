// NIC counters as the host's kernel keeps them for each tap, in the network namespace QEMU runs in.
//
// Where they are read: /proc/self/net/dev of a process inside that namespace (the kernel answers
// for the reader's namespace). With runtime.netns the reader is `cat`, started through the
// library's own launcher (svmm-launch --netns, which checks the file is a network namespace before
// entering it) as root with an empty bounding set. Not /proc/<qemu>/net/dev: that is the namespace
// QEMU is in now, and QEMU (which may be hostile) could have moved into one of its own making with
// taps of the same names; not /sys/class/net: sysfs shows the namespace of whoever mounted it. The
// namespace file is the caller's path (runtime.netns), never one QEMU controls.
import { execa, ExecaError } from 'execa';
import { HelperError } from '../../hypervisor/errors.ts';
import { existsSync, readFileSync } from 'node:fs';
import type { NicStats } from '../../hypervisor/stats.ts';

export type TapCounters = Omit<NicStats, 'id' | 'tap'>;

/** The reader started inside the namespace: an absolute path, as the launcher requires. */
const CAT = ['/usr/bin/cat', '/bin/cat'].find((path) => existsSync(path)) ?? '/bin/cat';
const MAX_OUTPUT_BYTES = 1024 * 1024;

/**
 * /proc/net/dev's table: interface name → counters. Each line is "name: rx bytes packets errs drop
 * fifo frame compressed multicast tx bytes packets errs drop fifo colls carrier compressed"; the two
 * header lines and anything malformed are skipped.
 */
export function parseNetDev(text: string): Map<string, TapCounters> {
  const table = new Map<string, TapCounters>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(':');
    if (colon < 0) continue;
    const name = line.slice(0, colon).trim();
    const fields = line.slice(colon + 1).trim().split(/\s+/);
    if (name === '' || fields.length < 16 || !fields.every((f) => /^\d{1,20}$/.test(f))) continue;
    const n = fields.map((f) => BigInt(f));
    table.set(name, {
      rxBytes: n[0] as bigint,
      rxPackets: n[1] as bigint,
      rxErrors: n[2] as bigint,
      rxDropped: n[3] as bigint,
      txBytes: n[8] as bigint,
      txPackets: n[9] as bigint,
      txErrors: n[10] as bigint,
      txDropped: n[11] as bigint,
    });
  }
  return table;
}

/**
 * /proc/net/dev as seen from `netns` (a network namespace file), or from this process's namespace.
 * `forDevices` names the NICs in a HelperError (HELPER_FAILED) when the reader fails; the
 * deadline's own error when `signal` ends it.
 */
export async function readNetDev(netns: string | undefined, launcher: string, signal: AbortSignal, forDevices: string): Promise<string> {
  if (netns === undefined) return readFileSync('/proc/self/net/dev', 'utf8');
  try {
    const result = await execa(launcher, ['--drop-caps', '--die-with-parent', '--netns', netns, '--', CAT, '/proc/self/net/dev'], {
      env: {},
      extendEnv: false,
      stdin: 'ignore',
      cancelSignal: signal,
      maxBuffer: MAX_OUTPUT_BYTES,
      stripFinalNewline: false,
    });
    return result.stdout;
  } catch (error) {
    if (signal.aborted) throw signal.reason;
    const exit = error instanceof ExecaError ? { exitCode: error.exitCode, signal: error.signal, stderrTail: String(error.stderr ?? '') } : {};
    throw new HelperError(`the tap counter reader (${CAT} in ${netns})`, forDevices, 'failed', { ...exit, cause: error });
  }
}
