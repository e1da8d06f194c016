// The documented config types (src/hypervisor/config/types.ts) are written by hand so that their
// comments reach the declarations; here the compiler proves each is exactly what the zod schema
// accepts or returns, so the two cannot drift: `npx tsc --noEmit` fails on any difference.
import { describe, expect, it } from 'vitest';
import { parseSandboxConfig, type SandboxConfig, type SandboxConfigInput } from '../../../src/hypervisor/config/index.ts';
import type { InferredSandboxConfig, InferredSandboxConfigInput } from '../../../src/hypervisor/config/schema.ts';

/** True only when A and B are the same type (not merely assignable either way). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}

// Identity is checked section by section as well, so that a difference names the section.
type Sections = keyof InferredSandboxConfig;
type SectionsEqual<I, D> = { [K in Sections]: Equal<I[K & keyof I], D[K & keyof D]> };
type AllTrue<T> = false extends T[keyof T] ? false : true;

assertType<Equal<SandboxConfigInput, InferredSandboxConfigInput>>();
assertType<Equal<SandboxConfig, InferredSandboxConfig>>();
assertType<AllTrue<SectionsEqual<InferredSandboxConfigInput, SandboxConfigInput>>>();
assertType<AllTrue<SectionsEqual<InferredSandboxConfig, SandboxConfig>>>();
assertType<Equal<Sections, keyof SandboxConfig>>();

// The checks themselves are sound: a type that differs in one optional field is told apart.
assertType<Equal<false, Equal<SandboxConfigInput, Omit<SandboxConfigInput, 'id'>>>>();
assertType<Equal<false, Equal<SandboxConfig, SandboxConfig & { extra?: string }>>>();
assertType<Equal<false, Equal<SandboxConfig['cpus'], { boot: number; max?: number }>>>();

describe('documented config types', () => {
  it('type what parseSandboxConfig returns', () => {
    const input: SandboxConfigInput = { boot: { kernel: '/vmlinuz' }, machine: { accel: 'tcg' } };
    const config: SandboxConfig = parseSandboxConfig(input);
    expect(config.machine.cpuModel).toBe('max');
    expect(config.cpus).toEqual({ boot: 1, max: 1 });
  });
});
