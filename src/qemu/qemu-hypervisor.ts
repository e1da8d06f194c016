// The QEMU backend of the Hypervisor interface: the argv builder, the process launcher and the QMP
// client put together, with a state machine around them and cleanup on every path.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { Logger } from '../util/logger.ts';
import { silentLogger } from '../util/logger.ts';
import { Deadline, sleep, type OperationOptions } from '../util/deadline.ts';
import { ConfigError, parseSandboxConfig, type SandboxConfig, type SandboxConfigInput } from '../hypervisor/config/index.ts';
import {
  AttachError,
  InvalidStateError,
  VmExitedError,
  VmStartError,
  VmStoppingError,
  VmUnhealthyError,
  describeExit,
} from '../hypervisor/errors.ts';
import { Lifecycle } from '../hypervisor/lifecycle.ts';
import type {
  HotplugDevice,
  HotplugResult,
  Hypervisor,
  HypervisorCapabilities,
  HypervisorEvent,
  MemoryResizeResult,
  PluggedDevice,
  StartOptions,
  StopOptions,
  VcpuResizeResult,
  VcpuThreadIds,
  VmExitInfo,
  VmState,
} from '../hypervisor/types.ts';
import { QmpClient, QmpConnectError, QmpDisconnectedError, QmpProtocolError, type QmpEvent, type RunState } from '../qmp/index.ts';
import { buildQemuArgv } from './argv/index.ts';
import { AdoptedProcess, killAndWait, SpawnedProcess, type DropPrivileges, type ProcessExit, type VmmProcess } from './process/vmm-process.ts';
import { isProcessAlive } from './process/proc-fs.ts';
import { createRuntimeDir, defaultRuntimeBase, removeRuntimeDir, resolveQemuUser } from './runtime-dir.ts';
import { checkSocketPaths, runtimePaths, type RuntimePaths } from './runtime-paths.ts';
import { readStateFile, writeStateFile, STATE_FILE_VERSION } from './state-file.ts';
import { emptyHotplugState, type HotplugState } from './hotplug/state.ts';
import { hotplugDevice, unplugDevice } from './hotplug/devices.ts';
import type { HotplugContext } from './hotplug/context.ts';
import { resizeVcpus } from './hotplug/cpus.ts';
import { resizeMemory } from './hotplug/memory.ts';
import { HelperSet } from './helpers/helper-set.ts';
import { vcpuUnplugAllowed } from '../hypervisor/resources.ts';

export interface QemuHypervisorOptions {
  /** pino logger; each VM logs through a child carrying its id. Silent by default. */
  logger?: Logger;
  /** Default timeout of operations that were given none. */
  defaultTimeoutMs?: number;
  /** How long a removal waits for the guest to release a device. */
  deviceRemovalTimeoutMs?: number;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const QUIT_WAIT_MS = 3_000;
const RECONNECT_TIMEOUT_MS = 5_000;
const ONE_VM_PER_INSTANCE = 'createVM was already called; an instance drives one VM, create another instance for another VM';
/** How long a lost QMP connection waits for QEMU's exit to be reaped before calling it something else. */
const EXIT_GRACE_MS = 1_000;
/** Run states a healthy sandbox is never in. */
const UNHEALTHY_RUN_STATES: ReadonlySet<RunState> = new Set(['guest-panicked', 'internal-error', 'io-error', 'shutdown', 'watchdog']);
const STDERR_FILE = 'qemu.stderr';

export class QemuHypervisor implements Hypervisor {
  readonly kind = 'qemu';
  readonly #logger: Logger;
  readonly #defaultTimeoutMs: number;
  readonly #removalTimeoutMs: number;
  #log: Logger;
  readonly #lifecycle: Lifecycle;
  #config: SandboxConfig | undefined;
  #paths: RuntimePaths | undefined;
  #argv: { args: string[]; passFds: number[] } | undefined;
  #user: DropPrivileges | undefined;
  #process: VmmProcess | undefined;
  #qmp: QmpClient | undefined;
  #reconnecting: Promise<QmpClient> | undefined;
  #hotplug: HotplugState = emptyHotplugState();
  #helpers = new HelperSet();
  /**
   * QEMU's run state leaves guest-panicked on `cont`, but the guest kernel is still dead: once a
   * panic is seen, the VM stays unhealthy until it is stopped.
   */
  #guestPanicked = false;
  /** Set when a helper daemon's death is what ended the VM. */
  #helperFailure: string | undefined;
  #exitInfo: VmExitInfo | undefined;
  #stopPromise: Promise<void> | undefined;
  #expectingExit = false;
  readonly #exitListeners = new Set<(info: VmExitInfo) => void>();
  readonly #eventListeners = new Set<(event: HypervisorEvent) => void>();

