// QEMU's own figures, from QMP replies checked before use (QEMU may be hostile, and its integers
// may exceed 2^53: the QMP client reads those as bigints, and every counter here is a bigint).
import { InvalidReplyError } from '../../hypervisor/errors.ts';
import type { BalloonGuestStats, DiskStats } from '../../hypervisor/stats.ts';
import { describeValue } from '../reply-values.ts';
import { blockNodeName } from '../devices/block.ts';

/** QMP's "not reported" for a guest statistic: -1 sent as a uint64. */
const UNREPORTED = 2n ** 64n - 1n;

/** A non-negative integer of a reply as an exact bigint; InvalidReplyError naming `at` otherwise. */
export function counter(command: string, value: unknown, at: string): bigint {
  if (typeof value === 'bigint' && value >= 0n) return value;
  if (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) return BigInt(value);
  throw new InvalidReplyError(command, `${at} is ${describeValue(value)}, not an integer >= 0`);
}

function object(command: string, value: unknown, at: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new InvalidReplyError(command, `${at} is ${describeValue(value)}, not an object`);
  return value as Record<string, unknown>;
}

function array(command: string, value: unknown): unknown[] {
  if (!Array.isArray(value)) throw new InvalidReplyError(command, `expected an array, got ${describeValue(value)}`);
  return value;
}

function own(record: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(record, key) ? record[key] : undefined;
}

const BLOCK_COUNTERS = [
  ['readBytes', 'rd_bytes'],
  ['writeBytes', 'wr_bytes'],
  ['readOperations', 'rd_operations'],
  ['writeOperations', 'wr_operations'],
  ['flushOperations', 'flush_operations'],
  ['readTimeNs', 'rd_total_time_ns'],
  ['writeTimeNs', 'wr_total_time_ns'],
  ['flushTimeNs', 'flush_total_time_ns'],
] as const satisfies readonly (readonly [keyof Omit<DiskStats, 'id'>, string])[];

/**
 * query-blockstats' reply → the counters of each disk in `diskIds`, in that order. A disk's backend
 * is found by its root node's name (drv-<id>, which the library gave it); entries of other nodes
 * are ignored, a node listed twice is an InvalidReplyError, and a disk QEMU does not list is left out.
 */
export function parseBlockStats(reply: unknown, diskIds: readonly string[]): DiskStats[] {
  const command = 'query-blockstats';
  const byNode = new Map<string, DiskStats>();
  const wanted = new Map(diskIds.map((id) => [blockNodeName(id), id]));
  array(command, reply).forEach((entry, position) => {
    const at = `[${position}]`;
    const backend = object(command, entry, at);
    const node = own(backend, 'node-name');
    const id = typeof node === 'string' ? wanted.get(node) : undefined;
    if (id === undefined) return;
    if (byNode.has(node as string)) throw new InvalidReplyError(command, `${at} repeats node ${JSON.stringify(node)}`);
    const stats = object(command, own(backend, 'stats'), `${at}.stats`);
    const disk = { id } as DiskStats;
    for (const [name, field] of BLOCK_COUNTERS) disk[name] = counter(command, own(stats, field), `${at}.stats.${field}`);
    byNode.set(node as string, disk);
  });
  return diskIds.flatMap((id) => byNode.get(blockNodeName(id)) ?? []);
}

/**
 * query-memory-devices' reply → bytes plugged beyond boot memory: each DIMM's size and each
 * virtio-mem device's plugged `size` (not its maximum, nor what was requested).
 */
export function parsePluggedBytes(reply: unknown): bigint {
  const command = 'query-memory-devices';
  let total = 0n;
  array(command, reply).forEach((entry, position) => {
    const at = `[${position}]`;
    const device = object(command, entry, at);
    const type = own(device, 'type');
    if (type !== 'dimm' && type !== 'virtio-mem') return;
    total += counter(command, own(object(command, own(device, 'data'), `${at}.data`), 'size'), `${at}.data.size`);
  });
  return total;
}

/** query-balloon's reply → `actual`, in bytes. */
export function parseBalloonActual(reply: unknown): bigint {
  return counter('query-balloon', own(object('query-balloon', reply, 'the reply'), 'actual'), 'actual');
}

const GUEST_STATS = [
  ['swapInBytes', 'stat-swap-in'],
  ['swapOutBytes', 'stat-swap-out'],
  ['majorFaults', 'stat-major-faults'],
  ['minorFaults', 'stat-minor-faults'],
  ['freeBytes', 'stat-free-memory'],
  ['totalBytes', 'stat-total-memory'],
  ['availableBytes', 'stat-available-memory'],
  ['diskCachesBytes', 'stat-disk-caches'],
  ['hugetlbAllocations', 'stat-htlb-pgalloc'],
  ['hugetlbFailures', 'stat-htlb-pgfail'],
] as const satisfies readonly (readonly [keyof Omit<BalloonGuestStats, 'updatedAtSeconds'>, string])[];

/**
 * The balloon's `guest-stats` property (qom-get) → what the guest reported, or undefined when it has
 * not reported yet (`last-update` 0). Statistics the guest left out (-1) are absent.
 */
export function parseBalloonGuestStats(value: unknown): BalloonGuestStats | undefined {
  const command = 'qom-get guest-stats';
  const record = object(command, value, 'the value');
  const updated = counter(command, own(record, 'last-update'), "'last-update'");
  if (updated === 0n) return undefined;
  if (updated > BigInt(Number.MAX_SAFE_INTEGER)) throw new InvalidReplyError(command, `'last-update' is ${updated}, not a time in seconds`);
  const stats = object(command, own(record, 'stats'), 'stats');
  const guest: BalloonGuestStats = { updatedAtSeconds: Number(updated) };
  for (const [name, field] of GUEST_STATS) {
    const raw = own(stats, field);
    if (raw === undefined) continue;
    const value = counter(command, raw, `stats['${field}']`);
    if (value !== UNREPORTED) guest[name] = value;
  }
  return guest;
}
