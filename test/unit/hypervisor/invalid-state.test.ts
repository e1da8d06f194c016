import { describe, expect, it } from 'vitest';
import { InvalidStateError } from '../../../src/hypervisor/errors.ts';
import type { VmState } from '../../../src/hypervisor/types.ts';

const RUNNING: readonly VmState[] = ['running', 'paused'];

describe('InvalidStateError', () => {
  it.each([
    ['hotplugAddDevice', 'new', RUNNING, 'hotplugAddDevice is not allowed while the VM is new (allowed: running, paused): call createVM first'],
    ['startVM', 'new', ['created'], 'startVM is not allowed while the VM is new (allowed: created): call createVM first'],
    ['resizeMemory', 'created', RUNNING, 'resizeMemory is not allowed while the VM is created (allowed: running, paused): call startVM first'],
    ['pauseVM', 'created', ['running'], 'pauseVM is not allowed while the VM is created (allowed: running): call startVM first'],
    ['check', 'starting', RUNNING, 'check is not allowed while the VM is starting (allowed: running, paused): wait for startVM to resolve'],
    ['resumeVM', 'running', ['paused'], 'resumeVM is not allowed while the VM is running (allowed: paused): call pauseVM first'],
    ['pauseVM', 'paused', ['running'], 'pauseVM is not allowed while the VM is paused (allowed: running): call resumeVM first'],
    ['createVM', 'created', ['new'], 'createVM is not allowed while the VM is created (allowed: new): createVM was already called; an instance is single-use (one VM, once): create a new instance for another VM'],
    ['startVM', 'stopped', ['created'], 'startVM is not allowed while the VM is stopped (allowed: created): an instance is single-use (one VM, once): create a new instance for another VM'],
    ['hotplugAddDevice', 'stopping', RUNNING, 'hotplugAddDevice is not allowed while the VM is stopping (allowed: running, paused): an instance is single-use (one VM, once): create a new instance for another VM'],
  ] as const)('%s while %s says what to call first', (operation, state, allowed, message) => {
    const error = new InvalidStateError(operation, state, allowed);
    expect(error).toMatchObject({ code: 'INVALID_STATE', operation, state, message });
  });
});
