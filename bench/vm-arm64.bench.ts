// `npm run bench -- vm-arm64`: the VM figures of bench/vm.bench.ts on aarch64's virt machine (the
// arm64 test guest, qemu-system-aarch64 of the version under benchmark), beside x86_64's.
import { BENCH_ARCHES } from './arch.ts';
import { runVm } from './vm.bench.ts';

export function run(): Promise<void> {
  return runVm(BENCH_ARCHES.aarch64);
}
