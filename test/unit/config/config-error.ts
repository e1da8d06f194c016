// Shared by the config tests: the ConfigError a rejected config throws.
import { expect } from 'vitest';
import { ConfigError } from '../../../src/hypervisor/config/index.ts';

/** Runs `fn`, which must throw a ConfigError, and returns it. */
export function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('expected a ConfigError, but the config was accepted');
}
