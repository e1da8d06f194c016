// Validation entry points: a whole sandbox config, or one device (for hotplug). Every failure is a
// ConfigError listing each bad field by its path.
import type { z } from 'zod';
import { ConfigError, type ConfigIssue } from './errors.ts';
import { hotplugDeviceSchema, type HotplugDeviceConfig } from './devices.ts';
import { sandboxConfigSchema } from './schema.ts';
import type { SandboxConfig } from './types.ts';

export * from './devices.ts';
export * from './errors.ts';
export { MAX_SOCKET_PATH_BYTES } from './fields.ts';
export { GUEST_MEMORY_BLOCK_MiB, MAX_KERNEL_CMDLINE_BYTES, MEMORY_ALIGN_MiB, sandboxConfigSchema } from './schema.ts';
export type * from './types.ts';

/** Validates a config and fills its defaults; throws ConfigError naming every bad field. */
export function parseSandboxConfig(input: unknown): SandboxConfig {
  const result = sandboxConfigSchema.safeParse(input);
  if (!result.success) throw new ConfigError(toIssues(result.error.issues));
  return result.data;
}

/** Validates one hot-pluggable device; `path` prefixes the fields in the error (e.g. 'device'). */
export function validateHotplugDevice(input: unknown, path = 'device'): HotplugDeviceConfig {
  const result = hotplugDeviceSchema.safeParse(input);
  if (!result.success) throw new ConfigError(toIssues(result.error.issues, path));
  return result.data;
}

function toIssues(issues: readonly z.core.$ZodIssue[], prefix = ''): ConfigIssue[] {
  return issues.flatMap((issue) => {
    const at = formatPath(issue.path, prefix);
    // "Unrecognized key" is reported on the parent object: name each unknown field instead.
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ path: joinPath(at, key), message: 'is not a known field' }));
    }
    return [{ path: at, message: issue.message }];
  });
}

function formatPath(path: readonly PropertyKey[], prefix: string): string {
  return path.reduce<string>((out, key) => (typeof key === 'number' ? `${out}[${key}]` : joinPath(out, String(key))), prefix);
}

function joinPath(base: string, key: string): string {
  return base ? `${base}.${key}` : key;
}
