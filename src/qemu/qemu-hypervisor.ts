// The QEMU backend of the Hypervisor interface: the argv builder, the process launcher and the QMP
// client put together, with a state machine around them and cleanup on every path.
import type { Logger } from '../util/logger.ts';
import { silentLogger } from '../util/logger.ts';
import { Deadline, sleep, type OperationOptions } from '../util/deadline.ts';
import { resolveTimeoutMs } from '../util/timeout.ts';
import { validateHotplugDevice, type HotplugDeviceConfig, type SandboxConfig, type SandboxConfigInput } from '../hypervisor/config/index.ts';
import {
  AttachError,
  InvalidReplyError,
  InvalidStateError,
  VmExitedError,
  VmStartError,
  VmStoppingError,
  VmUnhealthyError,
  GuestNotReadyError,
  SINGLE_USE,
  describeExit,
} from '../hypervisor/errors.ts';
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
import { templateUseRefusal, templateConfigRefusal, templateRole, type CreateOptions, type TemplateInfo } from '../hypervisor/templates.ts';
import { TemplateError } from '../hypervisor/errors.ts';
import { TemplateSource } from './template/source.ts';
import { TemplateClone } from './template/clone.ts';
import { stateChannelOf, type StateChannel } from './template/state-channel.ts';
import { isDeepStrictEqual } from 'node:util';
import { QmpClient, QmpConnectError, QmpDisconnectedError, QmpProtocolError, type QmpEvent, type RunState } from '../qmp/index.ts';
import type { ProcessExit } from './process/vmm-process.ts';
import { taskIds } from './process/proc-fs.ts';
import { defaultRuntimeBase, ensureRuntimeBase, leaseDirOf } from './runtime-dir.ts';
import { serializeState, STATE_FILE_VERSION } from './state-file.ts';
import { emptyHotplugState, isEjecting, type HotplugState } from './hotplug/state.ts';
import { hotplugDevice, unplugDevice } from './hotplug/devices.ts';
import { EjectionReconciler } from './hotplug/ejections.ts';
import type { HotplugContext, HotplugHelpers } from './hotplug/context.ts';
import { checkSocketPath } from './runtime-paths.ts';
import { virtiofsdOf } from './launch/plan.ts';
import { resizeVcpus } from './hotplug/cpus.ts';
import { resizeMemory } from './hotplug/memory.ts';
import { capabilitiesOf } from '../hypervisor/capabilities.ts';
import { deviceRemovalTimeoutMs, profileOf } from '../hypervisor/arch-profiles.ts';
import { vcpuRules, type VcpuRules } from '../hypervisor/resources.ts';
import { formatVersion, type QemuVersion } from '../hypervisor/version-rules.ts';
import { MissingFeatureError } from '../hypervisor/errors.ts';
import { qemuFeatures } from './features/store.ts';
import { featureNeeds, DEVICE_OPTION_KEYS } from './features/needs.ts';
import { assertDevice, assertFeatures } from './features/qemu-features.ts';
import { UidLeaseStore } from './identity/uid-leases.ts';
import { DEFAULT_UID_RANGE, type UidRange } from '../hypervisor/identity.ts';
import { VmHome } from './launch/home.ts';
import { assertConfigFdsUsable } from '../hypervisor/caller-fds.ts';
import { assertPathsReachable, hotplugPathNeeds, startPathNeeds } from '../hypervisor/host-access.ts';
import { planVm, type LaunchPlan } from './launch/plan.ts';
import { launchVm } from './launch/launch.ts';
import { adoptVm } from './launch/adopt.ts';
import type { SessionOptions, VmSession } from './launch/session.ts';
import { checkVcpuThreadIds } from './vcpu-threads.ts';
import { parseRunState } from './run-state.ts';
import { pciPathsOf, type DeviceLocation } from './pci-paths.ts';
import type { StatsOptions, VmStats } from '../hypervisor/stats.ts';
import { collectStats } from './stats/collect.ts';
import { enableBalloonStats } from './stats/balloon.ts';

/** Options of `new QemuHypervisor()`: apply to the one VM the instance drives. */
export interface QemuHypervisorOptions {
  /** pino logger; each VM logs through a child carrying its id. Silent by default. */
  logger?: Logger;
  /** Default timeout of operations that were given none. */
  defaultTimeoutMs?: number;
  /**
   * How long a removal waits for the guest to release a device. Default: the machine's (10 s on
   * x86_64's q35, 20 s on aarch64's virt, where native PCIe hotplug takes about 6 s).
   */
  deviceRemovalTimeoutMs?: number | undefined;
  /**
   * The uids (and equal gids) VMs' QEMUs get, one each, when this process is root. Choose a range
   * no user, subuid range or user namespace maps. Default: 1900000000, 65536 of them.
   */
  uidRange?: UidRange;
  /** Where uid leases are kept: shared by every runtime process of the host. Default: <base>/.leases. */
  leaseDir?: string;
}

