// Node's timers cannot wait longer than 2^31-1 ms: a longer delay fires after 1 ms instead.
export const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * An unref'd timer calling `onTimeout` after `ms`, or none when `ms` is not finite or is beyond
 * what a timer can wait (about 24.8 days: as good as no bound).
 */
export function startTimeout(ms: number, onTimeout: () => void): NodeJS.Timeout | undefined {
  if (!Number.isFinite(ms) || ms > MAX_TIMER_MS) return undefined;
  const timer = setTimeout(onTimeout, ms);
  timer.unref();
  return timer;
}
