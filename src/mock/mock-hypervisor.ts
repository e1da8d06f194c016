// A backend that behaves like the QEMU one without running anything: the same state machine,
// validation, slot and resize rules, events and cleanup, with a simulated guest that only acts while
// it runs, and armed failures, so that a runtime can test its sandbox lifecycle and its error paths.
import { assertConfigFdsUsable } from '../hypervisor/caller-fds.ts';
import { ConfigError, parseSandboxConfig, type SandboxConfig, type SandboxConfigInput } from '../hypervisor/config/index.ts';
import { capabilitiesOf } from '../hypervisor/capabilities.ts';
import { deviceRemovalTimeoutMs, profileOf } from '../hypervisor/arch-profiles.ts';
import type { QemuVersion } from '../hypervisor/version-rules.ts';
import { vcpuRules } from '../hypervisor/resources.ts';
import { AttachError, GuestNotReadyError, InvalidStateError, TemplateError, VmExitedError, VmStartError, VmUnhealthyError } from '../hypervisor/errors.ts';
import { templateUseRefusal, templateRole, type CreateOptions, type TemplateInfo } from '../hypervisor/templates.ts';
import { checkMockClone, releaseTemplateDir, reserveTemplateDir, saveMockTemplate } from './templates.ts';
import { Lifecycle, startOptionsProblem, stopOptionsProblem } from '../hypervisor/lifecycle.ts';
import { nextEvent, type EventOf } from '../hypervisor/events.ts';
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
  VmIdentity,
  VmState,
} from '../hypervisor/types.ts';
import { sleep, type Deadline, type OperationOptions } from '../util/deadline.ts';
import { resolveTimeoutMs } from '../util/timeout.ts';
import { silentLogger, type Logger } from '../util/logger.ts';
import type { MockContext } from './context.ts';
import { leaveDetached, mockRuntimeDir, takeDetached } from './detached.ts';
import { join } from 'node:path';
import { hotplugDevice, unplugDevice } from './devices.ts';
import { guestEjects } from './ejections.ts';
import { MockFaults, type MockOperation } from './faults.ts';
import { assertPathsReachable, hotplugPathNeeds, startPathNeeds } from '../hypervisor/host-access.ts';
import { permissiveHostProbe, realHostProbe, startProblem, type MockHostProbe } from './host.ts';
import { Listeners } from './listeners.ts';
import { giveBackIdentity, identityOf, takeIdentity } from './identities.ts';
import { MockMachine, type MockGuestView } from './machine.ts';
import { assertMockPciLayoutFits, locateMockDevice } from './pci.ts';
import type { MockProcess } from './process.ts';
import { resizeMemory, resizeVcpus } from './resize.ts';
import { mockStats, type MockGuestIo } from './stats.ts';
import type { StatsOptions, VmStats } from '../hypervisor/stats.ts';

/** How long things take, in ms: each operation's commands, stopVM, and the guest's reactions. */
export type MockLatencies = Partial<Record<MockOperation | 'stopVM' | 'guest', number>>;

/** Options of `new MockHypervisor()`. */
export interface MockHypervisorOptions {
  logger?: Logger;
  /** Default timeout of operations that were given none. Default 30 s, as QEMU's. */
  defaultTimeoutMs?: number;
  /** How long a removal waits for the guest to let go. Default: the machine's, as QEMU's (10 s on x86_64, 20 s on aarch64). */
  deviceRemovalTimeoutMs?: number | undefined;
  /** One latency for every operation, or one per operation. Default 0 (the guest still reacts a tick later). */
  latencyMs?: number | MockLatencies;
  /**
   * The device ids of the channels the guest opens once it runs (as an agent opens its port).
   * Default: every channel in the config. A channel left out never opens: startVM waiting for it
   * fails with GuestNotReadyError at its deadline.
   */
  guestOpensChannels?: readonly string[];
  /**
   * Whether what the config names must exist, as QEMU would find out when opening it: true (the
   * default) asks the real host, false accepts anything, an object replaces some answers.
   */
  host?: boolean | Partial<MockHostProbe>;
  /** The uid the mock behaves as if it ran as, for the identity rules. Default 0 (root, as a runtime runs). */
  processUid?: number;
  /**
   * The QEMU version the mock pretends to run, for the version rules (hypervisor/version-rules.ts;
   * the accel is the config's machine.accel). Default: unknown, judged as the oldest (QEMU 7.2's
   * rules). A VM keeps the version it started with across detach and attach.
   */
  qemuVersion?: QemuVersion;
}

