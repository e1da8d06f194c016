// A template VM's and a clone's QEMU command line: the VM's own argv with the boot RAM in the
// template's file, a VM generation id (a clone's guest sees a new one and reseeds its random number
// generator), and for a clone, QEMU waiting for its device state (-incoming defer), which it gets
// over QMP (state-channel.ts).
import type { QemuArgv } from '../argv/index.ts';
import { renderOptions, type OptionProps } from '../argv/qemu-opts.ts';
import { BOOT_MEMORY_ID } from '../devices/memory.ts';

/** QEMU's vmgenid device: guid=auto gives every QEMU process a new generation id. */
const VMGENID_ARGS = ['-device', renderOptions({ driver: 'vmgenid', id: 'svmm-vmgenid', guid: 'auto' }, 'driver')];

/** `argv` was built from the config with anonymous memory and no prealloc: no boot backend of its own. */
export function templateArgv(argv: QemuArgv, ram: OptionProps, options: { incoming?: boolean } = {}): QemuArgv {
  const args = [...argv.args];
  const machine = args.indexOf('-machine');
  if (machine < 0 || args[machine + 1] === undefined || args[machine + 1]?.includes('memory-backend=')) {
    throw new Error('a template VM\'s argv must have a -machine option without a memory backend');
  }
  args[machine + 1] = `${args[machine + 1]},memory-backend=${BOOT_MEMORY_ID}`;
  args.push('-object', renderOptions(ram, 'qom-type'), ...VMGENID_ARGS);
  if (options.incoming) args.push('-incoming', 'defer');
  return { ...argv, args };
}
