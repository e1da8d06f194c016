// Waiting for the guest to reflect a change: it reacts to hotplug, ejection and resize
// asynchronously, so the tests poll what they check, within a bound, and assert on the last value.

/** Calls `fn` until `check` holds or `timeoutMs` passes; returns the last value either way. */
export async function eventually<T>(fn: () => Promise<T> | T, check: (value: T) => boolean, timeoutMs = 30_000): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: T = await fn();
  while (!check(last)) {
    if (Date.now() > end) return last;
    await new Promise((resolve) => setTimeout(resolve, 150));
    last = await fn();
  }
  return last;
}