/** How `crashVmm` ends the mock's hypervisor process. */
export interface MockExitOptions {
  /** Default 'SIGKILL' when no exitCode is given. */
  signal?: string;
  exitCode?: number;
  /** What the hypervisor wrote before dying. */
  stderr?: string;
}

const DEFAULT_TIMEOUT_MS = 30_000;

/**
 * A `Hypervisor` with no VM behind it, following the same rules and errors as the QEMU backend (the
 * conformance suite runs against both): for testing a runtime, with failures injected through `faults`.
 */
export class MockHypervisor implements Hypervisor {
  readonly kind = 'mock';
  /** Failures to inject into coming calls. */
  readonly faults = new MockFaults();
  readonly #options: MockHypervisorOptions;
  readonly #defaultTimeoutMs: number;
  /** The caller's; undefined: the machine's default. */
  readonly #removalTimeoutMs: number | undefined;
  readonly #host: MockHostProbe;
  readonly #logger: Logger;
  readonly #lifecycle: Lifecycle;
  #config: SandboxConfig | undefined;
  #machine: MockMachine | undefined;
  /** Whether this instance controls the machine's process (false once detached). */
  #owned = false;
  /** Set by detach: the VM (and its identity) now belongs to whoever attaches. */
  #handedOver = false;
  #exitInfo: VmExitInfo | undefined;
  #stopPromise: Promise<void> | undefined;
  #expectingExit = false;
  /** What createVM's template options made of this VM: a template to be saved, or a clone. */
  #template: { kind: 'source' | 'clone'; dir: string } | undefined;
  readonly #exitListeners: Listeners<VmExitInfo>;
  readonly #eventListeners: Listeners<HypervisorEvent>;

  constructor(options: MockHypervisorOptions = {}) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#defaultTimeoutMs = resolveTimeoutMs(options.defaultTimeoutMs, DEFAULT_TIMEOUT_MS, 'defaultTimeoutMs');
    this.#removalTimeoutMs = resolveTimeoutMs(options.deviceRemovalTimeoutMs, undefined, 'deviceRemovalTimeoutMs');
    this.#host = hostProbe(options.host);
    this.#lifecycle = new Lifecycle((from, to) => this.#logger.info({ from, to }, 'vm state'));
    this.#exitListeners = new Listeners(this.#logger, 'exit');
    this.#eventListeners = new Listeners(this.#logger, 'event');
  }

  get id(): string | undefined {
    return this.#config?.id;
  }