  constructor(options: QemuHypervisorOptions = {}) {
    this.#logger = options.logger ?? silentLogger;
    this.#log = this.#logger;
    this.#defaultTimeoutMs = options.defaultTimeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#removalTimeoutMs = options.deviceRemovalTimeoutMs ?? 10_000;
    this.#lifecycle = new Lifecycle((from, to) => this.#log.info({ from, to }, 'vm state'));
  }

  get id(): string | undefined {
    return this.#config?.id;
  }

  get state(): VmState {
    return this.#lifecycle.state;
  }

  get config(): SandboxConfig | undefined {
    return this.#config;
  }

  get exitInfo(): VmExitInfo | undefined {
    return this.#exitInfo;
  }

  /** The VM's runtime directory (sockets, pidfile, saved state); undefined before createVM. */
  get runtimeDir(): string | undefined {
    return this.#paths?.dir;
  }

  /** QEMU's pid while it runs. */
  get pid(): number | undefined {
    return this.#process && !this.#process.hasExited ? this.#process.pid : undefined;
  }

  // ---------------------------------------------------------------- lifecycle

  /** Synchronous work, behind the interface's promise: a bad config rejects, it never throws. */
  createVM(input: SandboxConfigInput, _options?: OperationOptions): Promise<void> {
    return new Promise((resolve) => {
      this.#create(input);
      resolve();
    });
  }

  #create(input: SandboxConfigInput): void {
    this.#lifecycle.require('createVM', ['created']);
    if (this.#config) throw new InvalidStateError('createVM', this.state, [], ONE_VM_PER_INSTANCE);
    const config = parseSandboxConfig(input);
    const dir = config.runtime.dir ?? join(defaultRuntimeBase(), config.id);
    const paths = runtimePaths(dir);
    checkSocketPaths(config, paths, config.runtime.dir === undefined);
    const argv = buildQemuArgv(config, paths);
    const user = resolveQemuUser(config.hardening.user, config.machine.accel);
    try {
      createRuntimeDir(dir, user);
    } catch (error) {
      throw new ConfigError([{ path: 'runtime.dir', message: (error as Error).message }]);
    }
    this.#config = config;
    this.#paths = paths;
    this.#argv = argv;
    this.#user = user;
    this.#log = this.#logger.child({ vmId: config.id });
    this.#log.debug({ argv: argv.args, runtimeDir: dir, user }, 'vm created');
  }

