import { describe, expect, it } from 'vitest';
import { spawnTurn } from '../../../src/qemu/process/spawn-turns.ts';

/** Counts event-loop iterations: an immediate that re-arms itself runs once per iteration. */
function loopIterations(): { now: () => number; stop: () => void } {
  let iteration = 0;
  let running = true;
  const tick = () => {
    iteration += 1;
    if (running) setImmediate(tick);
  };
  setImmediate(tick);
  return { now: () => iteration, stop: () => (running = false) };
}

describe('spawnTurn', () => {
  it('gives callers that ask together one event-loop iteration each, in the order asked', async () => {
    const loop = loopIterations();
    const turns: Array<{ caller: number; iteration: number }> = [];
    await Promise.all(
      Array.from({ length: 5 }, async (_, caller) => {
        await spawnTurn();
        turns.push({ caller, iteration: loop.now() });
      }),
    );
    loop.stop();
    expect(turns.map((t) => t.caller)).toEqual([0, 1, 2, 3, 4]);
    expect(new Set(turns.map((t) => t.iteration)).size).toBe(5);
  });

  it('rejects with the signal’s reason, whether aborted before asking or while waiting, and passes the turn on', async () => {
    const before = new AbortController();
    before.abort(new Error('gone already'));
    await expect(spawnTurn(before.signal)).rejects.toThrow('gone already');

    const waiting = new AbortController();
    const first = spawnTurn();
    const second = spawnTurn(waiting.signal);
    const third = spawnTurn();
    waiting.abort(new Error('stopped while waiting'));
    await expect(second).rejects.toThrow('stopped while waiting');
    await expect(first).resolves.toBeUndefined();
    await expect(third).resolves.toBeUndefined();
  });
});
