// The state machine every backend shares: which operation may run in which state, and the
// bookkeeping that lets stopVM interrupt whatever is still pending.
import { Deadline, type OperationOptions } from '../util/deadline.ts';
import { resolveTimeoutMs } from '../util/timeout.ts';
import { InvalidArgumentError } from '../errors.ts';
import { InvalidStateError, VmStoppingError } from './errors.ts';
import type { SandboxConfig } from './config/index.ts';
import type { StartOptions, StopOptions, VmState } from './types.ts';

/**
 * How long an operation whose deadline passed may take to settle by itself (with its own, more
 * specific error) before it is cut off with the deadline's.
 */
const OWN_ERROR_GRACE_MS = 3_000;

export class Lifecycle {
  #state: VmState = 'new';
  #stopping = new AbortController();
  readonly #onChange: (from: VmState, to: VmState) => void;

  constructor(onChange: (from: VmState, to: VmState) => void = () => {}) {
    this.#onChange = onChange;
  }

  get state(): VmState {
    return this.#state;
  }

  require(operation: string, allowed: readonly VmState[]): void {
    if (!allowed.includes(this.#state)) throw new InvalidStateError(operation, this.#state, allowed);
  }

  to(next: VmState): void {
    const from = this.#state;
    if (from === next) return;
    this.#state = next;
    this.#onChange(from, next);
  }

  /**
   * Interrupts every pending operation and every later one: each rejects with the error `reason`
   * makes for it (VmStoppingError by default, VmExitedError when the hypervisor died).
   */
  interruptPending(reason: (operation: string) => Error = (operation) => new VmStoppingError(operation)): void {
    if (!this.#stopping.signal.aborted) this.#stopping.abort(reason);
  }

  /**
   * Runs `fn` if the state allows `operation`, under one deadline made of the caller's signal, its
   * timeout (or `defaultTimeoutMs`) and the VM stopping. `fn` must honour the signal it is given;
   * when it rejects soon after the deadline with an error of its own, that error is what the caller
   * gets.
   */
  async run<T>(
    operation: string,
    allowed: readonly VmState[],
    options: OperationOptions | undefined,
    defaultTimeoutMs: number | undefined,
    fn: (deadline: Deadline) => Promise<T>,
  ): Promise<T> {
    this.require(operation, allowed);
    const stopping = new AbortController();
    const onStop = () => stopping.abort((this.#stopping.signal.reason as (operation: string) => Error)(operation));
    if (this.#stopping.signal.aborted) onStop();
    else this.#stopping.signal.addEventListener('abort', onStop, { once: true });
    const deadline = new Deadline(operation, options, defaultTimeoutMs, [stopping.signal]);
    try {
      deadline.throwIfDone();
      return await deadline.settle(fn(deadline), OWN_ERROR_GRACE_MS);
    } finally {
      deadline.dispose();
      this.#stopping.signal.removeEventListener('abort', onStop);
    }
  }
}

/** What is wrong with stopVM's bounds, if anything: stopVM rejects with it before doing anything. */
export function stopOptionsProblem(options: StopOptions): InvalidArgumentError | undefined {
  try {
    resolveTimeoutMs(options.timeoutMs, undefined);
    resolveTimeoutMs(options.gracefulTimeoutMs, undefined, 'gracefulTimeoutMs');
    return undefined;
  } catch (error) {
    if (error instanceof InvalidArgumentError) return error;
    throw error;
  }
}

/**
 * What is wrong with startVM's `waitForChannel`, if anything: it must be the device id of a channel
 * in the config, and the guest must run to open it.
 */
export function startOptionsProblem(options: StartOptions, config: SandboxConfig): InvalidArgumentError | undefined {
  const channel = options.waitForChannel;
  if (channel === undefined) return undefined;
  const channels = config.devices.filter((d) => d.type === 'channel').map((d) => d.id);
  if (!channels.includes(channel)) {
    const known = channels.length > 0 ? `the config's channels are ${channels.map((id) => `'${id}'`).join(', ')}` : 'the config has no channel device';
    return new InvalidArgumentError('waitForChannel', `'${channel}' is not the device id of a channel (${known})`);
  }
  if (options.paused === true) return new InvalidArgumentError('waitForChannel', 'a paused guest opens no channel: leave out paused, or wait after resumeVM with waitForEvent');
  return undefined;
}
