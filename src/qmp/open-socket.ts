// Opening QEMU's QMP socket: QEMU creates it a moment after it starts, so connecting polls until the
// socket accepts, and gives up at once when QEMU has exited (nobody will ever open it then).
import { connect as netConnect, type Socket } from 'node:net';
import { sleep, type Deadline } from '../util/deadline.ts';
import { QmpConnectError } from './errors.ts';

/** Errors that mean "QEMU is not listening yet": keep polling. */
const NOT_YET = new Set(['ENOENT', 'ECONNREFUSED', 'EAGAIN']);
/**
 * A flat, short interval: a refused unix connect costs microseconds, while QEMU's socket appears
 * 30-50 ms after spawn and each millisecond of lateness is start latency.
 */
const RETRY_MS = 5;

/** Watches the `exited` promise of the QEMU behind the socket (either outcome means it is gone). */
export class ExitWatch {
  /** Rejects with QmpConnectError once QEMU has exited; pending forever otherwise. */
  readonly failure: Promise<never>;

  constructor(socketPath: string, exited: Promise<unknown> | undefined) {
    this.failure = new Promise<never>((_, reject) => {
      const onExit = () => reject(new QmpConnectError(socketPath, 'QEMU exited before QMP was up'));
      void exited?.then(onExit, onExit);
    });
    // Raced only while connecting: once connected, QEMU exiting is none of connect()'s business.
    this.failure.catch(() => {});
  }
}

/** Polls until the socket accepts; fails at once if QEMU exits or the deadline passes. */
export async function openSocket(path: string, deadline: Deadline, exit: ExitWatch): Promise<Socket> {
  for (;;) {
    deadline.throwIfDone();
    const attempt = tryConnect(path);
    try {
      return await Promise.race([deadline.race(attempt), exit.failure]);
    } catch (error) {
      // A socket that connects after we gave up must not stay open: QEMU's monitor serves one client.
      void attempt.then(
        (socket) => socket.destroy(),
        () => {},
      );
      const code = (error as NodeJS.ErrnoException).code;
      if (code === undefined || !NOT_YET.has(code)) throw error;
    }
    await Promise.race([sleep(RETRY_MS, deadline.signal), exit.failure]);
  }
}

function tryConnect(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect(path);
    const onError = (error: Error) => {
      socket.destroy();
      reject(error);
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      resolve(socket);
    });
  });
}
