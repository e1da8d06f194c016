// The /proc scan behind uid allocation is shared by a burst of callers, within a bound.
import { execFile } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { processIdsInUse, recentIdsInUse } from '../../../src/qemu/identity/proc-uids.ts';

describe('recentIdsInUse', () => {
  it('shares one scan between callers within maxAgeMs, and scans again after it', async () => {
    const first = recentIdsInUse(60_000, 1_000);
    expect(recentIdsInUse(60_000, 60_999)).toBe(first);
    const later = recentIdsInUse(60_000, 61_000);
    expect(later).not.toBe(first);
    expect(recentIdsInUse(0, 61_000)).not.toBe(later);
    await Promise.all([first, later]);
  });

  it('sees the ids of a process started just before, like a fresh scan', async () => {
    const uid = 1_950_777_001;
    const child = execFile('setpriv', [`--reuid=${uid}`, `--regid=${uid}`, '--clear-groups', 'sleep', '30']);
    try {
      await expect.poll(async () => (await processIdsInUse()).has(uid), { timeout: 5_000 }).toBe(true);
      expect((await recentIdsInUse(0)).has(uid)).toBe(true);
    } finally {
      child.kill('SIGKILL');
    }
  });
});
