// Waiting for one hypervisor event, shared by every backend: the events the library knows are typed
// (and their data checked before a waiter sees them: the hypervisor is not trusted), others come as
// they are.
import type { DeviceEjectedData, HypervisorEvent } from './types.ts';

/** The data of the events the library knows, by name. */
export interface KnownEventData {
  /** A guest opened (`open: true`) or closed a virtio-serial port; `id` is the channel's device id. */
  VSERPORT_CHANGE: { id: string; open: boolean };
  /** The guest or the host ended (or reset) the VM; `reason` is e.g. 'guest-reset', 'guest-shutdown', 'host-qmp-quit'. */
  SHUTDOWN: { guest: boolean; reason: string };
  /** The guest kernel panicked (reported through a pvpanic device). */
  GUEST_PANICKED: { action: string };
  DEVICE_EJECTED: DeviceEjectedData;
}

/** The names of the events whose data the library knows and checks (`KnownEventData`). */
export type KnownEventName = keyof KnownEventData;

/** The event `waitForEvent(name)` resolves with: typed data for a known name, plain data otherwise. */
export type EventOf<N extends string> = N extends KnownEventName ? { name: N; data: KnownEventData[N] & Record<string, unknown> } : HypervisorEvent;

type Fields = Record<string, unknown>;
const isString = (data: Fields, key: string) => typeof data[key] === 'string';
const isBoolean = (data: Fields, key: string) => typeof data[key] === 'boolean';

/** Whether an event's data has the shape its type promises; one entry per known event. */
const SHAPES: { readonly [N in KnownEventName]: (data: Fields) => boolean } = {
  VSERPORT_CHANGE: (d) => isString(d, 'id') && isBoolean(d, 'open'),
  SHUTDOWN: (d) => isBoolean(d, 'guest') && isString(d, 'reason'),
  GUEST_PANICKED: (d) => isString(d, 'action'),
  DEVICE_EJECTED: (d) => isString(d, 'id') && isString(d, 'type') && isString(d, 'bus'),
};

/** Whether `event` is named `name` and, for a known name, carries the data its type promises. */
export function isEventOf<N extends string>(event: HypervisorEvent, name: N): event is EventOf<N> {
  if (event.name !== name) return false;
  const shape = Object.hasOwn(SHAPES, name) ? SHAPES[name as KnownEventName] : undefined;
  return shape === undefined || shape(event.data);
}

/**
 * The next event named `name` that `predicate` accepts. Only events from now on count. Rejects with
 * the signal's reason when it aborts, or with what `predicate` throws.
 */
export function nextEvent<N extends string>(
  subscribe: (listener: (event: HypervisorEvent) => void) => () => void,
  name: N,
  predicate: ((event: EventOf<N>) => boolean) | undefined,
  signal: AbortSignal,
): Promise<EventOf<N>> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const finish = (settle: () => void) => {
      unsubscribe();
      signal.removeEventListener('abort', onAbort);
      settle();
    };
    const onAbort = () => finish(() => reject(signal.reason as Error));
    const unsubscribe = subscribe((event) => {
      if (!isEventOf(event, name)) return;
      try {
        if (predicate && !predicate(event)) return;
        finish(() => resolve(event));
      } catch (error) {
        finish(() => reject(error instanceof Error ? error : new Error(String(error))));
      }
    });
    signal.addEventListener('abort', onAbort, { once: true });
  });
}
