// Mutation testing of the unit tests: `npm run test:mutation` mutates the hotplug code by default;
// point it at another group with `npm run test:mutation -- --mutate 'src/qmp/**/*.ts'`.
// Reports go to reports/mutation/ (not in git).
/** @type {import('@stryker-mutator/api/core').PartialStrykerOptions} */
export default {
  testRunner: 'vitest',
  vitest: { configFile: 'vitest.stryker.config.ts', related: true },
  mutate: ['src/qemu/hotplug/**/*.ts'],
  coverageAnalysis: 'perTest',
  // A 2-core machine shared with other work.
  concurrency: 2,
  reporters: ['clear-text', 'progress', 'html', 'json'],
  htmlReporter: { fileName: 'reports/mutation/mutation.html' },
  jsonReporter: { fileName: 'reports/mutation/mutation.json' },
  // A mutant the compiler rejects is not a gap in the tests: src/qmp/surface.ts is a table whose
  // type names every member, and emptying one does not compile. The checker drops those (reported
  // as CompileError, outside the score) before any test runs.
  checkers: ['typescript'],
  tsconfigFile: 'tsconfig.json',
  typescriptChecker: { prioritizePerformanceOverAccuracy: true },
  // Not copied into the sandbox: the guest-image cache (a symlink here) and earlier reports.
  ignorePatterns: ['/.cache', '/reports', '/dist'],
  tempDirName: '.stryker-tmp',
  cleanTempDir: 'always',
};
