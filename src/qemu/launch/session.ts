// A launched (or adopted) VM's running parts: QEMU's process, its QMP connection, its helper
// daemons and its home. One place connects QMP, one watches for an unexpected end, and one tears
// everything down, in one order, once: QMP, QEMU, helpers, then the directory and the uid lease.
import type { Logger } from '../../util/logger.ts';
import { sleep, type Deadline } from '../../util/deadline.ts';
import { QmpClient, type QmpEvent } from '../../qmp/index.ts';
import type { HelperSet } from '../helpers/helper-set.ts';
import { AdoptedProcess, killAndWait, type ProcessExit, type VmmProcess } from '../process/vmm-process.ts';
import type { VmHome } from './home.ts';

export interface SessionOptions {
  logger: Logger;
  /** Default per-command timeout of every QMP connection this session opens. */
  commandTimeoutMs: number;
  /** Every QMP event, from whichever connection is current. */
  onQmpEvent: (event: QmpEvent) => void;
}

/** Why the VM ended when neither stopVM nor detach asked for it. */
export interface UnexpectedEnd {
  exit: ProcessExit;
  /** Set when a helper's death is what ended the VM. */
  helperFailure: string | undefined;
}

export class VmSession {
  readonly process: VmmProcess;
  readonly helpers: HelperSet;
  readonly home: VmHome;
  readonly #options: SessionOptions;
  #qmp: QmpClient | undefined;
  #connecting: Promise<QmpClient> | undefined;
  /** Set once teardown or detach has begun: an exit from then on is expected. */
  #ending = false;
  #helperFailure: string | undefined;
  #teardown: Promise<ProcessExit | undefined> | undefined;

  constructor(process: VmmProcess, helpers: HelperSet, home: VmHome, options: SessionOptions) {
    this.process = process;
    this.helpers = helpers;
    this.home = home;
    this.#options = options;
  }

  get ending(): boolean {
    return this.#ending;
  }

  get qmp(): QmpClient | undefined {
    return this.#qmp;
  }

  get helperFailure(): string | undefined {
    return this.#helperFailure;
  }

  /**
   * The QMP connection, opened or re-opened if it was lost while QEMU runs (QEMU's monitor takes a
   * new client once the old one is gone). Concurrent callers share one attempt.
   */
  connectQmp(options: { signal?: AbortSignal | undefined; timeoutMs?: number | undefined }): Promise<QmpClient> {
    const current = this.#qmp;
    if (current && !current.closed) return Promise.resolve(current);
    this.#connecting ??= (async () => {
      const qmp = await QmpClient.connect(this.home.paths.qmpSocket, {
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
        exited: this.process.exited,
        logger: this.#options.logger.child({ component: 'qmp' }),
        commandTimeoutMs: this.#options.commandTimeoutMs,
      });
      this.#qmp = qmp;
      // An adopted process is only polled: a closed QMP socket is the faster hint that it died.
      const proc = this.process;
      if (proc instanceof AdoptedProcess) qmp.onClose(() => proc.poke());
      qmp.on('*', this.#options.onQmpEvent);
      return qmp;
    })().finally(() => {
      this.#connecting = undefined;
    });
    return this.#connecting;
  }

  /** Reconnects under an operation's deadline (the attempt itself is shared and bounded on its own). */
  reconnect(deadline: Deadline, timeoutMs: number): Promise<QmpClient> {
    this.#options.logger.warn('the QMP connection was lost while QEMU runs: reconnecting');
    return deadline.race(this.connectQmp({ timeoutMs }));
  }

  /**
   * Calls `onEnd` once if QEMU ends, or a helper dies (QEMU is then killed: the guest's file system
   * would hang), before teardown or detach began.
   */
  watch(onEnd: (end: UnexpectedEnd) => void): void {
    const proc = this.process;
    this.helpers.watch((helper, exit) => {
      if (this.#ending || proc.hasExited) return;
      const how = exit.signal ? `was killed by ${exit.signal}` : `exited with status ${String(exit.exitCode)}`;
      this.#helperFailure = `${helper.name} for ${helper.deviceId} ${how}`;
      this.#options.logger.error({ helper: helper.name, device: helper.deviceId, ...exit, stderrTail: helper.stderrTail }, 'a helper daemon died: stopping the VM');
      proc.signal('SIGKILL');
    });
    void proc.exited.then((exit) => {
      if (!this.#ending) onEnd({ exit, helperFailure: this.#helperFailure });
    });
  }

  /** From now on an exit is expected (stopVM's polite steps come before teardown). */
  expectEnd(): void {
    this.#ending = true;
  }

  /**
   * Kills and reaps QEMU (if it still runs), stops the helpers, closes QMP, removes the directory
   * and releases the uid lease: in that order, once, whoever calls. Resolves with QEMU's exit, or
   * undefined if it survived SIGKILL (its uid then stays leased). `reason` is logged by the first call.
   */
  teardown(reason: string): Promise<ProcessExit | undefined> {
    this.#ending = true;
    this.#teardown ??= (async () => {
      this.#options.logger.debug({ reason }, 'tearing the VM down');
      const proc = this.process;
      const exit = proc.hasExited ? await proc.exited : await killAndWait(proc);
      if (!exit) this.#options.logger.error({ pid: proc.pid }, 'QEMU survived SIGKILL (stuck in the kernel?)');
      await this.helpers.stopAll();
      await this.#qmp?.close();
      await this.home.release(exit !== undefined, this.#options.logger);
      return exit;
    })();
    return this.#teardown;
  }

  /** Gives the VM up without stopping it (another process attaches): closes QMP, keeps everything else. */
  async detach(): Promise<void> {
    this.#ending = true;
    await this.#qmp?.close();
  }

  /**
   * Waits up to `ms` for QMP to close after QEMU exited: by then every event QEMU sent (its SHUTDOWN
   * with the reason) has been read.
   */
  async qmpDrained(ms: number): Promise<void> {
    const qmp = this.#qmp;
    if (!qmp || qmp.closed) return;
    let unsubscribe = () => {};
    const closed = new Promise<void>((resolve) => {
      unsubscribe = qmp.onClose(() => resolve());
    });
    const timer = new AbortController();
    try {
      await Promise.race([closed, sleep(ms, timer.signal).catch(() => {})]);
    } finally {
      unsubscribe();
      timer.abort();
    }
  }

  /** Waits up to `ms` for QEMU's exit to be reaped (a lost QMP connection usually means it is exiting). */
  async exitWithin(ms: number): Promise<ProcessExit | undefined> {
    return Promise.race([this.process.exited, sleep(ms).then(() => undefined)]);
  }
}
