// Sending a file descriptor with a QMP command. QEMU's getfd and add-fd take the fd that arrives
// (SCM_RIGHTS) with the command's bytes; Node's sockets cannot send ancillary data, so a small
// native helper (native/svmm-sendfd.c) is handed the QMP socket and the fd as its fds 3 and 4 and
// writes the command with sendmsg. The client holds its own writes meanwhile (client.ts).
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { builtHelperPath, nativeHelperProblem } from '../util/native-helper.ts';
import { QmpFdPassingError } from './errors.ts';

/** How the client sends a file descriptor with a command (SCM_RIGHTS), which Node's sockets cannot do. */
export interface FdSender {
  /** Writes `message` to `socket` with `fd` attached; resolves once all of it is in the socket. */
  send(socket: Socket, message: string, fd: number, command: string): Promise<void>;
}

/** Bounded: the helper's stderr is one line. */
const MAX_STDERR = 4096;

/** The default `FdSender`: runs the native helper `build/svmm-sendfd` on the socket's fd. */
export class NativeFdSender implements FdSender {
  constructor(readonly path: string) {}

  send(socket: Socket, message: string, fd: number, command: string): Promise<void> {
    return new Promise((resolve, reject) => {
      // No abort: a helper killed halfway would leave half a command in the QMP stream.
      const child = spawn(this.path, ['3', '4'], { stdio: ['pipe', 'ignore', 'pipe', socket, fd], env: {} });
      // Node pauses a stream it shares with a child; the client's reads must go on.
      socket.resume();
      let stderr = '';
      child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
        // Once full, the slice is empty.
        stderr += chunk.slice(0, MAX_STDERR - stderr.length);
      });
      child.stdin?.on('error', () => {});
      child.stdin?.end(message);
      child.once('error', (error) => reject(new QmpFdPassingError(command, `${this.path} could not run (${error.message})`, { cause: error })));
      child.once('close', (code, signal) => {
        if (code === 0) resolve();
        else reject(new QmpFdPassingError(command, stderr.trim() || `${this.path} exited with ${signal ?? `status ${String(code)}`}`));
      });
    });
  }
}

let defaultSender: FdSender | undefined;

/** build/svmm-sendfd of this package, checked as anything run as root is; QmpFdPassingError when unusable. */
export function defaultFdSender(command: string): FdSender {
  if (defaultSender) return defaultSender;
  return (defaultSender = checkedFdSender(builtHelperPath('svmm-sendfd'), command));
}

/**
 * A NativeFdSender for our own build of the helper at `path` (undefined: no package root was
 * found), or QmpFdPassingError naming `command` when it may not be run as root.
 */
export function checkedFdSender(path: string | undefined, command: string): NativeFdSender {
  if (path === undefined) throw new QmpFdPassingError(command, 'no sandbox-vmm package.json above this module, so build/svmm-sendfd cannot be found: pass fdSender');
  const problem = nativeHelperProblem('fd-passing helper', path, false);
  if (problem) throw new QmpFdPassingError(command, problem);
  return new NativeFdSender(path);
}
