// A few spawns per event-loop turn. A spawn blocks the loop for its whole fork and exec (the
// parent waits until the child has exec'd), a few milliseconds on a quiet host and far more on a
// loaded one. The VMs of a start storm reach their spawn together, so without this a single turn
// ran dozens of spawns back to back: nothing else of the runtime (its API, other VMs' QMP) was
// served meanwhile. Taking turns costs no waiting (the next turn follows at once) and bounds every
// block of the loop a storm causes to SPAWNS_PER_TURN spawns. Not one per turn: each fork
// write-protects the Node process's memory, and the work done between two forks then pays page
// faults on every heap page it touches again (measured: about 0.5-1 ms of main-thread CPU per VM
// with one spawn per turn, against a few spawns together).

/** How many spawns one event-loop turn runs at most. */
export const SPAWNS_PER_TURN = 5;

const waiting: Array<() => void> = [];
let scheduled = false;

/**
 * Resolves in an event-loop turn shared with at most SPAWNS_PER_TURN - 1 other callers, in the
 * order asked; the caller spawns in the very continuation (no await in between), so that no
 * spawn runs outside its turn.
 */
export function spawnTurn(signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const onAbort = () => {
      const index = waiting.indexOf(take);
      if (index >= 0) waiting.splice(index, 1);
      reject(signal?.reason as Error);
    };
    const take = () => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    waiting.push(take);
    if (!scheduled) {
      scheduled = true;
      setImmediate(nextTurn);
    }
  });
}

/** Gives the next callers their turn; an immediate queued from here runs in the next loop iteration. */
function nextTurn(): void {
  for (const take of waiting.splice(0, SPAWNS_PER_TURN)) take();
  if (waiting.length > 0) setImmediate(nextTurn);
  else scheduled = false;
}
