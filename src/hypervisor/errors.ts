// Errors of the backend-neutral Hypervisor interface. Every backend throws these, so a runtime can
// switch on `code` without knowing which hypervisor is underneath.
import { SandboxVmmError, type SandboxVmmErrorOptions } from '../errors.ts';
import type { VmState } from './types.ts';

/** An operation was called in a state that does not allow it; the message says what to call first. */
export class InvalidStateError extends SandboxVmmError<'INVALID_STATE'> {
  readonly operation: string;
  readonly state: VmState;

  /** `why` replaces the default explanation (the states that would be allowed, and what leads to one). */
  constructor(operation: string, state: VmState, allowed: readonly VmState[], why?: string) {
    super('INVALID_STATE', why ? `${operation} is not allowed: ${why}` : `${operation} is not allowed while the VM is ${state} (allowed: ${allowed.join(', ')}): ${whatToDo(state, allowed)}`);
    this.operation = operation;
    this.state = state;
  }
}

/** An instance drives one VM, once: past stopVM (or a failed start) only a new instance helps. */
export const SINGLE_USE = 'an instance is single-use (one VM, once): create a new instance for another VM';

/** What leads from `state` to one of the `allowed` states, in the words of the calls that get there. */
function whatToDo(state: VmState, allowed: readonly VmState[]): string {
  if (allowed.length === 1 && allowed[0] === 'new') return `createVM was already called; ${SINGLE_USE}`;
  switch (state) {
    case 'new':
      return 'call createVM first';
    case 'created':
      return 'call startVM first';
    case 'starting':
      return 'wait for startVM to resolve';
    case 'running':
      return allowed.includes('paused') ? 'call pauseVM first' : 'the VM is already running';
    case 'paused':
      return allowed.includes('running') ? 'call resumeVM first' : 'the VM is already paused';
    case 'stopping':
    case 'stopped':
      return SINGLE_USE;
  }
}

/** How the hypervisor process ended, as carried by the errors that report it. */
export interface ExitDetails {
  exitCode?: number | undefined;
  signal?: string | undefined;
  stderrTail?: string | undefined;
  /** Why it ended, when it was not the hypervisor's own doing (e.g. a helper daemon died). */
  reason?: string | undefined;
}

/** "was killed by SIGKILL", "exited with status 1"…, with the reason and stderr tail when known. */
export function describeExit(details: ExitDetails): string {
  const how =
    details.signal !== undefined
      ? `was killed by ${details.signal}`
      : details.exitCode !== undefined
        ? `exited with status ${details.exitCode}`
        : 'exited';
  const why = details.reason ? ` because ${details.reason}` : '';
  const tail = details.stderrTail?.trim();
  return tail ? `${how}${why}; stderr: ${tail}` : `${how}${why}`;
}

/** startVM failed; the hypervisor process was killed and reaped and its runtime directory removed. */
export class VmStartError extends SandboxVmmError<'VM_START_FAILED'> {
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly stderrTail: string | undefined;

  constructor(reason: string, details: ExitDetails & SandboxVmmErrorOptions = {}) {
    const exited = details.exitCode !== undefined || details.signal !== undefined;
    super('VM_START_FAILED', `startVM failed: ${reason}${exited ? ` (the hypervisor ${describeExit(details)})` : details.stderrTail?.trim() ? ` (stderr: ${details.stderrTail.trim()})` : ''}`, details);
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stderrTail = details.stderrTail;
  }
}

/**
 * startVM's `waitForChannel`: the guest did not open the channel before the start's deadline (or
 * abort). A start failure like any other: the VM is stopped and cleaned up.
 */
export class GuestNotReadyError extends VmStartError {
  /** The channel's device id. */
  readonly channel: string;

  constructor(channel: string, details: ExitDetails & SandboxVmmErrorOptions = {}) {
    super(`the guest did not open channel '${channel}' in time`, details);
    this.channel = channel;
  }
}