const DEFAULT_TIMEOUT_MS = 30_000;
const QUIT_WAIT_MS = 3_000;
const RECONNECT_TIMEOUT_MS = 5_000;
const ATTACH_TIMEOUT_MS = 10_000;
/** How long a lost QMP connection waits for QEMU's exit to be reaped before calling it something else. */
const EXIT_GRACE_MS = 1_000;
/** Run states a healthy sandbox is never in. */
const UNHEALTHY_RUN_STATES: ReadonlySet<RunState> = new Set(['guest-panicked', 'internal-error', 'io-error', 'shutdown', 'watchdog']);

/**
 * The lease store of a host (one directory, shared by every runtime process). The default base,
 * which holds it and default VM directories, is checked (ours, closed to others) once per call.
 */
function leaseStore(options: QemuHypervisorOptions, usesDefaultBase: boolean): UidLeaseStore {
  const base = defaultRuntimeBase();
  if (usesDefaultBase || options.leaseDir === undefined) ensureRuntimeBase(base);
  return new UidLeaseStore({ dir: options.leaseDir ?? leaseDirOf(base), range: options.uidRange ?? DEFAULT_UID_RANGE });
}

/**
 * The QEMU backend of `Hypervisor`: builds QEMU's command line from the config, starts it through the
 * launcher as an unprivileged uid of its own, and drives it over QMP.
 */
export class QemuHypervisor implements Hypervisor {
  readonly kind = 'qemu';
  readonly #options: QemuHypervisorOptions;
  readonly #logger: Logger;
  readonly #defaultTimeoutMs: number;
  /** The caller's; undefined: the machine's default. */
  readonly #removalTimeoutMs: number | undefined;
  #log: Logger;
  readonly #lifecycle: Lifecycle;
  #plan: LaunchPlan | undefined;
  /** The VM's directory and identity, from createVM (or attach) until the VM is gone. */
  #home: VmHome | undefined;
  /** QEMU, QMP and the helpers, from startVM (or attach) on. */
  #session: VmSession | undefined;
  #hotplug: HotplugState = emptyHotplugState();
  /** A clone's virtio-fs shares, hot-plugged by startVM once the guest is restored. */
  /** createVM's template role: a VM to be saved as a template, or a clone of one. */
  #template: TemplateSource | TemplateClone | undefined;
  /** How a device state goes to and from QEMU, as its schema says (probed at startVM). */
  #stateChannel: StateChannel | undefined;
  /**
   * QEMU's version as probed before the guest first ran (or as the state file recorded it): the
   * version rules' input. Undefined: unknown, judged as the oldest.
   */
  #qemuVersion: QemuVersion | undefined;
  /**
   * QEMU's run state leaves guest-panicked on `cont`, but the guest kernel is still dead: once a
   * panic is seen, the VM stays unhealthy until it is stopped.
   */
  #guestPanicked = false;
  /** QEMU's SHUTDOWN reason, once it sent one ('guest-reset', 'host-qmp-quit', …). */
  #shutdownReason: string | undefined;
  #exitInfo: VmExitInfo | undefined;
  #stopPromise: Promise<void> | undefined;
  readonly #exitListeners = new Set<(info: VmExitInfo) => void>();
  readonly #eventListeners = new Set<(event: HypervisorEvent) => void>();
  /** Settles the books when the guest ejects a hot-plugged device on its own. */
  readonly #ejections = new EjectionReconciler({
    state: () => this.#hotplug,
    context: (deadline) => {
      const qmp = this.#session?.qmp;
      return qmp && !qmp.closed && !this.#session?.ending ? this.#hotplugContext(qmp, deadline) : undefined;
    },
    saveState: () => this.#saveState(),
    report: (event) => this.#emit(event),
    logger: () => this.#log,
  });

  constructor(options: QemuHypervisorOptions = {}) {
    this.#options = options;
    this.#logger = options.logger ?? silentLogger;
    this.#log = this.#logger;
    this.#defaultTimeoutMs = resolveTimeoutMs(options.defaultTimeoutMs, DEFAULT_TIMEOUT_MS, 'defaultTimeoutMs');
    this.#removalTimeoutMs = resolveTimeoutMs(options.deviceRemovalTimeoutMs, undefined, 'deviceRemovalTimeoutMs');
    this.#lifecycle = new Lifecycle((from, to) => this.#log.info({ from, to }, 'vm state'));
  }

  get id(): string | undefined {
    return this.#plan?.config.id;
  }

