// Errors of the QMP client. Each has a stable `code`; the cause of a disconnect or a protocol
// failure is kept in `cause`.
import { SandboxVmmError, type SandboxVmmErrorOptions } from '../errors.ts';

/** QEMU answered a command with an error object. */
export class QmpCommandError extends SandboxVmmError<'QMP_COMMAND_FAILED'> {
  readonly command: string;
  /** QMP's error class, e.g. GenericError, CommandNotFound, DeviceNotFound. */
  readonly errorClass: string;
  readonly desc: string;

  constructor(command: string, errorClass: string, desc: string) {
    super('QMP_COMMAND_FAILED', `QMP command ${command} failed: ${desc} (${errorClass})`);
    this.command = command;
    this.errorClass = errorClass;
    this.desc = desc;
  }
}

/**
 * No reply within the command's timeout. The client stays usable; a late reply is dropped. When
 * QEMU sent an error without an id after the command was written (it could not read some input),
 * the latest such error is the `cause`: a QmpCommandError whose `command` is '(no id)'.
 */
export class QmpTimeoutError extends SandboxVmmError<'QMP_TIMEOUT'> {
  readonly command: string;
  readonly timeoutMs: number;

  constructor(command: string, timeoutMs: number, options: { cause?: QmpCommandError | undefined } = {}) {
    const meanwhile = options.cause ? ` (meanwhile QEMU reported an error without an id: ${options.cause.desc})` : '';
    super('QMP_TIMEOUT', `QMP command ${command} got no reply within ${timeoutMs} ms${meanwhile}`, options.cause ? { cause: options.cause } : {});
    this.command = command;
    this.timeoutMs = timeoutMs;
  }
}

/** The connection is gone (socket closed, QEMU exited, close() called): pending commands fail with this. */
export class QmpDisconnectedError extends SandboxVmmError<'QMP_DISCONNECTED'> {
  /** The command that could not complete, when there was one. */
  readonly command: string | undefined;

  constructor(reason: string, options: SandboxVmmErrorOptions & { command?: string } = {}) {
    super('QMP_DISCONNECTED', options.command ? `QMP command ${options.command} failed: ${reason}` : reason, options);
    this.command = options.command;
  }
}

/**
 * The peer broke the protocol: a bad greeting, a line that is not JSON, a line over the size cap
 * (the connection is dropped); or a reply with neither `return` nor `error` (only that command
 * fails, the connection stays).
 */
export class QmpProtocolError extends SandboxVmmError<'QMP_PROTOCOL'> {
  constructor(message: string, options: SandboxVmmErrorOptions = {}) {
    super('QMP_PROTOCOL', message, options);
  }
}

/** The socket never accepted a connection (or the QEMU behind it exited first). */
export class QmpConnectError extends SandboxVmmError<'QMP_CONNECT_FAILED'> {
  readonly socketPath: string;

  constructor(socketPath: string, reason: string, options: SandboxVmmErrorOptions = {}) {
    super('QMP_CONNECT_FAILED', `cannot connect to QMP at ${socketPath}: ${reason}`, options);
    this.socketPath = socketPath;
  }
}

/**
 * A file descriptor could not be sent with a command (SCM_RIGHTS through build/svmm-sendfd): the
 * helper is not built, or sending failed. Nothing of the command reached QEMU unless `partial`.
 */
export class QmpFdPassingError extends SandboxVmmError<'QMP_FD_PASSING_FAILED'> {
  readonly command: string;

  constructor(command: string, reason: string, options: SandboxVmmErrorOptions = {}) {
    super('QMP_FD_PASSING_FAILED', `cannot send an fd with QMP command ${command}: ${reason}`, options);
    this.command = command;
  }
}
