// What StrykerJS runs against each mutant (stryker.config.mjs): the unit project alone, since the
// vitest runner cannot pick a project, and the integration suite needs real QEMU.
import { defineConfig } from 'vitest/config';
import { unitProject } from './vitest.config.ts';

export default defineConfig({
  test: {
    projects: [unitProject],
    // The QMP fuzz test draws a random seed otherwise: fixed, so a mutant's verdict is repeatable.
    // 200 of its 4000 rounds: the full run is most of the unit time of every QMP mutant it covers,
    // and the deterministic tests carry the score (mutation-report.md: the fuzz test adds one kill).
    env: { QMP_FUZZ_SEED: '12345', QMP_FUZZ_ITERATIONS: '200' },
  },
});