/** The hypervisor process exited while an operation needed it. */
export class VmExitedError extends SandboxVmmError<'VM_EXITED'> {
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly stderrTail: string | undefined;

  constructor(operation: string, details: ExitDetails & SandboxVmmErrorOptions = {}) {
    super('VM_EXITED', `${operation} failed: the hypervisor ${describeExit(details)}`, details);
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stderrTail = details.stderrTail;
  }
}

/** An operation was still pending when stopVM was called; it was abandoned. */
export class VmStoppingError extends SandboxVmmError<'VM_STOPPING'> {
  readonly operation: string;

  constructor(operation: string) {
    super('VM_STOPPING', `${operation} was interrupted because stopVM was called`);
    this.operation = operation;
  }
}

/** check() found the guest in a bad state (panicked, internal error) or the hypervisor gone. */
export class VmUnhealthyError extends SandboxVmmError<'VM_UNHEALTHY'> {
  readonly status: string;

  constructor(status: string, options: SandboxVmmErrorOptions = {}) {
    super('VM_UNHEALTHY', `the VM is unhealthy: ${status}`, options);
    this.status = status;
  }
}

/** Every slot a device kind can be plugged into is taken. */
export class NoFreeSlotError extends SandboxVmmError<'NO_FREE_SLOT'> {
  readonly deviceId: string;

  constructor(deviceId: string, what: string) {
    super('NO_FREE_SLOT', `cannot hotplug ${deviceId}: no free ${what} (reserve more in the config)`);
    this.deviceId = deviceId;
  }
}

/** `DEVICE_EXISTS`: a device with that id is already plugged; ids are unique per VM. */
export class DeviceExistsError extends SandboxVmmError<'DEVICE_EXISTS'> {
  readonly deviceId: string;

  constructor(deviceId: string) {
    super('DEVICE_EXISTS', `a device with id '${deviceId}' is already plugged`);
    this.deviceId = deviceId;
  }
}

/** `DEVICE_NOT_FOUND`: no hot-plugged device has that id (never plugged, removed, or ejected by the guest). */
export class DeviceNotFoundError extends SandboxVmmError<'DEVICE_NOT_FOUND'> {
  readonly deviceId: string;

  constructor(deviceId: string) {
    super('DEVICE_NOT_FOUND', `no hot-pluggable device with id '${deviceId}'`);
    this.deviceId = deviceId;
  }
}

/** A hotplug step failed; whatever had already been added was rolled back. */
export class HotplugError extends SandboxVmmError<'HOTPLUG_FAILED'> {
  readonly deviceId: string;
  readonly step: string;

  constructor(deviceId: string, step: string, options: SandboxVmmErrorOptions = {}) {
    const detail = options.cause instanceof Error ? `: ${options.cause.message}` : '';
    super('HOTPLUG_FAILED', `hotplug of ${deviceId} failed at ${step}${detail}`, options);
    this.deviceId = deviceId;
    this.step = step;
  }
}

/** The guest did not release a device in time. The device stays plugged and accounted for. */
export class DeviceRemovalTimeoutError extends SandboxVmmError<'DEVICE_REMOVAL_TIMEOUT'> {
  readonly deviceId: string;
  readonly timeoutMs: number;
  /**
   * True when the guest was never asked: the hypervisor refused every request to remove the device
   * because the guest was busy with its slot (QEMU: a PCIe slot whose power indicator blinks, while
   * the guest still settles a hot-add). `cause` is the last refusal.
   */
  readonly guestBusy: boolean;

