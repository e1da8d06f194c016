// What /proc says a VM's processes cost: CPU time of threads, memory of processes, the time since a
// process started. Each file is read only while the pid is still the process we started (its start
// time, checked before and after the read), so a recycled pid is never reported as ours.
import { readFileSync } from 'node:fs';
import { readProcStat, taskIds } from '../process/proc-fs.ts';

/**
 * /proc's clock-tick unit (USER_HZ): fixed at 100 per second by the kernel's ABI on every Linux
 * architecture, whatever the kernel's own HZ, so no sysconf(_SC_CLK_TCK) is needed.
 */
const USER_HZ = 100n;
const NS_PER_TICK = 1_000_000_000n / USER_HZ;
const MS_PER_TICK = 1000 / Number(USER_HZ);

/** A process as the library knows it: its pid and the start time read when it was started. */
export interface ProcessRef {
  pid: number;
  /** /proc starttime in clock ticks; undefined when it was never read, and then nothing is read. */
  startTime: number | undefined;
}

export interface ThreadCpuTimes {
  userTimeNs: bigint;
  systemTimeNs: bigint;
}

export interface ProcessMemory {
  rssBytes: bigint;
  pssBytes: bigint;
}

/** utime and stime (fields 14 and 15) of a /proc/<pid>[/task/<tid>]/stat line, in nanoseconds. */
export function parseCpuTimes(text: string): ThreadCpuTimes | undefined {
  // The command name (field 2) may hold spaces and parentheses: fields restart after the last ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).split(' ');
  // fields[0] is field 3 (state): utime is field 14, stime field 15.
  const user = ticks(fields[11]);
  const system = ticks(fields[12]);
  if (user === undefined || system === undefined) return undefined;
  return { userTimeNs: user * NS_PER_TICK, systemTimeNs: system * NS_PER_TICK };
}

/** The Rss and Pss lines of /proc/<pid>/smaps_rollup (in kB there), in bytes. */
export function parseSmapsRollup(text: string): ProcessMemory | undefined {
  const kib = (name: string): bigint | undefined => {
    const match = new RegExp(`^${name}:\\s+(\\d{1,19}) kB$`, 'm').exec(text);
    return match ? BigInt(match[1] as string) * 1024n : undefined;
  };
  const rssBytes = kib('Rss');
  const pssBytes = kib('Pss');
  return rssBytes === undefined || pssBytes === undefined ? undefined : { rssBytes, pssBytes };
}

/** Milliseconds between a process's start (starttime, in ticks since boot) and `/proc/uptime`'s first field. */
export function uptimeMsSince(startTime: number, procUptime: string): number | undefined {
  // "12345.67 …": seconds since boot with two decimals, read as ticks to stay exact.
  const match = /^(\d+)\.(\d\d)\s/.exec(procUptime);
  if (!match) return undefined;
  const nowTicks = Number(match[1]) * Number(USER_HZ) + Number(match[2]);
  return Math.max(0, nowTicks - startTime) * MS_PER_TICK;
}

/** Reads /proc/<pid>/<file> if `process` is still the process we started, before and after the read. */
export function readOwnProcFile(process: ProcessRef, file: string): string | undefined {
  if (!isSameProcess(process)) return undefined;
  let text: string;
  try {
    text = readText(`/proc/${process.pid}/${file}`);
  } catch {
    return undefined;
  }
  // A pid recycled during the read: what was read is another process's.
  return isSameProcess(process) ? text : undefined;
}

/** CPU times of thread `tid` of `process`, or undefined when it is not (or no longer) one of its threads. */
export function readThreadCpuTimes(process: ProcessRef, tid: number): ThreadCpuTimes | undefined {
  if (!taskIds(process.pid).has(tid)) return undefined;
  const text = readOwnProcFile(process, `task/${tid}/stat`);
  return text === undefined ? undefined : parseCpuTimes(text);
}

/** RSS and PSS of `process`, or undefined when it is gone. */
export function readProcessMemory(process: ProcessRef): ProcessMemory | undefined {
  const text = readOwnProcFile(process, 'smaps_rollup');
  return text === undefined ? undefined : parseSmapsRollup(text);
}

/** Milliseconds since `process` started, or undefined when it is gone. */
export function readUptimeMs(process: ProcessRef): number | undefined {
  if (process.startTime === undefined || !isSameProcess(process)) return undefined;
  return uptimeMsSince(process.startTime, readText('/proc/uptime'));
}

function isSameProcess(process: ProcessRef): boolean {
  if (process.startTime === undefined || process.pid <= 0) return false;
  return readProcStat(process.pid)?.startTime === process.startTime;
}

function readText(path: string): string {
  return readFileSync(path, 'utf8');
}

function ticks(field: string | undefined): bigint | undefined {
  return field !== undefined && /^\d{1,20}$/.test(field) ? BigInt(field) : undefined;
}
