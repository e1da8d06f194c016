// Checking the shape of what QEMU sends: the greeting and events, whose fields we read.
import type { QmpEvent, QmpGreeting } from './types.ts';

/** The greeting's `QMP` member, or undefined when it lacks a numeric version or a capability list. */
export function parseGreeting(qmp: unknown): QmpGreeting | undefined {
  if (typeof qmp !== 'object' || qmp === null) return undefined;
  const { version, capabilities } = qmp as Record<string, unknown>;
  if (typeof version !== 'object' || version === null || !Array.isArray(capabilities)) return undefined;
  const { qemu, package: pkg } = version as Record<string, unknown>;
  if (typeof qemu !== 'object' || qemu === null) return undefined;
  const { major, minor, micro } = qemu as Record<string, unknown>;
  if (typeof major !== 'number' || typeof minor !== 'number' || typeof micro !== 'number') return undefined;
  if (!capabilities.every((c) => typeof c === 'string')) return undefined;
  return { version: { qemu: { major, minor, micro }, package: typeof pkg === 'string' ? pkg : '' }, capabilities };
}

/**
 * An event message (its `event` is a string) with `data` and `timestamp` always present. A
 * timestamp member that is missing or not a number is -1, which is what QEMU itself sends when it
 * cannot read the host's clock (the spec's "unknown"); 0 would read as the epoch.
 */
export function toEvent(m: Record<string, unknown>): QmpEvent {
  const data = isPlainObject(m['data']) ? m['data'] : {};
  const ts = isPlainObject(m['timestamp']) ? m['timestamp'] : {};
  return {
    event: m['event'] as string,
    data,
    timestamp: { seconds: timestampPart(ts['seconds']), microseconds: timestampPart(ts['microseconds']) },
  };
}

const UNKNOWN_TIME = -1;

function timestampPart(value: unknown): number {
  return typeof value === 'number' ? value : UNKNOWN_TIME;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}
