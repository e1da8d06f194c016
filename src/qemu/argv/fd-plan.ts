// The file descriptors QEMU finds at start, numbered from 3 in the order the builder asks for them:
// a caller's fd passed through (a tap), or a listening socket the launcher creates as root in the
// VM's root-owned directory. QEMU then never creates, and root never follows, a socket file QEMU
// could have replaced.
import type { LaunchFd } from '../launch/launcher.ts';

const FIRST_FD = 3;

export class FdPlan {
  readonly #fds: LaunchFd[] = [];

  /** Hands QEMU our fd `from`; returns the number QEMU knows it by. */
  inherit(from: number): number {
    const fd = this.#next();
    this.#fds.push({ fd, kind: 'inherit', from });
    return fd;
  }

  /** A listening unix socket at `path`, created before QEMU runs; returns QEMU's fd number. */
  listen(path: string): number {
    const fd = this.#next();
    this.#fds.push({ fd, kind: 'listen', path });
    return fd;
  }

  get fds(): readonly LaunchFd[] {
    return this.#fds;
  }

  #next(): number {
    return FIRST_FD + this.#fds.length;
  }
}

/**
 * `argv` with our fd `from` handed to QEMU after every fd it already finds (a template's state or
 * RAM added to a built command line); returns the number QEMU knows it by.
 */
export function inheritAfter<A extends { fds: readonly LaunchFd[] }>(argv: A, from: number): { argv: A; fd: number } {
  const fd = Math.max(FIRST_FD - 1, ...argv.fds.map((entry) => entry.fd)) + 1;
  return { argv: { ...argv, fds: [...argv.fds, { fd, kind: 'inherit', from }] }, fd };
}
