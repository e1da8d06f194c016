// query-cpus-fast's answer, checked before anything is done with it: a runtime pins those thread
// ids to host CPUs or moves them into a cgroup, so a QEMU that lies (a compromised one) must not
// be able to name another process's thread, such as pid 1.
import { InvalidReplyError } from '../hypervisor/errors.ts';
import { describeValue } from './reply-values.ts';

const COMMAND = 'query-cpus-fast';

/**
 * vCPU index → host thread id, from query-cpus-fast's reply `cpus`. The reply must be an array of
 * objects, each with an integer `cpu-index` >= 0 (no index twice) and an integer `thread-id` > 0
 * that is one of `qemuTids` (the tasks of QEMU's own process, /proc/<qemu>/task). vCPUs may share
 * a thread (single-threaded TCG). Throws InvalidReplyError (code INVALID_REPLY) naming the first
 * bad value.
 */
export function checkVcpuThreadIds(cpus: unknown, qemuTids: ReadonlySet<number>): Map<number, number> {
  if (!Array.isArray(cpus)) throw new InvalidReplyError(COMMAND, `expected an array of vCPUs, got ${describeValue(cpus)}`);
  const threads = new Map<number, number>();
  cpus.forEach((cpu: unknown, position) => {
    const at = `[${position}]`;
    if (typeof cpu !== 'object' || cpu === null || Array.isArray(cpu)) {
      throw new InvalidReplyError(COMMAND, `${at} is ${describeValue(cpu)}, not an object`);
    }
    const index = ownField(cpu, 'cpu-index');
    if (!isInteger(index) || index < 0) {
      throw new InvalidReplyError(COMMAND, `${at}['cpu-index'] is ${describeValue(index)}, not an integer >= 0`);
    }
    const tid = ownField(cpu, 'thread-id');
    if (!isInteger(tid) || tid <= 0) {
      throw new InvalidReplyError(COMMAND, `${at}['thread-id'] is ${describeValue(tid)}, not an integer > 0`);
    }
    if (threads.has(index)) throw new InvalidReplyError(COMMAND, `${at} repeats cpu-index ${index}`);
    if (!qemuTids.has(tid)) {
      throw new InvalidReplyError(COMMAND, `${at}['thread-id'] is ${tid}, which is not a thread of the QEMU process`);
    }
    threads.set(index, tid);
  });
  return threads;
}

function ownField(object: object, key: string): unknown {
  return Object.hasOwn(object, key) ? (object as Record<string, unknown>)[key] : undefined;
}

function isInteger(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value);
}
