// Making the real test guest give up a hot-plugged PCI device on its own, as a guest does when
// pciehp powers a slot off: QEMU then unplugs the device and reports DEVICE_DELETED. (Writing 1 to
// the device's own sysfs `remove` file only drops the guest's view: QEMU keeps the device.)
import type { GuestAgent } from '../../guest/index.ts';

/**
 * Powers off, in the guest, the hot-plug slot of the PCI function `deviceLink` sits under (a sysfs
 * link such as /sys/block/vdb/device, /sys/block/sda/device or /sys/class/net/eth1/device). Returns
 * the slot's name and the function's address.
 */
export async function powerOffSlotOf(agent: GuestAgent, deviceLink: string): Promise<{ slot: string; address: string }> {
  // The last PCI address in the device's path is its function; a slot's `address` is its bus:device.
  const out = await agent.runOk(
    `pci=$(readlink -f ${deviceLink} | grep -o '[0-9a-f]\\{4\\}:[0-9a-f]\\{2\\}:[0-9a-f]\\{2\\}\\.[0-7]' | tail -n 1); for s in /sys/bus/pci/slots/*; do [ "$(cat $s/address)" = "\${pci%.*}" ] && echo "\${s##*/} $pci" && echo 0 > $s/power; done; true`,
  );
  const [slot, address] = out.trim().split(' ');
  if (!slot || !address) throw new Error(`no hot-plug slot holds the PCI function behind ${deviceLink}`);
  return { slot, address };
}

/** The guest's block device (vdX, sdX) whose first bytes are `marker`; undefined when none is. */
export async function diskWithMarker(agent: GuestAgent, marker: string): Promise<string | undefined> {
  const out = await agent.runOk(`for d in /sys/block/vd* /sys/block/sd*; do [ -e "$d" ] || continue; n=\${d##*/}; [ "$(head -c ${marker.length} /dev/$n)" = "${marker}" ] && echo $n; done; true`);
  return out.trim().split('\n').find(Boolean);
}

/** The guest's network interface with `mac`; undefined when none has it. */
export async function nicWithMac(agent: GuestAgent, mac: string): Promise<string | undefined> {
  return (await agent.netInterfaces()).find((i) => i.mac === mac.toLowerCase())?.name;
}