  async startVM(options: StartOptions = {}): Promise<void> {
    this.#lifecycle.require('startVM', ['created']);
    const config = this.#config;
    const paths = this.#paths;
    const argv = this.#argv;
    if (!config || !paths || !argv) throw new VmStartError('createVM was not called');
    this.#lifecycle.to('starting');
    try {
      await this.#lifecycle.run('startVM', ['starting'], options, this.#defaultTimeoutMs, async (deadline) => {
        // Helpers first: QEMU connects to their sockets as it starts.
        await this.#helpers.startAll(config, paths, this.#user, this.#log, deadline.signal);
        const proc = SpawnedProcess.spawn({
          file: config.runtime.qemuPath,
          args: argv.args,
          passFds: argv.passFds,
          user: this.#user,
          detached: config.runtime.detached,
          stderrFile: join(paths.dir, STDERR_FILE),
          logger: this.#log,
        });
        this.#process = proc;
        this.#log.debug({ pid: proc.pid }, 'qemu spawned');
        const qmp = await QmpClient.connect(paths.qmpSocket, {
          signal: deadline.signal,
          exited: proc.exited,
          logger: this.#log.child({ component: 'qmp' }),
          commandTimeoutMs: this.#defaultTimeoutMs,
        });
        this.#attachQmp(qmp);
        if (!options.paused) await qmp.execute('cont', undefined, { signal: deadline.signal });
        this.#saveState(options.paused === true);
      });
    } catch (error) {
      await this.#failStart(error);
    }
    this.#watchExit();
    // stopVM may have begun the moment start finished; it owns the state from then on.
    if (this.state === 'starting') this.#lifecycle.to(options.paused ? 'paused' : 'running');
  }

  /** Kills and reaps QEMU, removes the runtime directory, and throws a VmStartError that says why. */
  async #failStart(error: unknown): Promise<never> {
    const proc = this.#process;
    this.#expectingExit = true;
    // Whether QEMU ended on its own (a rejected command line, a crash, someone's SIGKILL) must be
    // read before we kill it ourselves. A lost QMP connection usually means QEMU is exiting: give
    // the reaper a moment to see it.
    if (proc && !proc.hasExited && isConnectionLoss(error)) await Promise.race([proc.exited, sleep(EXIT_GRACE_MS)]);
    const exitedOnItsOwn = proc?.hasExited === true;
    await this.#qmp?.close();
    const exit = proc ? await killAndWait(proc) : undefined;
    await this.#helpers.stopAll();
    const stderrTail = proc?.stderrTail() ?? '';
    if (this.#paths) removeRuntimeDir(this.#paths.dir);
    this.#exitInfo = { expected: !exitedOnItsOwn, exitCode: exit?.exitCode, signal: exit?.signal, stderrTail };
    this.#lifecycle.to('stopped');
    // QEMU's own exit says more than the QMP error it caused.
    const reason = exitedOnItsOwn ? 'QEMU exited during start' : error instanceof Error ? error.message : String(error);
    this.#log.warn({ err: error, stderrTail }, 'vm start failed');
    throw new VmStartError(reason, {
      exitCode: exitedOnItsOwn ? exit?.exitCode : undefined,
      signal: exitedOnItsOwn ? exit?.signal : undefined,
      stderrTail,
      cause: error,
    });
  }

  #attachQmp(qmp: QmpClient): void {
    this.#qmp = qmp;
    // An adopted process is only polled: a closed QMP socket is the faster hint that it died.
    const proc = this.#process;
    if (proc instanceof AdoptedProcess) qmp.onClose(() => proc.poke());
    qmp.on('*', (event: QmpEvent) => {
      this.#log.debug({ event: event.event, data: event.data }, 'qmp event');
      if (event.event === 'GUEST_PANICKED') this.#guestPanicked = true;
      for (const listener of this.#eventListeners) {
        try {
          listener({ name: event.event, data: event.data });
        } catch (error) {
          this.#log.warn({ err: error }, 'event listener threw');
        }
      }
    });
  }

  /** Learns of QEMU ending without stopVM and cleans up after it. */
  #watchExit(): void {
    const proc = this.#process;
    if (!proc) return;
    this.#helpers.watch((helper, exit) => {
      if (this.#expectingExit || proc.hasExited) return;
      const how = exit.signal ? `was killed by ${exit.signal}` : `exited with status ${String(exit.exitCode)}`;
      this.#helperFailure = `${helper.name} for ${helper.deviceId} ${how}`;
      this.#log.error({ helper: helper.name, device: helper.deviceId, ...exit, stderrTail: helper.stderrTail }, 'a helper daemon died: stopping the VM');
      proc.signal('SIGKILL');
    });
    void proc.exited.then(async (exit) => {
      if (this.#expectingExit) return;
      const info: VmExitInfo = { expected: false, ...this.#exitDetails(proc, exit) };
      this.#exitInfo = info;
      this.#log.error(info, 'qemu exited unexpectedly');
      this.#lifecycle.interruptPending((operation) => new VmExitedError(operation, info));
      void this.#qmp?.close();
      await this.#helpers.stopAll();
      if (this.#paths) removeRuntimeDir(this.#paths.dir);
      this.#lifecycle.to('stopped');
      for (const listener of this.#exitListeners) {
        try {
          listener(info);
        } catch (error) {
          this.#log.warn({ err: error }, 'exit listener threw');
        }
      }
    });
  }

  stopVM(options: StopOptions = {}): Promise<void> {
    this.#stopPromise ??= this.#stop(options).finally(() => this.#lifecycle.to('stopped'));
    return this.#stopPromise;
  }

  async #stop(options: StopOptions): Promise<void> {
    const proc = this.#process;
    const alive = proc !== undefined && !proc.hasExited && this.state !== 'stopped';
    this.#expectingExit = true;
    this.#lifecycle.interruptPending();
    this.#lifecycle.to('stopping');
    if (alive) {
      // The polite steps share the caller's bound; past it, or when they fail, QEMU is killed.
      const polite = new Deadline('stopVM', options);
      try {
        const graceMs = options.gracefulTimeoutMs ?? 0;
        if (graceMs > 0) await this.#askToExit(proc, 'system_powerdown', graceMs, polite.signal);
        if (!proc.hasExited) await this.#askToExit(proc, 'quit', QUIT_WAIT_MS, polite.signal);
      } finally {
        polite.dispose();
      }
      const exit = proc.hasExited ? await proc.exited : await killAndWait(proc);
      if (!exit) this.#log.error({ pid: proc.pid }, 'QEMU survived SIGKILL (stuck in the kernel?)');
      this.#exitInfo ??= { expected: true, exitCode: exit?.exitCode, signal: exit?.signal, stderrTail: proc.stderrTail() };
    }
    await this.#helpers.stopAll();
    await this.#qmp?.close();
    if (this.#paths) removeRuntimeDir(this.#paths.dir);
    this.#log.info('vm stopped');
  }

  /**
   * Sends `command` and waits up to `waitMs` for QEMU to exit. A refused or unsendable command ends
   * the wait at once. QEMU may reset the socket after quit before replying: the client counts that
   * as the reply.
   */
  async #askToExit(proc: VmmProcess, command: 'system_powerdown' | 'quit', waitMs: number, signal: AbortSignal): Promise<void> {
    const qmp = this.#qmp;
    if (!qmp || qmp.closed || signal.aborted) return;
    const refused = qmp.execute(command, undefined, { timeoutMs: waitMs, signal }).then(
      () => new Promise<void>(() => {}),
      (error: unknown) => this.#log.debug({ err: error, command }, 'QEMU did not take the request to exit'),
    );
    await Promise.race([proc.exited, sleep(waitMs, signal).catch(() => {}), refused]);
  }

  pauseVM(options?: OperationOptions): Promise<void> {
    return this.#run('pauseVM', ['running'], options, async (qmp, deadline) => {
      await qmp.execute('stop', undefined, { signal: deadline.signal });
      this.#lifecycle.to('paused');
      this.#saveState(true);
    });
  }

  resumeVM(options?: OperationOptions): Promise<void> {
    return this.#run('resumeVM', ['paused'], options, async (qmp, deadline) => {
      await qmp.execute('cont', undefined, { signal: deadline.signal });
      this.#lifecycle.to('running');
      this.#saveState(false);
    });
  }

  /**
   * Gives up control without stopping the VM: closes QMP (QEMU serves one client at a time) so that
   * another process can attach. An owner-bound QEMU still dies when this Node process does.
   */
  async detach(): Promise<void> {
    this.#lifecycle.require('detach', ['running', 'paused']);
    this.#expectingExit = true;
    this.#lifecycle.interruptPending();
    await this.#qmp?.close();
    this.#process = undefined;
    this.#lifecycle.to('stopped');
  }

  /** Takes over a running VM from its runtime directory, as a restarted runtime must. */
  static async attach(runtimeDir: string, options: QemuHypervisorOptions & OperationOptions = {}): Promise<QemuHypervisor> {
    const paths = runtimePaths(runtimeDir);
    if (!existsSync(paths.stateFile)) throw new AttachError(runtimeDir, 'no state file (was the VM started?)');
    let saved;
    try {
      saved = readStateFile(paths.stateFile);
    } catch (error) {
      throw new AttachError(runtimeDir, 'the state file is unreadable', { cause: error });
    }
    if (!isProcessAlive(saved.pid, saved.startTime)) {
      throw new AttachError(runtimeDir, `QEMU (pid ${saved.pid}) is no longer running`);
    }
    const vm = new QemuHypervisor(options);
    vm.#config = saved.config;
    vm.#paths = paths;
    vm.#user = saved.user;
    vm.#hotplug = saved.hotplug;
    vm.#helpers = HelperSet.adopt(saved.helpers, paths);
    vm.#log = vm.#logger.child({ vmId: saved.id });
    const proc = new AdoptedProcess(saved.pid, saved.startTime, join(runtimeDir, STDERR_FILE));
    vm.#process = proc;
    try {
      const qmp = await QmpClient.connect(paths.qmpSocket, {
        timeoutMs: options.timeoutMs ?? 10_000,
        ...(options.signal ? { signal: options.signal } : {}),
        exited: proc.exited,
        logger: vm.#log.child({ component: 'qmp' }),
      });
      vm.#attachQmp(qmp);
      const status = await qmp.execute('query-status');
      vm.#lifecycle.to('starting');
      vm.#lifecycle.to(status.running ? 'running' : 'paused');
    } catch (error) {
      await vm.#qmp?.close();
      throw new AttachError(runtimeDir, 'QMP did not answer', { cause: error });
    }
    vm.#watchExit();
    vm.#log.info({ pid: saved.pid }, 'attached');
    return vm;
  }

  // ---------------------------------------------------------------- queries

  /** QEMU's pid first, then its helper daemons' (virtiofsd), as Kata's GetPids. */
  getPids(): number[] {
    const pid = this.pid;
    return pid === undefined ? [] : [pid, ...this.#helpers.pids()];
  }

  getThreadIds(options?: OperationOptions): Promise<VcpuThreadIds> {
    return this.#run('getThreadIds', ['running', 'paused'], options, async (qmp, deadline) => {
      const cpus = await qmp.execute('query-cpus-fast', undefined, { signal: deadline.signal });
      return new Map(cpus.map((cpu) => [cpu['cpu-index'], cpu['thread-id']]));
    });
  }

  /** Health as Kata's monitor polls it: any failure to get a sane run state is a VmUnhealthyError. */
  async check(options?: OperationOptions): Promise<void> {
    if (this.#exitInfo && !this.#exitInfo.expected) {
      throw new VmUnhealthyError(`the hypervisor ${describeExit(this.#exitInfo)}`);
    }
    let status: RunState;
    try {
      status = await this.#run('check', ['running', 'paused'], options, async (qmp, deadline) => {
        return (await qmp.execute('query-status', undefined, { signal: deadline.signal })).status;
      });
    } catch (error) {
      if (error instanceof InvalidStateError) throw error;
      const why = error instanceof VmExitedError ? 'the hypervisor exited' : error instanceof VmStoppingError ? 'the VM is stopping' : 'QMP does not answer';
      throw new VmUnhealthyError(why, { cause: error });
    }
    if (UNHEALTHY_RUN_STATES.has(status)) throw new VmUnhealthyError(status);
    if (this.#guestPanicked) throw new VmUnhealthyError('guest-panicked');
  }

  capabilities(): HypervisorCapabilities {
    const hotplug = this.#config?.memory.hotplug ?? 'none';
    return {
      blockHotplug: true,
      netHotplug: true,
      vfioHotplug: true,
      cpuHotplug: true,
      cpuHotUnplug: this.#config ? vcpuUnplugAllowed(this.#config) : true,
      memoryHotplug: hotplug !== 'none',
      memoryHotUnplug: hotplug === 'virtio-mem',
      fsSharing: true,
      pause: true,
      reattach: true,
    };
  }

  devices(): PluggedDevice[] {
    const cold: PluggedDevice[] = (this.#config?.devices ?? []).map((d) => ({ id: d.id, type: d.type, hotplugged: false }));
    const hot: PluggedDevice[] = this.#hotplug.devices.map((d) => ({ id: d.id, type: d.device.type, hotplugged: true, bus: d.bus }));
    return [...cold, ...hot];
  }

  onExit(listener: (info: VmExitInfo) => void): () => void {
    this.#exitListeners.add(listener);
    return () => this.#exitListeners.delete(listener);
  }

  onEvent(listener: (event: HypervisorEvent) => void): () => void {
    this.#eventListeners.add(listener);
    return () => this.#eventListeners.delete(listener);
  }

  // ---------------------------------------------------------------- hotplug and resize

  hotplugAddDevice(device: HotplugDevice, options?: OperationOptions): Promise<HotplugResult> {
    return this.#run('hotplugAddDevice', ['running', 'paused'], options, async (qmp, deadline) => {
      const result = await hotplugDevice(this.#hotplugContext(qmp, deadline), device);
      this.#saveState();
      return result;
    });
  }

  hotplugRemoveDevice(id: string, options?: OperationOptions): Promise<void> {
    return this.#run('hotplugRemoveDevice', ['running', 'paused'], options, async (qmp, deadline) => {
      try {
        await unplugDevice(this.#hotplugContext(qmp, deadline), id);
      } finally {
        this.#saveState();
      }
    });
  }

  resizeMemory(targetMiB: number, options?: OperationOptions): Promise<MemoryResizeResult> {
    return this.#run('resizeMemory', ['running', 'paused'], options, async (qmp, deadline) => {
      try {
        return await resizeMemory(this.#hotplugContext(qmp, deadline), targetMiB);
      } finally {
        this.#saveState();
      }
    });
  }

  resizeVCPUs(count: number, options?: OperationOptions): Promise<VcpuResizeResult> {
    return this.#run('resizeVCPUs', ['running', 'paused'], options, async (qmp, deadline) => {
      try {
        return await resizeVcpus(this.#hotplugContext(qmp, deadline), count);
      } finally {
        this.#saveState();
      }
    });
  }

  #hotplugContext(qmp: QmpClient, deadline: Deadline): HotplugContext {
    const config = this.#config as SandboxConfig; // set by createVM or attach; #run's states come after
    return { qmp, config, state: this.#hotplug, deadline, logger: this.#log, removalTimeoutMs: this.#removalTimeoutMs };
  }

  // ---------------------------------------------------------------- plumbing

  /** Runs a QMP-backed operation; a QMP connection lost because QEMU died becomes VmExitedError. */
  async #run<T>(
    operation: string,
    allowed: readonly VmState[],
    options: OperationOptions | undefined,
    fn: (qmp: QmpClient, deadline: Deadline) => Promise<T>,
  ): Promise<T> {
    return this.#lifecycle.run(operation, allowed, options, this.#defaultTimeoutMs, async (deadline) => {
      try {
        return await fn(await this.#connectedQmp(deadline), deadline);
      } catch (error) {
        throw await this.#explainDisconnect(operation, error);
      }
    });
  }

  /**
   * The QMP connection, re-established if it was lost while QEMU still runs (QEMU's monitor takes a
   * new client once the old one is gone). Concurrent callers share one reconnection.
   */
  #connectedQmp(deadline: Deadline): Promise<QmpClient> {
    const qmp = this.#qmp;
    if (qmp && !qmp.closed) return Promise.resolve(qmp);
    const proc = this.#process;
    const paths = this.#paths;
    if (!proc || !paths || proc.hasExited || this.#expectingExit) {
      return Promise.reject(new QmpDisconnectedError('the QMP connection is closed and QEMU is not running'));
    }
    this.#reconnecting ??= (async () => {
      this.#log.warn('the QMP connection was lost while QEMU runs: reconnecting');
      const fresh = await QmpClient.connect(paths.qmpSocket, {
        timeoutMs: RECONNECT_TIMEOUT_MS,
        exited: proc.exited,
        logger: this.#log.child({ component: 'qmp' }),
        commandTimeoutMs: this.#defaultTimeoutMs,
      });
      this.#attachQmp(fresh);
      return fresh;
    })().finally(() => {
      this.#reconnecting = undefined;
    });
    return deadline.race(this.#reconnecting);
  }

  async #explainDisconnect(operation: string, error: unknown): Promise<unknown> {
    const proc = this.#process;
    if (!(error instanceof QmpDisconnectedError) || !proc || this.#expectingExit) return error;
    // QMP drops a moment before the exit is reaped: give the reaper a short while to catch up.
    const exit = await Promise.race([proc.exited, sleep(EXIT_GRACE_MS).then(() => undefined)]);
    if (!exit) return error;
    return new VmExitedError(operation, { ...this.#exitDetails(proc, exit), cause: error });
  }

  /** How QEMU ended, as every path that reports an unexpected exit tells it. */
  #exitDetails(proc: VmmProcess, exit: ProcessExit): Omit<VmExitInfo, 'expected'> {
    const details: Omit<VmExitInfo, 'expected'> = { exitCode: exit.exitCode, signal: exit.signal, stderrTail: proc.stderrTail() };
    if (this.#helperFailure) details.reason = this.#helperFailure;
    return details;
  }

  #saveState(paused = this.state === 'paused'): void {
    const proc = this.#process;
    const config = this.#config;
    const paths = this.#paths;
    if (!proc || !config || !paths || proc.hasExited || !existsSync(paths.dir)) return;
    writeStateFile(paths.stateFile, {
      version: STATE_FILE_VERSION,
      id: config.id,
      pid: proc.pid,
      startTime: proc.startTime,
      detached: config.runtime.detached,
      user: this.#user,
      config,
      paused,
      hotplug: this.#hotplug,
      helpers: this.#helpers.saved(),
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopVM();
  }
}

function isConnectionLoss(error: unknown): boolean {
  return error instanceof QmpDisconnectedError || error instanceof QmpConnectError || error instanceof QmpProtocolError;
}