  constructor(deviceId: string, timeoutMs: number, options: SandboxVmmErrorOptions & { guestBusy?: boolean } = {}) {
    const guestBusy = options.guestBusy ?? false;
    super(
      'DEVICE_REMOVAL_TIMEOUT',
      guestBusy
        ? `the guest was busy with the slot of ${deviceId} for ${timeoutMs} ms (power indicator blinking), so its removal could not be asked for; it is still plugged`
        : `the guest did not release ${deviceId} within ${timeoutMs} ms (no DEVICE_DELETED); it is still plugged`,
      options,
    );
    this.deviceId = deviceId;
    this.timeoutMs = timeoutMs;
    this.guestBusy = guestBusy;
  }
}

/** A resize asked for more (or less) than the config allows. */
export class ResourceLimitError extends SandboxVmmError<'RESOURCE_LIMIT'> {
  readonly resource: 'memory' | 'cpus';
  readonly requested: number;
  readonly limit: number;

  constructor(resource: 'memory' | 'cpus', requested: number, limit: number, bound: 'max' | 'min', reason?: string) {
    const unit = resource === 'memory' ? ' MiB' : '';
    super('RESOURCE_LIMIT', `cannot resize ${resource} to ${requested}${unit}: ${reason ?? `the ${bound === 'max' ? 'maximum' : 'minimum'} is ${limit}${unit}`}`);
    this.resource = resource;
    this.requested = requested;
    this.limit = limit;
  }
}

/**
 * Under tcg on QEMU >= 10 a VM can hot-add at most `budget` (cpus.max - cpus.boot) vCPUs over its
 * whole life, removed ones included (see hypervisor/version-rules.ts); `used` of them are spent.
 * `limit` is the highest vCPU count still reachable.
 */
export class VcpuAddBudgetError extends ResourceLimitError {
  readonly budget: number;
  readonly used: number;

  constructor(requested: number, reachable: number, budget: number, used: number) {
    super(
      'cpus',
      requested,
      reachable,
      'max',
      `the lifetime vCPU hot-add budget under tcg is ${budget} (cpus.max - cpus.boot) and ${used} of it ${used === 1 ? 'is' : 'are'} used, ` +
        `so at most ${reachable} vCPUs can be reached (QEMU never returns a removed vCPU's TCG context; one more add would abort it)`,
    );
    this.budget = budget;
    this.used = used;
  }
}

/**
 * A memory resize stopped before reaching its target; `reachedMiB` is where it stands. With
 * virtio-mem, the guest plugs what is asked: one that has not booted yet, or does not online new
 * memory, stops short.
 */
export class ResizeIncompleteError extends SandboxVmmError<'RESIZE_INCOMPLETE'> {
  readonly targetMiB: number;
  readonly reachedMiB: number;

  /** `hint`: what to check, appended to the message. */
  constructor(targetMiB: number, reachedMiB: number, options: SandboxVmmErrorOptions & { hint?: string } = {}) {
    super('RESIZE_INCOMPLETE', `memory resize to ${targetMiB} MiB stopped at ${reachedMiB} MiB${options.hint ? `: ${options.hint}` : ''}`, options);
    this.targetMiB = targetMiB;
    this.reachedMiB = reachedMiB;
  }
}

/** The backend or the config cannot do this at all. */
export class UnsupportedOperationError extends SandboxVmmError<'UNSUPPORTED'> {
  readonly operation: string;

  constructor(operation: string, reason: string) {
    super('UNSUPPORTED', `${operation} is not supported: ${reason}`);
    this.operation = operation;
  }
}

/** Re-attaching to a running VM from its runtime directory failed. */
export class AttachError extends SandboxVmmError<'ATTACH_FAILED'> {
  readonly runtimeDir: string;

  constructor(runtimeDir: string, reason: string, options: SandboxVmmErrorOptions = {}) {
    super('ATTACH_FAILED', `cannot attach to the VM in ${runtimeDir}: ${reason}`, options);
    this.runtimeDir = runtimeDir;
  }
}

/** A helper daemon of the VM (virtiofsd) failed to start or died; the VM cannot work without it. */
export class HelperError extends SandboxVmmError<'HELPER_FAILED'> {
  readonly helper: string;
  readonly deviceId: string;
  readonly exitCode: number | undefined;
  readonly signal: string | undefined;
  readonly stderrTail: string | undefined;

