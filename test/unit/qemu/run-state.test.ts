// query-status's reply is checked: check() may call a VM healthy only for a run state QEMU can have.
import { describe, expect, it } from 'vitest';
import { InvalidReplyError } from '../../../src/hypervisor/errors.ts';
import { parseRunState, RUN_STATES } from '../../../src/qemu/run-state.ts';

function invalid(reply: unknown): InvalidReplyError {
  try {
    parseRunState(reply);
  } catch (error) {
    expect(error).toBeInstanceOf(InvalidReplyError);
    expect((error as InvalidReplyError).code).toBe('INVALID_REPLY');
    expect((error as InvalidReplyError).command).toBe('query-status');
    return error as InvalidReplyError;
  }
  throw new Error('the reply was accepted');
}

describe('parseRunState', () => {
  it('returns the status of a well-formed reply, for every run state', () => {
    expect(parseRunState({ status: 'running', running: true, singlestep: false })).toBe('running');
    for (const status of RUN_STATES) expect(parseRunState({ status, running: status === 'running' })).toBe(status);
    expect(RUN_STATES).toHaveLength(16);
  });

  it.each([
    ['a nested array', [[['running']]], 'expected an object, got an array of 1'],
    ['an array holding a valid reply', [{ status: 'running', running: true }], 'expected an object, got an array of 1'],
    ['null', null, 'expected an object, got null'],
    ['a string', 'running', 'expected an object, got "running"'],
    ['a number', 1, 'expected an object, got 1'],
    ['an empty object', {}, 'status is missing, not a known run state'],
    ['an unknown status', { status: 'healthy', running: true }, 'status is "healthy", not a known run state'],
    ['a status in another case', { status: 'Running', running: true }, 'status is "Running"'],
    ['a nested array as status', { status: [['running']], running: true }, 'status is an array of 1'],
    ['an object as status', { status: { status: 'running' }, running: true }, 'status is an object'],
    ['a numeric status', { status: 9, running: true }, 'status is 9'],
    ['an inherited property name', { status: 'toString', running: true }, 'status is "toString"'],
    ['a missing running', { status: 'running' }, 'running is missing, not a boolean'],
    ['a string running', { status: 'running', running: 'true' }, 'running is "true", not a boolean'],
    ['a numeric running', { status: 'paused', running: 0 }, 'running is 0, not a boolean'],
  ])('refuses %s', (_, reply, message) => {
    const error = invalid(reply);
    expect(error.message).toContain(`the hypervisor's reply to query-status is invalid: ${message}`);
  });

  it('ignores an inherited status', () => {
    const reply = Object.create({ status: 'running', running: true }) as object;
    expect(invalid(reply).message).toContain('status is missing');
  });
});