/** Where the VM is in its lifecycle (see `VmState`). */
  get state(): VmState {
    return this.#lifecycle.state;
  }

  get config(): SandboxConfig | undefined {
    return this.#config;
  }

  get exitInfo(): VmExitInfo | undefined {
    return this.#exitInfo;
  }

  /** Who the hypervisor would run as: as the QEMU backend under root, a uid of the VM's own. */
  get identity(): VmIdentity | undefined {
    const identity = this.#config ? identityOf(this.#config.id) : undefined;
    return identity ? { ...identity, groups: [...identity.groups] } : undefined;
  }

  /** The key attach() takes; nothing exists on disk. Undefined before createVM. */
  get runtimeDir(): string | undefined {
    return this.#config ? mockRuntimeDir(this.#config.id) : undefined;
  }

  /** The fake hypervisor pid while it runs: stable, and never a real process (it is above the kernel's pid limit). */
  get pid(): number | undefined {
    const proc = this.#process();
    return proc && !proc.hasExited ? proc.pid : undefined;
  }

  /** What the guest has, as seen from inside; undefined when no VM runs. */
  get guest(): MockGuestView | undefined {
    return this.pid === undefined ? undefined : this.#machine?.guestView();
  }

  // ---------------------------------------------------------------- lifecycle

  createVM(input: SandboxConfigInput, options: CreateOptions = {}): Promise<void> {
    return attempt(() => {
      this.#lifecycle.require('createVM', ['new']);
      const role = templateRole(options);
      const config = parseSandboxConfig(input);
      const netnsIssue = config.runtime.netns === undefined ? undefined : this.#host.netnsProblem(config.runtime.netns);
      // As the QEMU backend's createVM: the namespace must be there before anything is made.
      if (netnsIssue) throw new ConfigError([{ path: 'runtime.netns', message: netnsIssue }]);
      assertConfigFdsUsable(config);
      assertMockPciLayoutFits(config);
      const detached = role && templateUseRefusal(config, role.dir);
      if (detached) throw detached;
      if (role?.kind === 'clone') checkMockClone(config, role.dir);
      if (role?.kind === 'source') reserveTemplateDir(config, role.dir);
      try {
        takeIdentity(config, this.#options.processUid ?? 0);
      } catch (error) {
        if (role?.kind === 'source') releaseTemplateDir(role.dir);
        throw error;
      }
      this.#template = role;
      this.#config = config;
      this.#lifecycle.to('created');
    });
  }

  async startVM(options: StartOptions = {}): Promise<void> {
    this.#lifecycle.require('startVM', ['created']);
    // A bad timeout is the caller's mistake: refused before the VM changes state.
    resolveTimeoutMs(options.timeoutMs, this.#defaultTimeoutMs);
    // Only createVM leads to 'created': the config is set.
    const config = this.#config as SandboxConfig;
    const problem = startOptionsProblem(options, config);
    if (problem) throw problem;
    // As the QEMU backend: before anything runs, and without a state change.
    assertPathsReachable(startPathNeeds(config), this.identity, this.#host.accessProblem);
    const channel = options.waitForChannel;
    /** Set once the guest runs and only the channel is awaited: a deadline then means the guest was not ready. */
    let awaitingGuest = false;
    this.#lifecycle.to('starting');
    try {
      await this.#lifecycle.run('startVM', ['starting'], options, this.#defaultTimeoutMs, async (deadline) => {
        const machine = new MockMachine(config, this.#latency('guest'), this.#options.guestOpensChannels, this.#options.qemuVersion);
        this.#machine = machine;
        this.#owned = true;
        machine.connect((event) => this.#eventListeners.call(event));
        this.#launch(machine);
        await this.#untilUp(machine, deadline);
        if (this.faults.takeHang('startVM')) await deadline.expired();
        const opened = channel === undefined ? undefined : this.#channelOpened(machine, channel, deadline.signal);
        if (!options.paused) machine.cont();
        awaitingGuest = true;
        await opened;
      });
    } catch (error) {
      this.#failStart(error, awaitingGuest ? channel : undefined);
    }
    this.#watchExit();
    // stopVM may have begun the moment start finished; it owns the state from then on.
    if (this.state === 'starting') this.#lifecycle.to(options.paused ? 'paused' : 'running');
  }

  /** When the guest opens channel `id`; rejects as soon as the hypervisor exits instead. */
  #channelOpened(machine: MockMachine, id: string, signal: AbortSignal): Promise<unknown> {
    const opened = nextEvent((listener) => this.onEvent(listener), 'VSERPORT_CHANGE', (event) => event.data.id === id && event.data.open, signal);
    const exited = machine.process.exited.then(() => {
      throw new Error('the hypervisor exited during start');
    });
    const either = Promise.race([opened, exited]);
    either.catch(() => {}); // awaited after cont; a failure before that is the start's own
    return either;
  }

  /** Spawning: the hypervisor refuses what the host lacks, or an armed failure, by exiting. */
  #launch(machine: MockMachine): void {
    const proc = machine.process;
    const failure = this.faults.takeStartFailure();
    const problem = failure ? undefined : startProblem(machine.config, this.#host);
    if (failure) {
      proc.writeStderr(failure.stderr ?? 'mock hypervisor: injected start failure');
      proc.end({ exitCode: failure.signal ? undefined : (failure.exitCode ?? 1), signal: failure.signal });
    } else if (problem) {
      proc.writeStderr(`${profileOf(machine.config).qemuBinary}: ${problem}`);
      proc.end({ exitCode: 1, signal: undefined });
    }
  }

  /** The time until the hypervisor answers (QMP connects), cut short if it exits first. */
  async #untilUp(machine: MockMachine, deadline: Deadline): Promise<void> {
    const exited = machine.process.exited.then(() => {
      throw new Error('the hypervisor exited during start');
    });
    exited.catch(() => {});
    await Promise.race([sleep(this.#latency('startVM'), deadline.signal), exited]);
    if (machine.process.hasExited) await exited;
  }

  /**
   * Kills the process, records the exit, and throws a VmStartError that says why: GuestNotReadyError
   * when only `channel` was still awaited.
   */
  #failStart(error: unknown, channel?: string): never {
    const proc = this.#process();
    this.#expectingExit = true;
    this.#machine?.disconnect();
    const exit = proc?.end({ exitCode: undefined, signal: 'SIGKILL' });
    const stderrTail = proc?.stderrTail() ?? '';
    const why = this.#machine?.endReason;
    this.#exitInfo = { expected: true, exitCode: exit?.exitCode, signal: exit?.signal, stderrTail, ...(why ? { reason: why } : {}) };
    if (this.#config) giveBackIdentity(this.#config.id);
    this.#lifecycle.to('stopped');
    // An exit of its own (a refused config, a guest that reset) says more than the error it caused.
    const exitedOnItsOwn = exit && exit.signal !== 'SIGKILL' ? exit : undefined;
    const reason = exitedOnItsOwn ? 'the hypervisor exited during start' : error instanceof Error ? error.message : String(error);
    this.#logger.warn({ err: error, stderrTail, reason: why }, 'vm start failed');
    const details = { exitCode: exitedOnItsOwn?.exitCode, signal: exitedOnItsOwn?.signal, stderrTail, ...(exitedOnItsOwn && why ? { reason: why } : {}), cause: error };
    if (channel !== undefined && !exitedOnItsOwn) throw new GuestNotReadyError(channel, details);
    throw new VmStartError(reason, details);
  }

  /** Learns of the process ending without stopVM, and cleans up after it. */
  #watchExit(): void {
    const proc = this.#process();
    if (!proc) return;
    void proc.exited.then((exit) => {
      if (this.#expectingExit || this.#process() !== proc) return;
      const why = this.#machine?.endReason;
      const info: VmExitInfo = { expected: false, exitCode: exit.exitCode, signal: exit.signal, stderrTail: proc.stderrTail(), ...(why ? { reason: why } : {}) };
      this.#exitInfo = info;
      this.#logger.error(info, 'the hypervisor exited unexpectedly');
      this.#lifecycle.interruptPending((operation) => new VmExitedError(operation, info));
      this.#machine?.disconnect();
      if (this.#config) giveBackIdentity(this.#config.id);
      this.#lifecycle.to('stopped');
      this.#exitListeners.call(info);
    });
  }

  stopVM(options: StopOptions = {}): Promise<void> {
    const problem = stopOptionsProblem(options);
    if (problem) return Promise.reject(problem);
    this.#stopPromise ??= this.#stop(options).finally(() => this.#lifecycle.to('stopped'));
    return this.#stopPromise;
  }

  async #stop(options: StopOptions): Promise<void> {
    const machine = this.#machine;
    const proc = this.#process();
    const alive = proc !== undefined && !proc.hasExited && this.state !== 'stopped';
    this.#expectingExit = true;
    this.#lifecycle.interruptPending();
    this.#lifecycle.to('stopping');
    if (machine && proc && alive) {
      const graceMs = options.gracefulTimeoutMs ?? 0;
      if (graceMs > 0) await this.#gracefulPowerdown(machine, graceMs, options.signal);
      await sleep(this.#latency('stopVM'));
      machine.quit();
      const exit = await proc.exited;
      const why = machine.endReason;
      this.#exitInfo ??= { expected: true, exitCode: exit.exitCode, signal: exit.signal, stderrTail: proc.stderrTail(), ...(why ? { reason: why } : {}) };
    }
    machine?.disconnect();
    if (this.#config && !this.#handedOver) giveBackIdentity(this.#config.id);
    // A template VM stopped before it was saved leaves no directory behind.
    if (this.#template?.kind === 'source') releaseTemplateDir(this.#template.dir);
    this.#logger.info('vm stopped');
  }

  async #gracefulPowerdown(machine: MockMachine, graceMs: number, signal: AbortSignal | undefined): Promise<void> {
    const gaveUp = new AbortController();
    const onAbort = () => gaveUp.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    machine.powerdown();
    try {
      await Promise.race([machine.process.exited, sleep(graceMs, gaveUp.signal)]);
    } catch {
      // The caller gave up waiting: quit now.
    } finally {
      gaveUp.abort();
      signal?.removeEventListener('abort', onAbort);
    }
  }

  pauseVM(options?: OperationOptions): Promise<void> {
    return this.#run('pauseVM', ['running'], options, async (ctx) => {
      await ctx.delay();
      ctx.deadline.throwIfDone();
      ctx.machine.stop();
      this.#lifecycle.to('paused');
    });
  }

  resumeVM(options?: OperationOptions): Promise<void> {
    return this.#run('resumeVM', ['paused'], options, async (ctx) => {
      await ctx.delay();
      ctx.deadline.throwIfDone();
      ctx.machine.cont();
      this.#lifecycle.to('running');
    });
  }

  /** Gives up control without stopping the VM, so that attach() can take it over. */
  detach(): Promise<void> {
    return attempt(() => {
      this.#lifecycle.require('detach', ['running', 'paused']);
      const machine = this.#machine as MockMachine;
      this.#expectingExit = true;
      this.#lifecycle.interruptPending();
      machine.disconnect();
      leaveDetached(this.runtimeDir as string, machine);
      this.#owned = false;
      this.#handedOver = true;
      this.#lifecycle.to('stopped');
    });
  }

  /** Takes over a VM another MockHypervisor of this process detached from, as QemuHypervisor.attach does. */
  static attach(runtimeDir: string, options: MockHypervisorOptions = {}): Promise<MockHypervisor> {
    return attempt(() => {
      const machine = takeDetached(runtimeDir);
      if (!machine || machine.process.hasExited) throw new AttachError(runtimeDir, 'no running VM was detached there');
      const vm = new MockHypervisor(options);
      vm.#config = machine.config;
      vm.#machine = machine;
      vm.#owned = true;
      machine.connect((event) => vm.#eventListeners.call(event));
      vm.#lifecycle.to('starting');
      vm.#lifecycle.to(machine.status === 'running' ? 'running' : 'paused');
      vm.#watchExit();
      return vm;
    });
  }

  // ---------------------------------------------------------------- failures to simulate

  /**
   * The hypervisor process dies now (killed, or exiting with `exitCode`). Resolves once the mock has
   * reacted: pending calls rejected with VmExitedError, onExit listeners called, state stopped.
   */
  async crashVmm(options: MockExitOptions = {}): Promise<void> {
    const proc = this.#process();
    if (!proc || proc.hasExited) return;
    if (options.stderr) proc.writeStderr(options.stderr);
    proc.end({ exitCode: options.exitCode, signal: options.signal ?? (options.exitCode === undefined ? 'SIGKILL' : undefined) });
    await proc.exited;
  }

  /**
   * The guest kernel panics. With a pvpanic device in the config the hypervisor notices: a
   * GUEST_PANICKED event, and check() rejects with status 'guest-panicked'. Without one, the guest
   * silently stops responding. Resolves to whether the hypervisor noticed.
   */
  panicGuest(): Promise<boolean> {
    const machine = this.#machine;
    return Promise.resolve(machine !== undefined && this.pid !== undefined && machine.panic());
  }

  /**
   * The guest resets (reboots) or powers itself off. The hypervisor runs with -no-reboot, so it
   * reports SHUTDOWN and exits with status 0: the VM ends unexpectedly with exitInfo.reason
   * 'guest-reset' or 'guest-shutdown'. Resolves once the mock has reacted, as crashVmm.
   */
  async endGuest(reason: 'guest-reset' | 'guest-shutdown'): Promise<void> {
    const machine = this.#machine;
    const proc = this.#process();
    if (!machine || !proc || proc.hasExited) return;
    machine.guestEnds(reason);
    await proc.exited;
  }

  /**
   * The guest ejects hot-plugged device `id` on its own, as a guest that powers its slot off does
   * (for a SCSI disk, the slot of the controller the backend added, with all its disks). It acts only
   * while its vCPUs run. Resolves once the backend has reacted, to whether it happened: the device
   * left devices() and DEVICE_EJECTED was emitted, or, if its removal had been asked for, that
   * removal can finish. False for an id that is not hot-plugged (cold devices cannot be ejected).
   */
  ejectGuestDevice(id: string): Promise<boolean> {
    // The guest acts whether or not a process owns the VM (after detach, the next owner hears of it).
    const machine = this.#machine;
    if (!machine || machine.process.hasExited) return Promise.resolve(false);
    return guestEjects(machine, id);
  }

  /** As the QEMU backend's: pause, save, stop; the template exists once this resolves. */
  async saveTemplate(options?: OperationOptions): Promise<TemplateInfo> {
    const template = this.#template;
    if (template?.kind !== 'source') {
      this.#lifecycle.require('saveTemplate', ['running', 'paused']);
      throw new InvalidStateError('saveTemplate', this.state, [], 'the VM was not created with templateDir');
    }
    const hot = this.#machine?.state;
    if (hot && (hot.devices.length > 0 || hot.cpus.length > 0 || hot.dimms.length > 0 || hot.virtioMemMiB > 0 || hot.vcpuRemoved)) {
      throw new TemplateError('device', template.dir, 'devices were hot-plugged or CPUs or memory resized since boot: a template holds the guest as its config booted it');
    }
    await this.#run('saveTemplate', ['running', 'paused'], options, async (ctx) => {
      ctx.machine.stop();
      this.#lifecycle.to('paused');
      await ctx.delay();
      ctx.deadline.throwIfDone();
    });
    const config = this.#config as SandboxConfig;
    await this.stopVM();
    if (this.#exitInfo && !this.#exitInfo.expected) throw new VmExitedError('saveTemplate', this.#exitInfo);
    return saveMockTemplate(config, template.dir);
  }

  // ---------------------------------------------------------------- queries

  /** The hypervisor's fake pid, then its helper daemons' (one per share with a sharedDir), as the QEMU backend's. */
  getPids(): number[] {
    const pid = this.pid;
    const helpers = [...(this.#machine?.helpers.values() ?? [])].filter((p) => !p.hasExited).map((p) => p.pid);
    return pid === undefined ? [] : [pid, ...helpers];
  }

  getThreadIds(options?: OperationOptions): Promise<VcpuThreadIds> {
    return this.#run('getThreadIds', ['running', 'paused'], options, async (ctx) => {
      await ctx.delay();
      return new Map(Array.from({ length: vcpuCount(ctx.machine) }, (_, index) => [index, ctx.machine.process.threadId(index)]));
    });
  }

  /** The QEMU backend's figures from the simulated machine (see mock/stats.ts). */
  stats(options?: StatsOptions): Promise<VmStats> {
    return this.#run('stats', ['running', 'paused'], options, async (ctx) => {
      await ctx.delay();
      return mockStats(ctx.machine, vcpuCount(ctx.machine));
    });
  }

  /**
   * The guest does I/O on disk or NIC `id` (cold or hot-plugged): stats() counts it, as QEMU's block
   * layer and the tap would. Resolves to false when no such device is plugged or no VM runs.
   */
  simulateGuestIo(id: string, io: MockGuestIo): Promise<boolean> {
    const machine = this.#machine;
    const config = this.#config;
    if (!machine || !config || this.pid === undefined) return Promise.resolve(false);
    const hot = machine.state.devices.filter((d) => !d.ejected).map((d) => d.device);
    const device = [...config.devices, ...hot].find((d) => d.id === id);
    if (device?.type !== 'block' && device?.type !== 'net') return Promise.resolve(false);
    machine.counters.add(device.type, id, io);
    return Promise.resolve(true);
  }

  check(options?: OperationOptions): Promise<void> {
    if (this.#exitInfo && !this.#exitInfo.expected) {
      return Promise.reject(new VmUnhealthyError(`the hypervisor exited (${describeExit(this.#exitInfo)})`));
    }
    return this.#run('check', ['running', 'paused'], options, async (ctx) => {
      await ctx.delay();
      // Remembered once seen: resuming a panicked guest does not bring its kernel back.
      if (ctx.machine.panicSeen) throw new VmUnhealthyError('guest-panicked');
    });
  }

  /** The same as the QEMU backend's for the same config. */
  capabilities(): HypervisorCapabilities {
    const rules = this.#machine?.vcpuRules ?? (this.#config ? vcpuRules(this.#config, this.#options.qemuVersion) : undefined);
    return capabilitiesOf(this.#config, rules, this.#machine?.state.vcpuAdds ?? 0, this.#removalTimeoutMs);
  }

  devices(): PluggedDevice[] {
    const config = this.#config;
    if (!config) return [];
    const state = this.#machine?.state;
    const cold: PluggedDevice[] = config.devices.map((d) => ({
      id: d.id,
      type: d.type,
      hotplugged: false,
      ...locateMockDevice(d, config, state),
      // Where the QEMU backend would put it; nothing listens there.
      ...(d.type === 'channel' ? { socketPath: join(mockRuntimeDir(config.id), `ch-${d.id}.sock`) } : {}),
    }));
    const hot: PluggedDevice[] = (state?.devices ?? []).filter((d) => !d.ejected).map((d) => ({ id: d.id, type: d.device.type, hotplugged: true, bus: d.bus, ...locateMockDevice(d.device, config, state) }));
    return [...cold, ...hot];
  }

  onExit(listener: (info: VmExitInfo) => void): () => void {
    return this.#exitListeners.add(listener);
  }

  onEvent(listener: (event: HypervisorEvent) => void): () => void {
    return this.#eventListeners.add(listener);
  }

  waitForEvent<N extends string>(name: N, predicate?: (event: EventOf<N>) => boolean, options?: OperationOptions): Promise<EventOf<N>> {
    return this.#lifecycle.run('waitForEvent', ['running', 'paused'], options, this.#defaultTimeoutMs, (deadline) =>
      nextEvent((listener) => this.onEvent(listener), name, predicate, deadline.signal),
    );
  }

  // ---------------------------------------------------------------- hotplug and resize

  hotplugAddDevice(device: HotplugDevice, options?: OperationOptions): Promise<HotplugResult> {
    return this.#run('hotplugAddDevice', ['running', 'paused'], options, (ctx) => {
      assertPathsReachable(hotplugPathNeeds(device), this.identity, this.#host.accessProblem);
      return hotplugDevice(ctx, device);
    });
  }

  hotplugRemoveDevice(id: string, options?: OperationOptions): Promise<void> {
    return this.#run('hotplugRemoveDevice', ['running', 'paused'], options, (ctx) => unplugDevice(ctx, id));
  }

  resizeMemory(targetMiB: number, options?: OperationOptions): Promise<MemoryResizeResult> {
    return this.#run('resizeMemory', ['running', 'paused'], options, (ctx) => resizeMemory(ctx, targetMiB));
  }

  resizeVCPUs(count: number, options?: OperationOptions): Promise<VcpuResizeResult> {
    return this.#run('resizeVCPUs', ['running', 'paused'], options, (ctx) => resizeVcpus(ctx, count));
  }

  // ---------------------------------------------------------------- plumbing

  #process(): MockProcess | undefined {
    return this.#owned ? this.#machine?.process : undefined;
  }

  /** Runs an operation that needs the hypervisor, honouring an armed hang. */
  #run<T>(
    operation: MockOperation,
    allowed: readonly VmState[],
    options: OperationOptions | undefined,
    fn: (ctx: MockContext) => Promise<T>,
  ): Promise<T> {
    return this.#lifecycle.run(operation, allowed, options, this.#defaultTimeoutMs, async (deadline) => {
      const machine = this.#machine;
      if (!machine || !this.#owned) throw new VmStartError('the VM is not running');
      if (this.faults.takeHang(operation)) await deadline.expired();
      return fn(this.#context(machine, deadline, operation));
    });
  }

  #context(machine: MockMachine, deadline: Deadline, operation: MockOperation): MockContext {
    const latency = this.#latency(operation);
    return {
      machine,
      deadline,
      faults: this.faults,
      host: this.#host,
      removalTimeoutMs: deviceRemovalTimeoutMs(this.#removalTimeoutMs, machine.config),
      delay: () => sleep(latency, deadline.signal),
    };
  }

  #latency(what: MockOperation | 'stopVM' | 'guest'): number {
    const latency = this.#options.latencyMs;
    return (typeof latency === 'number' ? latency : latency?.[what]) ?? 0;
  }

  /** stopVM() at the end of an `await using` scope (see Hypervisor). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopVM();
  }
}

function hostProbe(host: MockHypervisorOptions['host']): MockHostProbe {
  if (host === false) return permissiveHostProbe;
  if (host === true || host === undefined) return realHostProbe;
  return { ...realHostProbe, ...host };
}

/** Runs `fn` and turns what it throws into a rejection, as an async function would. */
function attempt<T>(fn: () => T): Promise<T> {
  // The executor's throw becomes the rejection.
  return new Promise((resolve) => resolve(fn()));
}

/** vCPUs the machine has: the boot ones and the hot-added ones not yet released. */
function vcpuCount(machine: MockMachine): number {
  return machine.config.cpus.boot + machine.state.cpus.filter((c) => !c.released).length;
}

function describeExit(info: VmExitInfo): string {
  if (info.signal) return `killed by ${info.signal}`;
  return info.exitCode === undefined ? 'exit status unknown' : `status ${info.exitCode}`;
}
