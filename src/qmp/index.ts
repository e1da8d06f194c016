/**
 * The QMP client on its own, usable against any QEMU: `import { QmpClient } from 'sandbox-vmm/qmp'`.
 * @module sandbox-vmm/qmp
 */
export { MAX_IN_BAND_IN_FLIGHT, QmpClient, type QmpConnectOptions, type QmpExecuteOptions } from './client.ts';
// What the client rejects with besides its own errors (a command's timeout is QmpTimeoutError; the
// connect's and waitForEvent's deadlines, an abort and a bad option are these), and their root.
export {
  InvalidArgumentError,
  isSandboxVmmError,
  OperationAbortedError,
  OperationTimeoutError,
  SandboxVmmError,
  type SandboxVmmErrorCode,
  type SandboxVmmErrorOptions,
} from '../errors.ts';
export { QmpCommandError, QmpConnectError, QmpDisconnectedError, QmpFdPassingError, QmpProtocolError, QmpTimeoutError } from './errors.ts';
export { NativeFdSender, type FdSender } from './fd-sender.ts';
export type { ArmedEvent, QmpEventListener, WaitForEventOptions } from './events.ts';
export { MAX_BUFFERED_EVENT_BYTES, MAX_BUFFERED_EVENTS, type EventStreamOptions } from './event-stream.ts';
export { DEFAULT_MAX_LINE_BYTES, LineSplitter } from './framing.ts';
export type * from './types.ts';