/** Where the VM is in its lifecycle (see `VmState`). */
  get state(): VmState {
    return this.#lifecycle.state;
  }

  get config(): SandboxConfig | undefined {
    return this.#plan?.config;
  }

  get exitInfo(): VmExitInfo | undefined {
    return this.#exitInfo;
  }

  /** Who QEMU runs as (a uid of the VM's own under root), known from createVM on. */
  get identity(): VmIdentity | undefined {
    const identity = this.#home?.identity;
    return identity ? { ...identity, groups: [...identity.groups] } : undefined;
  }

  /** The VM's runtime directory (sockets, saved state); undefined before createVM. */
  get runtimeDir(): string | undefined {
    return this.#plan?.paths.dir;
  }

  /** QEMU's pid while it runs. */
  get pid(): number | undefined {
    const proc = this.#session?.process;
    return proc && !proc.hasExited && !this.#session?.ending ? proc.pid : undefined;
  }

  // ---------------------------------------------------------------- lifecycle

  /** Validates the config, resolves every program, leases QEMU's uid and makes the VM's directory. */
  async createVM(input: SandboxConfigInput, options: CreateOptions = {}): Promise<void> {
    this.#lifecycle.require('createVM', ['new']);
    if (this.#plan) throw new InvalidStateError('createVM', this.state, [], `createVM was already called; ${SINGLE_USE}`);
    const role = templateRole(options);
    const requested = planVm(input);
    assertConfigFdsUsable(requested.config);
    const refusal = role && (templateUseRefusal(requested.config, role.dir) ?? (role.kind === 'source' ? templateConfigRefusal(requested.config, role.dir) : undefined));
    if (refusal) throw refusal;
    const plan = requested;
    // Claimed before the first await: a second concurrent createVM is refused, not raced.
    this.#plan = plan;
    let home: VmHome;
    try {
      // A template that cannot be used is refused before anything is made.
      const clone = role?.kind === 'clone' ? await TemplateClone.open(role.dir, requested.config, plan.qemuPath) : undefined;
      home = await VmHome.create(plan.config, plan.paths, leaseStore(this.#options, plan.config.runtime.dir === undefined), options);
      try {
        this.#template = role?.kind === 'source' ? await TemplateSource.make(role.dir, plan.config, home.identity) : clone;
      } catch (error) {
        await home.release(true, this.#log);
        throw error;
      }
    } catch (error) {
      this.#plan = undefined;
      throw error;
    }
    if (this.state !== 'new') {
      // stopVM ran while the home was being made: nothing may outlive it.
      await home.release(true, this.#log);
      await this.#template?.afterStop(this.#log);
      throw new VmStoppingError('createVM');
    }
    this.#home = home;
    this.#lifecycle.to('created');
    this.#log = this.#logger.child({ vmId: plan.config.id });
    this.#log.debug({ argv: plan.argv.args, runtimeDir: plan.paths.dir, identity: this.#home.identity }, 'vm created');
  }

  async startVM(options: StartOptions = {}): Promise<void> {
    this.#lifecycle.require('startVM', ['created']);
    // A bad timeout is the caller's mistake: refused before the VM changes state.
    resolveTimeoutMs(options.timeoutMs, this.#defaultTimeoutMs);
    // Only createVM leads to 'created': both are set.
    const plan = this.#plan as LaunchPlan;
    const home = this.#home as VmHome;
    const problem = startOptionsProblem(options, plan.config);
    if (problem) throw problem;
    // Before anything runs, and without a state change: the caller can fix the host and start again.
    assertPathsReachable(startPathNeeds(plan.config), home.identity);
    const channel = options.waitForChannel;
    /** Set once the guest runs and only the channel is awaited: a deadline then means the guest was not ready. */
    let awaitingGuest = false;
    this.#lifecycle.to('starting');
    try {
      await this.#lifecycle.run('startVM', ['starting'], options, this.#defaultTimeoutMs, async (deadline) => {
        const needs = featureNeeds(plan);
        // What an earlier VM learned of this binary refuses a missing feature before QEMU runs.
        const known = qemuFeatures.known(plan.qemuPath);
        if (known) assertFeatures(plan.qemuPath, known, needs, true);
        // This very build's version, probed by an earlier VM: the state recorded at spawn then
        // already holds what the probe will say, and a paused start writes it once, not twice.
        this.#qemuVersion = known?.version;
        const template = this.#template;
        const launchPlan = template ? await template.launchPlan(plan, home.identity, known, deadline.signal) : plan;
        const session = await launchVm(launchPlan, home, { ...this.#sessionOptions(), signal: deadline.signal });
        this.#session = session;
        // Recorded at once, landing while QMP connects: should this process die now, the sweep
        // (and attach) know the pids. The home queues it before the final one.
        void this.#saveState(true);
        const qmp = await session.connectQmp({ signal: deadline.signal });
        // QEMU waits at -S: no guest code has run, so what it says of itself is the binary's.
        const features = await qemuFeatures.learn(plan.qemuPath, qmp, needs, deadline.signal);
        assertFeatures(plan.qemuPath, features, needs);
        this.#qemuVersion = features.version;
        this.#stateChannel = stateChannelOf(features);
        if (template instanceof TemplateClone) await template.restore(qmp, this.#stateChannel, formatVersion(features.version), deadline.signal);
        // Listening before `cont`: QEMU was started with -S, so the guest cannot open the port earlier.
        const opened = channel === undefined ? undefined : this.#channelOpened(session, channel, deadline.signal);
        await enableBalloonStats(qmp, plan.config, deadline.signal);
        if (!options.paused) await qmp.execute('cont', undefined, { signal: deadline.signal });
        await this.#saveState(options.paused === true);
        awaitingGuest = true;
        await opened;
      });
    } catch (error) {
      await this.#failStart(error, awaitingGuest ? channel : undefined);
    }
    this.#watchExit();
    // stopVM may have begun the moment start finished; it owns the state from then on.
    if (this.state === 'starting') this.#lifecycle.to(options.paused ? 'paused' : 'running');
  }

  /**
   * When the guest opens the virtio-serial port of channel `id` (QEMU's VSERPORT_CHANGE); rejects as
   * soon as QEMU exits instead (a guest that resets ends QEMU, -no-reboot).
   */
  #channelOpened(session: VmSession, id: string, signal: AbortSignal): Promise<unknown> {
    const opened = nextEvent((listener) => this.onEvent(listener), 'VSERPORT_CHANGE', (event) => event.data.id === id && event.data.open, signal);
    const exited = session.process.exited.then(() => {
      throw new Error(`QEMU exited before the guest opened channel '${id}'`);
    });
    const either = Promise.race([opened, exited]);
    either.catch(() => {}); // awaited after `cont`; a failure before that is the start's own
    return either;
  }

  #sessionOptions(): SessionOptions {
    return { logger: this.#log, commandTimeoutMs: this.#defaultTimeoutMs, onQmpEvent: (event) => this.#onQmpEvent(event) };
  }

  /**
   * Tears everything down and throws a VmStartError that says why: GuestNotReadyError when only
   * `channel` was still awaited.
   */
  async #failStart(error: unknown, channel?: string): Promise<never> {
    const session = this.#session;
    const proc = session?.process;
    session?.expectEnd();
    // Whether QEMU ended on its own (a rejected command line, a crash, someone's SIGKILL) must be
    // read before we kill it ourselves. A lost QMP connection usually means QEMU is exiting: give
    // the reaper a moment to see it.
    if (session && proc && !proc.hasExited && isConnectionLoss(error)) await session.exitWithin(EXIT_GRACE_MS);
    const exitedOnItsOwn = proc?.hasExited === true;
    if (exitedOnItsOwn) await session?.qmpDrained(EXIT_GRACE_MS);
    const exit = session ? await session.teardown('start failed') : undefined;
    if (!session) await this.#home?.release(true, this.#log);
    await this.#template?.afterStop(this.#log);
    const stderrTail = proc?.stderrTail() ?? '';
    const why = this.#endReason(session?.helperFailure);
    this.#exitInfo = { expected: !exitedOnItsOwn, exitCode: exit?.exitCode, signal: exit?.signal, stderrTail, ...(why ? { reason: why } : {}) };
    this.#lifecycle.to('stopped');
    this.#log.warn({ err: error, stderrTail, reason: why }, 'vm start failed');
    const details = {
      exitCode: exitedOnItsOwn ? exit?.exitCode : undefined,
      signal: exitedOnItsOwn ? exit?.signal : undefined,
      stderrTail,
      ...(exitedOnItsOwn && why ? { reason: why } : {}),
      cause: error,
    };
    if (channel !== undefined && !exitedOnItsOwn) throw new GuestNotReadyError(channel, details);
    // It names what the binary lacks: more use to the caller than a generic start failure.
    if (error instanceof MissingFeatureError) throw error;
    // QEMU's own exit says more than the QMP error it caused.
    throw new VmStartError(exitedOnItsOwn ? 'QEMU exited during start' : error instanceof Error ? error.message : String(error), details);
  }

  #onQmpEvent(event: QmpEvent): void {
    this.#log.debug({ event: event.event, data: event.data }, 'qmp event');
    if (event.event === 'GUEST_PANICKED') this.#guestPanicked = true;
    if (event.event === 'SHUTDOWN' && typeof event.data['reason'] === 'string') this.#shutdownReason = event.data['reason'];
    this.#ejections.onQmpEvent(event);
    this.#emit({ name: event.event, data: event.data });
  }

  #emit(event: HypervisorEvent): void {
    for (const listener of this.#eventListeners) {
      try {
        listener(event);
      } catch (error) {
        this.#log.warn({ err: error }, 'event listener threw');
      }
    }
  }

  /**
   * Why the VM ended, first cause first: a helper's death (QEMU was killed for it), then a guest
   * panic (the guest was dead from then on), then QEMU's SHUTDOWN reason.
   */
  #endReason(helperFailure: string | undefined): string | undefined {
    return helperFailure ?? (this.#guestPanicked ? 'guest-panic' : this.#shutdownReason);
  }

  /** Learns of QEMU ending without stopVM (or a helper dying) and cleans up after it. */
  #watchExit(): void {
    const session = this.#session;
    if (!session) return;
    session.watch(({ exit, helperFailure }) => void this.#endedOnItsOwn(session, exit, helperFailure));
  }

  /** QEMU ended (or a helper died) without stopVM: record why, fail what is pending, clean up. */
  async #endedOnItsOwn(session: VmSession, exit: ProcessExit, helperFailure: string | undefined): Promise<void> {
    // QEMU's last words (SHUTDOWN and its reason) may still be in the socket when its exit is reaped.
    await session.qmpDrained(EXIT_GRACE_MS);
    const info: VmExitInfo = { expected: false, ...exitDetails(session, exit, this.#endReason(helperFailure)) };
    this.#exitInfo = info;
    this.#log.error(info, 'qemu exited unexpectedly');
    this.#lifecycle.interruptPending((operation) => new VmExitedError(operation, info));
    await session.teardown(helperFailure ?? 'QEMU exited on its own');
    await this.#template?.afterStop(this.#log);
    this.#lifecycle.to('stopped');
    for (const listener of this.#exitListeners) {
      try {
        listener(info);
      } catch (error) {
        this.#log.warn({ err: error }, 'exit listener threw');
      }
    }
  }

  stopVM(options: StopOptions = {}): Promise<void> {
    const problem = stopOptionsProblem(options);
    if (problem) return Promise.reject(problem);
    this.#stopPromise ??= this.#stop(options).finally(() => this.#lifecycle.to('stopped'));
    return this.#stopPromise;
  }

  async #stop(options: StopOptions): Promise<void> {
    const session = this.#session;
    const proc = session?.process;
    const alive = session !== undefined && proc !== undefined && !proc.hasExited && !session.ending && this.state !== 'stopped';
    session?.expectEnd();
    this.#lifecycle.interruptPending();
    this.#lifecycle.to('stopping');
    if (alive) {
      // The polite steps share the caller's bound; past it, or when they fail, QEMU is killed.
      const polite = new Deadline('stopVM', options);
      try {
        const graceMs = options.gracefulTimeoutMs ?? 0;
        if (graceMs > 0) await this.#askToExit(session, 'system_powerdown', graceMs, polite.signal);
        if (!proc.hasExited) await this.#askToExit(session, 'quit', QUIT_WAIT_MS, polite.signal);
      } finally {
        polite.dispose();
      }
      if (proc.hasExited) await session.qmpDrained(EXIT_GRACE_MS);
      const exit = await session.teardown('stopVM');
      const why = this.#endReason(session.helperFailure);
      this.#exitInfo ??= { expected: true, exitCode: exit?.exitCode, signal: exit?.signal, stderrTail: proc.stderrTail(), ...(why ? { reason: why } : {}) };
    } else if (session) {
      await session.teardown('stopVM');
    } else {
      // Created, never started (or its start already cleaned up): only the home is left.
      await this.#home?.release(true, this.#log);
    }
    await this.#template?.afterStop(this.#log);
    this.#log.info('vm stopped');
  }

  /**
   * Sends `command` and waits up to `waitMs` for QEMU to exit. A refused or unsendable command ends
   * the wait at once. QEMU may reset the socket after quit before replying: the client counts that
   * as the reply.
   */
  async #askToExit(session: VmSession, command: 'system_powerdown' | 'quit', waitMs: number, signal: AbortSignal): Promise<void> {
    const qmp = session.qmp;
    if (!qmp || qmp.closed || signal.aborted) return;
    const refused = qmp.execute(command, undefined, { timeoutMs: waitMs, signal }).then(
      () => new Promise<void>(() => {}),
      (error: unknown) => this.#log.debug({ err: error, command }, 'QEMU did not take the request to exit'),
    );
    await Promise.race([session.process.exited, sleep(waitMs, signal).catch(() => {}), refused]);
  }

  pauseVM(options?: OperationOptions): Promise<void> {
    return this.#run('pauseVM', ['running'], options, async (qmp, deadline) => {
      await qmp.execute('stop', undefined, { signal: deadline.signal });
      this.#lifecycle.to('paused');
      await this.#saveState(true);
    });
  }

  resumeVM(options?: OperationOptions): Promise<void> {
    return this.#run('resumeVM', ['paused'], options, async (qmp, deadline) => {
      await qmp.execute('cont', undefined, { signal: deadline.signal });
      this.#lifecycle.to('running');
      await this.#saveState(false);
    });
  }

  /**
   * Saves a VM created with templateDir as a template: pauses the guest, saves its device state
   * next to its RAM file, stops QEMU, then seals the directory (see template/source.ts).
   */
  async saveTemplate(options?: OperationOptions): Promise<TemplateInfo> {
    const source = this.#template;
    if (!(source instanceof TemplateSource)) {
      this.#lifecycle.require('saveTemplate', ['running', 'paused']);
      throw new InvalidStateError('saveTemplate', this.state, [], 'the VM was not created with templateDir');
    }
    if (!isDeepStrictEqual(this.#hotplug, emptyHotplugState())) {
      throw new TemplateError('device', source.dir, 'devices were hot-plugged or CPUs or memory resized since boot: a template holds the guest as its config booted it');
    }
    try {
      await this.#run('saveTemplate', ['running', 'paused'], options, async (qmp, deadline) => {
        // Set at startVM, which the states saveTemplate runs in come after.
        if (this.#stateChannel === undefined) throw new Error('saveTemplate before the start probed QEMU');
        await source.save(qmp, this.#stateChannel, deadline.signal);
        this.#lifecycle.to('paused');
      });
    } catch (error) {
      await this.stopVM();
      throw error;
    }
    await this.stopVM();
    if (this.#exitInfo && !this.#exitInfo.expected) {
      await source.discard(this.#log);
      throw new VmExitedError('saveTemplate', this.#exitInfo);
    }
    try {
      return await source.seal();
    } catch (error) {
      await source.discard(this.#log);
      throw error;
    }
  }

  /**
   * Gives up control without stopping the VM: closes QMP (QEMU serves one client at a time) so that
   * another process can attach. An owner-bound QEMU still dies when this Node process does. The
   * instance is done with the VM afterwards (its state reads 'stopped' for this instance).
   */
  async detach(): Promise<void> {
    this.#lifecycle.require('detach', ['running', 'paused']);
    this.#lifecycle.interruptPending();
    await this.#home?.settled();
    await this.#session?.detach();
    this.#session = undefined;
    this.#home = undefined;
    this.#lifecycle.to('stopped');
  }

  /**
   * Takes over a running VM from its runtime directory, as a restarted runtime must. Everything the
   * directory says is verified first (see launch/adopt.ts); the VM's uid lease becomes ours.
   */
  static async attach(runtimeDir: string, options: QemuHypervisorOptions & OperationOptions = {}): Promise<QemuHypervisor> {
    const vm = new QemuHypervisor(options);
    const { plan, saved, session } = await adoptVm(runtimeDir, leaseStore(options, false), {
      ...vm.#sessionOptions(),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
    });
    vm.#plan = plan;
    vm.#home = session.home;
    vm.#session = session;
    vm.#hotplug = saved.hotplug;
    vm.#qemuVersion = saved.qemuVersion ?? undefined;
    vm.#log = vm.#logger.child({ vmId: saved.id });
    let qmp: QmpClient;
    try {
      qmp = await session.connectQmp({ signal: options.signal, timeoutMs: options.timeoutMs ?? ATTACH_TIMEOUT_MS });
      const status = parseRunState(await qmp.execute('query-status'));
      vm.#lifecycle.to('starting');
      vm.#lifecycle.to(status === 'running' ? 'running' : 'paused');
    } catch (error) {
      // The VM is still someone's to take over: give the connection back, keep everything else.
      await session.detach();
      throw new AttachError(runtimeDir, 'QMP did not answer', { cause: error });
    }
    vm.#watchExit();
    // Devices the guest ejected while no process listened: settled now, reported once settled.
    await vm.#ejections.catchUp(qmp, { timeoutMs: ATTACH_TIMEOUT_MS }).catch((error: unknown) => {
      vm.#log.warn({ err: error }, 'could not check which hot-plugged devices QEMU still has');
    });
    vm.#log.info({ pid: saved.pid }, 'attached');
    return vm;
  }

  // ---------------------------------------------------------------- queries

  /** QEMU's pid first, then its helper daemons' (virtiofsd), as Kata's GetPids. */
  getPids(): number[] {
    const pid = this.pid;
    return pid === undefined || !this.#session ? [] : [pid, ...this.#session.helpers.pids()];
  }

  /** vCPU index → host thread id, each checked to be one of QEMU's own threads (a runtime pins them). */
  getThreadIds(options?: OperationOptions): Promise<VcpuThreadIds> {
    return this.#run('getThreadIds', ['running', 'paused'], options, async (qmp, deadline) => {
      const cpus: unknown = await qmp.execute('query-cpus-fast', undefined, { signal: deadline.signal });
      const pid = this.#session?.process.pid ?? -1;
      return checkVcpuThreadIds(cpus, taskIds(pid));
    });
  }

  /** What the VM costs and moved now: QMP for QEMU's figures, /proc for the host's (see collectStats). */
  stats(options?: StatsOptions): Promise<VmStats> {
    return this.#run('stats', ['running', 'paused'], options, (qmp, deadline) => {
      const session = this.#session as VmSession; // #run's states come after start or attach
      const plan = this.#plan as LaunchPlan;
      return collectStats({
        qmp,
        signal: deadline.signal,
        config: plan.config,
        hotplugged: this.#hotplug.devices.filter((d) => !isEjecting(d)).map((d) => d.device),
        qemu: { pid: session.process.pid, startTime: session.process.startTime },
        helpers: session.helpers.saved(),
        launcher: plan.launcherPath,
      });
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
        return parseRunState(await qmp.execute('query-status', undefined, { signal: deadline.signal }));
      });
    } catch (error) {
      if (error instanceof InvalidStateError) throw error;
      const why =
        error instanceof VmExitedError
          ? 'the hypervisor exited'
          : error instanceof VmStoppingError
            ? 'the VM is stopping'
            : error instanceof InvalidReplyError
              ? error.message
              : 'QMP does not answer';
      throw new VmUnhealthyError(why, { cause: error });
    }
    if (UNHEALTHY_RUN_STATES.has(status)) throw new VmUnhealthyError(status);
    if (this.#guestPanicked) throw new VmUnhealthyError('guest-panicked');
  }

  capabilities(): HypervisorCapabilities {
    const config = this.config;
    return capabilitiesOf(config, config ? this.#vcpuRules(config) : undefined, this.#hotplug.vcpuAdds, this.#removalTimeoutMs);
  }

  devices(): PluggedDevice[] {
    const plan = this.#plan;
    if (!plan) return [];
    const paths = pciPathsOf(plan.argv.pci, plan.config.devices);
    const cold: PluggedDevice[] = plan.config.devices.map((d) => ({
      id: d.id,
      type: d.type,
      hotplugged: false,
      ...paths.locate(d, this.#hotplug),
      ...(d.type === 'channel' ? { socketPath: plan.paths.channelSocket(d.id) } : {}),
    }));
    // A device the guest ejected is gone at once, though its backends may take a moment longer.
    const hot: PluggedDevice[] = this.#hotplug.devices.filter((d) => !isEjecting(d)).map((d) => ({ id: d.id, type: d.device.type, hotplugged: true, bus: d.bus, ...paths.locate(d.device, this.#hotplug) }));
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

  waitForEvent<N extends string>(name: N, predicate?: (event: EventOf<N>) => boolean, options?: OperationOptions): Promise<EventOf<N>> {
    return this.#lifecycle.run('waitForEvent', ['running', 'paused'], options, this.#defaultTimeoutMs, (deadline) =>
      nextEvent((listener) => this.onEvent(listener), name, predicate, deadline.signal),
    );
  }

  // ---------------------------------------------------------------- hotplug and resize

  hotplugAddDevice(device: HotplugDevice, options?: OperationOptions): Promise<HotplugResult> {
    return this.#run('hotplugAddDevice', ['running', 'paused'], options, async (qmp, deadline) => {
      assertPathsReachable(hotplugPathNeeds(device), this.#home?.identity);
      let placed;
      try {
        placed = await hotplugDevice(this.#hotplugContext(qmp, deadline), device);
      } finally {
        // Also after a rollback: a share's helper may have been recorded while it ran.
        await this.#saveState();
      }
      // hotplugDevice validated it already: this cannot throw.
      return { ...placed, ...(await this.#confirmPciPath(qmp, deadline, validateHotplugDevice(device), placed.bus)) };
    });
  }

  hotplugRemoveDevice(id: string, options?: OperationOptions): Promise<void> {
    return this.#run('hotplugRemoveDevice', ['running', 'paused'], options, async (qmp, deadline) => {
      try {
        await unplugDevice(this.#hotplugContext(qmp, deadline), id);
      } finally {
        await this.#saveState();
      }
    });
  }

  resizeMemory(targetMiB: number, options?: OperationOptions): Promise<MemoryResizeResult> {
    return this.#run('resizeMemory', ['running', 'paused'], options, async (qmp, deadline) => {
      try {
        return await resizeMemory(this.#hotplugContext(qmp, deadline), targetMiB);
      } finally {
        await this.#saveState();
      }
    });
  }

  resizeVCPUs(count: number, options?: OperationOptions): Promise<VcpuResizeResult> {
    return this.#run('resizeVCPUs', ['running', 'paused'], options, async (qmp, deadline) => {
      try {
        return await resizeVcpus(this.#hotplugContext(qmp, deadline), count);
      } finally {
        await this.#saveState();
      }
    });
  }

  /** The guest PCI path of a device just hot-added on `bus`, as QEMU confirms it. */
  async #confirmPciPath(qmp: QmpClient, deadline: Deadline, device: HotplugDeviceConfig, bus: string): Promise<DeviceLocation> {
    const plan = this.#plan as LaunchPlan; // #run's states come after createVM or attach
    const paths = pciPathsOf(plan.argv.pci, plan.config.devices);
    await paths.confirm(qmp, device, { signal: deadline.signal }, this.#log);
    // The guest may have ejected it meanwhile: its path is still the one it had.
    const listed = this.#hotplug.devices.some((d) => d.id === device.id);
    const state = listed ? this.#hotplug : { ...this.#hotplug, devices: [...this.#hotplug.devices, { id: device.id, device, bus, backends: [] }] };
    return paths.locate(device, state);
  }

  #hotplugContext(qmp: QmpClient, deadline: Deadline): HotplugContext {
    const config = this.config as SandboxConfig; // set by createVM or attach; #run's states come after
    const binary = (this.#plan as LaunchPlan).qemuPath;
    const helpers = this.#hotplugHelpers();
    return {
      ...(helpers ? { helpers } : {}),
      qmp,
      config,
      state: this.#hotplug,
      vcpuRules: this.#vcpuRules(config),
      deadline,
      logger: this.#log,
      removalTimeoutMs: deviceRemovalTimeoutMs(this.#removalTimeoutMs, config),
      freedSlotSettleMs: profileOf(config).freedSlotSettleMs,
      checkDevice: (props) => {
        // Only what was probed before a guest ran is trusted; an attached VM's binary may be unprobed.
        const features = qemuFeatures.known(binary);
        if (features?.devices.has(props.driver)) assertDevice(binary, features, props.driver, Object.keys(props).filter((key) => !DEVICE_OPTION_KEYS.has(key)));
      },
    };
  }

  /** The helper daemons of a hot-plugged share, started under the same rules as a cold share's (helpers/helper-set.ts). */
  #hotplugHelpers(): HotplugHelpers | undefined {
    const session = this.#session;
    const plan = this.#plan;
    if (!session || !plan) return undefined;
    const { paths, config } = plan;
    return {
      socketOf: (deviceId) => paths.virtiofsSocket(deviceId),
      startVirtiofsd: async (device, signal) => {
        checkSocketPath(paths.virtiofsSocket(device.id), 'device.id');
        // Resolved once, at the first share that needs it, as createVM resolves a cold share's.
        plan.virtiofsdPath ??= virtiofsdOf(config);
        await session.helpers.add(device, paths, {
          launcher: plan.launcherPath,
          virtiofsd: plan.virtiofsdPath,
          qemuUser: session.home.identity,
          runtime: config.runtime,
          logger: this.#log,
          signal,
        });
        void this.#saveState();
      },
      stop: (deviceId) => session.helpers.stop(deviceId, paths),
    };
  }

  /**
   * The vCPU rules of this VM's accel on its QEMU version (hypervisor/version-rules.ts). Before
   * QEMU runs, what an earlier VM learned of the binary stands in; never for a running QEMU whose
   * version is unknown (an adopted one may predate the binary now at its path).
   */
  #vcpuRules(config: SandboxConfig): VcpuRules {
    const plan = this.#plan;
    const beforeStart = this.#session === undefined && plan !== undefined;
    return vcpuRules(config, this.#qemuVersion ?? (beforeStart ? qemuFeatures.known(plan.qemuPath)?.version : undefined));
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

  /** The QMP connection, re-established if it was lost while QEMU still runs. */
  #connectedQmp(deadline: Deadline): Promise<QmpClient> {
    const session = this.#session;
    const qmp = session?.qmp;
    if (qmp && !qmp.closed) return Promise.resolve(qmp);
    if (!session || session.process.hasExited || session.ending) {
      return Promise.reject(new QmpDisconnectedError('the QMP connection is closed and QEMU is not running'));
    }
    return session.reconnect(deadline, RECONNECT_TIMEOUT_MS);
  }

  async #explainDisconnect(operation: string, error: unknown): Promise<unknown> {
    const session = this.#session;
    if (!(error instanceof QmpDisconnectedError) || !session) return error;
    // QEMU died on its own and the exit watcher is tearing down: the exit is why QMP dropped.
    const info = this.#exitInfo;
    if (info && !info.expected) return new VmExitedError(operation, { ...info, cause: error });
    if (session.ending) return error;
    // QMP drops a moment before the exit is reaped: give the reaper a short while to catch up.
    const exit = await session.exitWithin(EXIT_GRACE_MS);
    if (!exit) return error;
    return new VmExitedError(operation, { ...exitDetails(session, exit, this.#endReason(session.helperFailure)), cause: error });
  }

  /** Records the VM for re-attach (the home queues the writes and stops them before it goes). */
  #saveState(paused = this.state === 'paused'): Promise<void> {
    const session = this.#session;
    const plan = this.#plan;
    const home = this.#home;
    if (!session || !plan || !home || session.process.hasExited || session.ending) return Promise.resolve();
    return home.saveState(
      serializeState({
        version: STATE_FILE_VERSION,
        id: plan.config.id,
        pid: session.process.pid,
        startTime: session.process.startTime ?? -1,
        qemuPath: plan.qemuPath,
        qemuVersion: this.#qemuVersion ?? null,
        detached: plan.config.runtime.detached,
        identity: home.identity ?? null,
        leased: home.leased,
        config: plan.config,
        paused,
        hotplug: this.#hotplug,
        helpers: session.helpers.saved(),
      }),
      this.#log,
    );
  }

  /** stopVM() at the end of an `await using` scope (see Hypervisor). */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stopVM();
  }
}

/** How QEMU ended, as every path that reports an unexpected exit tells it. */
function exitDetails(session: VmSession, exit: ProcessExit, reason: string | undefined): Omit<VmExitInfo, 'expected'> {
  const details: Omit<VmExitInfo, 'expected'> = { exitCode: exit.exitCode, signal: exit.signal, stderrTail: session.process.stderrTail() };
  if (reason) details.reason = reason;
  return details;
}

function isConnectionLoss(error: unknown): boolean {
  return error instanceof QmpDisconnectedError || error instanceof QmpConnectError || error instanceof QmpProtocolError;
}