  constructor(helper: string, deviceId: string, what: string, details: ExitDetails & SandboxVmmErrorOptions = {}) {
    const tail = details.stderrTail?.trim();
    super('HELPER_FAILED', `${helper} for ${deviceId} ${what}${tail ? `; stderr: ${tail}` : ''}`, details);
    this.helper = helper;
    this.deviceId = deviceId;
    this.exitCode = details.exitCode;
    this.signal = details.signal;
    this.stderrTail = details.stderrTail;
  }
}

/**
 * The hypervisor answered with something that is not what the command returns: a wrong shape, or
 * values that cannot be true (a vCPU thread that is not one of the hypervisor's own). Nothing is
 * done with such a reply; a runtime should treat the hypervisor as compromised or broken.
 */
export class InvalidReplyError extends SandboxVmmError<'INVALID_REPLY'> {
  readonly command: string;

  constructor(command: string, problem: string, options: SandboxVmmErrorOptions = {}) {
    super('INVALID_REPLY', `the hypervisor's reply to ${command} is invalid: ${problem}`, options);
    this.command = command;
  }
}

/**
 * The hypervisor binary lacks something the VM needs: a QMP command, a device, a property of a
 * device or of the machine type (an older QEMU than the library was proven with, e.g. 6.2), found
 * by the feature probe. `feature` names it as QEMU would (`device_add`, `virtio-mem-pci`,
 * `virtio-blk-pci.queue-size`, `machine pc-q35-6.2-machine.memory-backend`).
 */
export class MissingFeatureError extends SandboxVmmError<'FEATURE_MISSING'> {
  readonly binary: string;
  readonly kind: 'command' | 'device' | 'device-property' | 'machine-property';
  readonly feature: string;

  constructor(binary: string, kind: MissingFeatureError['kind'], feature: string, version?: string) {
    const what = { command: 'the QMP command', device: 'the device', 'device-property': 'the device property', 'machine-property': 'the machine property' }[kind];
    super('FEATURE_MISSING', `${binary}${version ? ` (QEMU ${version})` : ''} lacks ${what} ${feature}, which this VM needs`);
    this.binary = binary;
    this.kind = kind;
    this.feature = feature;
  }
}

/** Why a template was refused (see TemplateError). */
export type TemplateProblem =
  /** The directory holds no template (no manifest), or createVM's templateDir already exists. */
  | 'not-a-template'
  | 'exists'
  /** The manifest, the device state or the RAM file is not what the template recorded. */
  | 'corrupt'
  | 'ram-file-missing'
  /** The directory or a file in it could be changed by someone other than root (or is a link). */
  | 'unsafe'
  /** Made by another hypervisor version or machine type than the one that would restore it. */
  | 'hypervisor-version'
  | 'machine-type'
  /** The clone's config differs from the template's where the guest's layout is decided. */
  | 'config'
  /** A device that cannot be saved with the guest, or must differ per sandbox. */
  | 'device'
  /** The backend (or its hypervisor version) cannot make or restore templates. */
  | 'unsupported';

/**
 * A template cannot be made or used: `problem` says why, `field` names the config field when one is
 * to blame. Nothing was started and nothing is left behind.
 */
export class TemplateError extends SandboxVmmError<'TEMPLATE_REFUSED'> {
  readonly problem: TemplateProblem;
  readonly templateDir: string;
  readonly field: string | undefined;

  constructor(problem: TemplateProblem, templateDir: string, detail: string, options: SandboxVmmErrorOptions & { field?: string } = {}) {
    super('TEMPLATE_REFUSED', `template ${templateDir} refused (${problem}): ${detail}`, options);
    this.problem = problem;
    this.templateDir = templateDir;
    this.field = options.field;
  }
}
