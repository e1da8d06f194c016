// What an integration test made, undone after it (newest first) whether it passed or not: VMs are
// stopped, agents closed, files and taps removed.
import { afterEach } from 'vitest';

export function useCleanups(): { cleanups: (() => unknown)[]; track: <V extends { stopVM(): Promise<void> }>(vm: V) => V } {
  const cleanups: (() => unknown)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });
  return {
    cleanups,
    track: (vm) => {
      cleanups.push(() => vm.stopVM());
      return vm;
    },
  };
}
