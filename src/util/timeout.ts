// The one rule for every timeout a caller gives (an operation's `timeoutMs`, a client's default):
//   - undefined: the default applies (which may itself be "no bound");
//   - a number >= 0: that many milliseconds; beyond 2^31-1 ms (and Infinity) there is no bound;
//   - NaN, a negative number or anything that is not a number: the caller's mistake, rejected with
//     an InvalidArgumentError naming the option (never silently read as "no bound").
import { InvalidArgumentError } from '../errors.ts';

// Node's timers cannot wait longer than 2^31-1 ms: a longer delay fires after 1 ms instead.
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** Returns `value` if it is a valid timeout, else throws InvalidArgumentError naming `name`. */
export function checkTimeoutMs(value: unknown, name = 'timeoutMs'): number {
  if (typeof value !== 'number' || Number.isNaN(value) || value < 0) {
    throw new InvalidArgumentError(name, `must be a number of milliseconds >= 0 (Infinity for no bound), not ${describe(value)}`);
  }
  return value;
}

/**
 * The timeout that applies: `value` when given, else `fallback` (undefined when there is neither).
 * Throws InvalidArgumentError when the one that applies is not valid.
 */
export function resolveTimeoutMs(value: unknown, fallback: number, name?: string, fallbackName?: string): number;
export function resolveTimeoutMs(value: unknown, fallback: number | undefined, name?: string, fallbackName?: string): number | undefined;
export function resolveTimeoutMs(value: unknown, fallback: number | undefined, name = 'timeoutMs', fallbackName = `default ${name}`): number | undefined {
  if (value !== undefined) return checkTimeoutMs(value, name);
  return fallback === undefined ? undefined : checkTimeoutMs(fallback, fallbackName);
}

/** True when `ms` is a bound a timer can keep (not beyond MAX_TIMER_MS). */
export function isBounded(ms: number): boolean {
  return ms <= MAX_TIMER_MS;
}

/**
 * An unref'd timer calling `onTimeout` after `ms`, or none when `ms` is beyond what a timer can
 * wait (about 24.8 days: as good as no bound). Throws InvalidArgumentError for an invalid `ms`.
 */
export function startTimeout(ms: number, onTimeout: () => void, name = 'timeoutMs'): NodeJS.Timeout | undefined {
  if (!isBounded(checkTimeoutMs(ms, name))) return undefined;
  const timer = setTimeout(onTimeout, ms);
  timer.unref();
  return timer;
}

function describe(value: unknown): string {
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'boolean') return `${String(value)}${typeof value === 'bigint' ? 'n' : ''}`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}…` : value);
  if (value === null) return 'null';
  return `a value of type ${typeof value}`;
}
