// query-status's answer, checked: check() reports a VM healthy only for a run state QEMU can have,
// not for whatever a broken or compromised QEMU sends instead.
import { InvalidReplyError } from '../hypervisor/errors.ts';
import type { RunState } from '../qmp/types.ts';
import { RUN_STATES } from '../qmp/run-states.ts';
import { describeValue } from './reply-values.ts';

const COMMAND = 'query-status';

export { RUN_STATES };

const KNOWN = new Set<string>(RUN_STATES);

/**
 * The run state in query-status's reply, which must be an object whose `status` is a RunState and
 * whose `running` is a boolean. Throws InvalidReplyError (code INVALID_REPLY) naming the bad value
 * otherwise.
 */
export function parseRunState(reply: unknown): RunState {
  if (typeof reply !== 'object' || reply === null || Array.isArray(reply)) {
    throw new InvalidReplyError(COMMAND, `expected an object, got ${describeValue(reply)}`);
  }
  const fields = reply as Record<string, unknown>;
  const status = Object.hasOwn(fields, 'status') ? fields['status'] : undefined;
  if (typeof status !== 'string' || !KNOWN.has(status)) {
    throw new InvalidReplyError(COMMAND, `status is ${describeValue(status)}, not a known run state`);
  }
  const running = Object.hasOwn(fields, 'running') ? fields['running'] : undefined;
  if (typeof running !== 'boolean') {
    throw new InvalidReplyError(COMMAND, `running is ${describeValue(running)}, not a boolean`);
  }
  return status as RunState;
}
