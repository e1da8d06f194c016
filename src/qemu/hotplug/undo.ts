// Rollback for multi-step hotplugs: each step that succeeds registers how to take it back, and a
// failure takes back everything already done, newest first, so QEMU is left as it was.
import type { Logger } from '../../util/logger.ts';

export class UndoStack {
  readonly #steps: { what: string; undo: () => Promise<unknown> }[] = [];

  push(what: string, undo: () => Promise<unknown>): void {
    this.#steps.push({ what, undo });
  }

  async unwind(logger: Logger): Promise<void> {
    for (const step of this.#steps.reverse()) {
      try {
        await step.undo();
      } catch (error) {
        // Best effort: report and carry on, the other steps still need undoing.
        logger.error({ err: error, step: step.what }, 'rollback step failed');
      }
    }
    this.#steps.length = 0;
  }
}
