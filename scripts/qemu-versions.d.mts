// Types of scripts/qemu-versions.mjs (plain Node, shared with the bootstrap) for vitest.config.ts and the benchmarks.
export declare const SYSTEM_QEMU: string;
export declare function qemuCacheDir(repositoryRoot: string): string;
export declare const DEBIAN_ARCHIVE: { readonly keyring: string; readonly mirror: string; readonly suites: readonly string[] };
export declare const SIDE_BY_SIDE: readonly { readonly version: string; readonly packages: Readonly<Record<string, string>> }[];
export declare function sideBySideRoot(cacheDir: string, version: string): string;
export declare function sideBySideQemu(cacheDir: string, version: string): string;
export declare function qemuVersionOf(binary: string): string | undefined;
export declare function qemusUnderTest(repositoryRoot: string): { binary: string; label: string }[];
