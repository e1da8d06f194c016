import { describe, expect, it } from 'vitest';
import { SPAWNS_PER_TURN, spawnTurn } from '../../../src/qemu/process/spawn-turns.ts';

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
  it('gives callers that ask together their turns in the order asked, at most SPAWNS_PER_TURN to one event-loop iteration', async () => {
    const loop = loopIterations();
    const callers = 3 * SPAWNS_PER_TURN + 1;
    const turns: Array<{ caller: number; iteration: number }> = [];
    await Promise.all(
      Array.from({ length: callers }, async (_, caller) => {
        await spawnTurn();
        turns.push({ caller, iteration: loop.now() });
      }),
    );
    loop.stop();
    expect(turns.map((t) => t.caller)).toEqual(Array.from({ length: callers }, (_, i) => i));
    const perIteration = new Map<number, number>();
    for (const { iteration } of turns) perIteration.set(iteration, (perIteration.get(iteration) ?? 0) + 1);
    expect([...perIteration.values()]).toEqual([SPAWNS_PER_TURN, SPAWNS_PER_TURN, SPAWNS_PER_TURN, 1]);
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
