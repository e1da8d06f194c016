import { defineConfig, type TestProjectInlineConfiguration } from 'vitest/config';
import { qemusUnderTest } from './scripts/qemu-versions.mjs';

/** The fast suite: fake QMP servers and pure functions, no QEMU. Also what mutation testing runs. */
export const unitProject: TestProjectInlineConfiguration = {
  extends: true,
  test: {
    name: 'unit',
    include: ['test/unit/**/*.test.ts'],
    testTimeout: 10_000,
  },
};

/** Every integration project's name begins with this; the QEMU version follows (.ci/run counts per project). */
export const INTEGRATION_PROJECT_PREFIX = 'integration · qemu ';

/**
 * The integration suite (the conformance suite included) once per QEMU of the version matrix
 * (scripts/qemu-versions.mjs: Debian's 7.2 and the side-by-side 10.0, or SANDBOX_VMM_QEMU alone),
 * each project named by the version its binary reports and handed that binary in SANDBOX_VMM_QEMU.
 * Real QEMU under TCG on a shared 2-core machine: one file at a time, and each version in a
 * sequence group of its own (after the unit tests), so two versions never run at once.
 */
function integrationProjects(): TestProjectInlineConfiguration[] {
  const seen = new Set<string>();
  return qemusUnderTest(import.meta.dirname).map(({ binary, label }, i) => {
    const name = seen.has(label) ? `${INTEGRATION_PROJECT_PREFIX}${label} (${binary})` : `${INTEGRATION_PROJECT_PREFIX}${label}`;
    seen.add(label);
    return {
      extends: true,
      test: {
        name,
        include: ['test/integration/**/*.test.ts'],
        env: { SANDBOX_VMM_QEMU: binary },
        testTimeout: 120_000,
        hookTimeout: 120_000,
        fileParallelism: false,
        maxWorkers: 1,
        sequence: { groupOrder: i + 1 },
        globalSetup: ['test/integration/global-setup.ts'],
      },
    };
  });
}

export default defineConfig({
  test: {
    projects: [
      unitProject,
      ...integrationProjects(),
      {
        extends: true,
        test: {
          // The package as a consumer gets it: packed once (test/package/global-setup.ts), linted,
          // installed offline into a scratch project, imported and type-checked; the README's code
          // and the API reference's doc comments checked against it.
          name: 'package',
          include: ['test/package/**/*.test.ts'],
          // tsc and TypeDoc check whole programs: bounds for a 2-core machine QEMU keeps busy.
          testTimeout: 300_000,
          hookTimeout: 300_000,
          globalSetup: ['test/package/global-setup.ts'],
        },
      },
    ],
  },
});
