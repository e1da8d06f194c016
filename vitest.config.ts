import { defineConfig, type TestProjectInlineConfiguration } from 'vitest/config';

/** The fast suite: fake QMP servers and pure functions, no QEMU. Also what mutation testing runs. */
export const unitProject: TestProjectInlineConfiguration = {
  extends: true,
  test: {
    name: 'unit',
    include: ['test/unit/**/*.test.ts'],
    testTimeout: 10_000,
  },
};

export default defineConfig({
  test: {
    projects: [
      unitProject,
      {
        extends: true,
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          // Real QEMU under TCG on a shared 2-core machine: generous bounds, one file at a time.
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
          globalSetup: ['test/integration/global-setup.ts'],
        },
      },
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
