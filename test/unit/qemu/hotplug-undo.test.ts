// The rollback stack multi-step hotplugs use: newest step first, a failing step logged and skipped
// over, each step undone once.
import { describe, expect, it } from 'vitest';
import { UndoStack } from '../../../src/qemu/hotplug/undo.ts';
import { loggedError, recordingLogger } from '../../helpers/hotplug-harness.ts';

describe('UndoStack', () => {
  it('undoes newest first, logs a failing step by name and carries on with the rest', async () => {
    const { logger, records } = recordingLogger();
    const undone: string[] = [];
    const undo = new UndoStack();
    undo.push('object-del', () => Promise.resolve(undone.push('object-del')));
    undo.push('blockdev-del', () => Promise.reject(new Error('node is busy')));
    undo.push('netdev_del', () => Promise.resolve(undone.push('netdev_del')));
    await undo.unwind(logger);
    expect(undone).toEqual(['netdev_del', 'object-del']);
    expect(records).toEqual([{ level: 'error', msg: 'rollback step failed', step: 'blockdev-del', err: loggedError('node is busy') }]);
  });

  it('logs nothing when every step succeeds, and a second unwind undoes nothing again', async () => {
    const { logger, records } = recordingLogger();
    let calls = 0;
    const undo = new UndoStack();
    undo.push('blockdev-del', () => Promise.resolve(calls++));
    await undo.unwind(logger);
    await undo.unwind(logger);
    expect(calls).toBe(1);
    expect(records).toEqual([]);
  });

  it('an empty stack unwinds without a word', async () => {
    const { logger, records } = recordingLogger();
    await new UndoStack().unwind(logger);
    expect(records).toEqual([]);
  });
});
