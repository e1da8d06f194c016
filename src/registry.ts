// Picks a backend by name, so that a runtime can swap hypervisors through its own configuration:
// 'qemu' and 'mock' are built in, and users register their own kinds.
import { SandboxVmmError } from './errors.ts';
import type { Hypervisor } from './hypervisor/types.ts';
import { MockHypervisor, type MockHypervisorOptions } from './mock/index.ts';
import { QemuHypervisor, type QemuHypervisorOptions } from './qemu/qemu-hypervisor.ts';

/**
 * The known kinds, each with its options and what it creates. A backend of your own gets typed
 * options by augmenting this interface:
 *
 *   declare module 'sandbox-vmm' {
 *     interface HypervisorKinds { ch: { options: ChOptions; hypervisor: ChHypervisor } }
 *   }
 */
export interface HypervisorKinds {
  qemu: { options: QemuHypervisorOptions; hypervisor: QemuHypervisor };
  mock: { options: MockHypervisorOptions; hypervisor: MockHypervisor };
}

/** The kinds `HypervisorKinds` declares: built-in `qemu` and `mock`, and those you add to it. */
export type KnownHypervisorKind = Extract<keyof HypervisorKinds, string>;
/** The options of a kind: its declared ones, or an open record for an undeclared kind. */
export type HypervisorOptionsOf<K extends string> = K extends KnownHypervisorKind ? HypervisorKinds[K]['options'] : Record<string, unknown>;
/** What `createHypervisor(kind)` returns: the declared class of a known kind, or a `Hypervisor`. */
export type HypervisorOf<K extends string> = K extends KnownHypervisorKind ? HypervisorKinds[K]['hypervisor'] : Hypervisor;
/** A function that makes a hypervisor of a kind from its options, as `registerHypervisor` takes it. */
export type HypervisorFactory<K extends string = string> = (options: HypervisorOptionsOf<K>) => HypervisorOf<K>;

/** Options of `registerHypervisor`. */
export interface RegisterOptions {
  /** Replace a kind that is already registered (built-in ones included). Default false. */
  replace?: boolean;
}

/** createHypervisor was asked for a kind nobody registered. */
export class UnknownHypervisorError extends SandboxVmmError<'UNKNOWN_HYPERVISOR'> {
  readonly kind: string;
  readonly known: readonly string[];

  constructor(kind: string, known: readonly string[]) {
    super('UNKNOWN_HYPERVISOR', `no hypervisor backend '${kind}' (known: ${known.join(', ')}); register it with registerHypervisor()`);
    this.kind = kind;
    this.known = known;
  }
}

/** registerHypervisor was given a kind that is taken, without `replace`. */
export class HypervisorKindTakenError extends SandboxVmmError<'HYPERVISOR_KIND_TAKEN'> {
  readonly kind: string;

  constructor(kind: string) {
    super('HYPERVISOR_KIND_TAKEN', `a hypervisor backend '${kind}' is already registered; pass { replace: true } to replace it`);
    this.kind = kind;
  }
}

type AnyFactory = (options: never) => Hypervisor;

const factories = new Map<string, AnyFactory>([
  ['qemu', (options: QemuHypervisorOptions) => new QemuHypervisor(options)],
  ['mock', (options: MockHypervisorOptions) => new MockHypervisor(options)],
]);

/**
 * A new, unused backend of `kind`; UnknownHypervisorError names the registered kinds otherwise. A
 * known kind takes its own options (a misspelt one does not compile) and returns its own class.
 */
export function createHypervisor<K extends string>(kind: K, options?: HypervisorOptionsOf<K>): HypervisorOf<K> {
  const factory = factories.get(kind);
  if (!factory) throw new UnknownHypervisorError(kind, listHypervisors());
  return (factory as (options: object) => HypervisorOf<K>)(options ?? {});
}

/**
 * Makes `kind` available to createHypervisor. Returns a function that undoes the registration
 * (restoring the kind it replaced, if any), which tests use to leave the registry as they found it.
 */
export function registerHypervisor<K extends string>(kind: K, factory: HypervisorFactory<K>, options: RegisterOptions = {}): () => void {
  const previous = factories.get(kind);
  if (previous && !options.replace) throw new HypervisorKindTakenError(kind);
  const registered = factory as AnyFactory;
  factories.set(kind, registered);
  return () => {
    if (factories.get(kind) !== registered) return;
    if (previous) factories.set(kind, previous);
    else factories.delete(kind);
  };
}

/** The registered kinds, sorted. */
export function listHypervisors(): string[] {
  return [...factories.keys()].sort();
}
