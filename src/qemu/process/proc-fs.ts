// What /proc says about a process. process.kill(pid, 0) succeeds for zombies, so liveness reads the
// state field too; starttime guards against a recycled pid.
import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

export interface ProcStat {
  state: string;
  /** Clock ticks since boot at which the process started: with the pid, a unique identity. */
  startTime: number;
  ppid: number;
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: fields restart after the last ')'.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const state = fields[0];
  const ppid = Number(fields[1]);
  const startTime = Number(fields[19]);
  if (state === undefined || !Number.isFinite(startTime)) return undefined;
  return { state, startTime, ppid };
}

/** True while `pid` is a live (non-zombie) process with the given start time. */
export function isProcessAlive(pid: number, startTime?: number): boolean {
  const stat = readProcStat(pid);
  if (!stat || stat.state === 'Z' || stat.state === 'X') return false;
  return startTime === undefined || stat.startTime === startTime;
}

export interface ThreadInfo {
  tid: number;
  name: string;
}

/** Threads of a process with their names (`CPU 0/TCG`, `CPU 1/KVM` … with debug-threads=on). */
export function listThreads(pid: number): ThreadInfo[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const threads: ThreadInfo[] = [];
  for (const tid of tids) {
    try {
      threads.push({ tid: Number(tid), name: readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim() });
    } catch {
      // The thread ended while we listed it.
    }
  }
  return threads;
}

/** The thread ids of a process (/proc/<pid>/task), empty when it is gone. */
export function taskIds(pid: number): Set<number> {
  try {
    return new Set(readdirSync(`/proc/${pid}/task`).map(Number));
  } catch {
    return new Set();
  }
}

/** The executable a process runs (/proc/<pid>/exe), or undefined when it cannot be read. */
export function readExe(pid: number): string | undefined {
  try {
    return readlinkSync(`/proc/${pid}/exe`);
  } catch {
    return undefined;
  }
}

/** The inode of the network namespace a process is in (what stat() of a netns file gives), or undefined. */
export function readNetnsInode(pid: number): number | undefined {
  try {
    const match = /^net:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/ns/net`));
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** A process's argv as the kernel keeps it (bounded), or undefined when it cannot be read. */
export function readCmdline(pid: number): string[] | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return text.endsWith('\0') ? text.slice(0, -1).split('\0') : text.split('\0');
  } catch {
    return undefined;
  }
}

/** Real, effective, saved and filesystem uids of a process. */
export function readUids(pid: number): number[] | undefined {
  try {
    const line = readFileSync(`/proc/${pid}/status`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Uid:'));
    return line?.slice(4).trim().split(/\s+/).map(Number);
  } catch {
    return undefined;
  }
}
