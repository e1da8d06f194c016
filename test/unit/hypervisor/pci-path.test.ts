// The two forms of a guest PCI path, and the firmware's bus numbering rule they depend on.
import { describe, expect, it } from 'vitest';
import { firmwareBusNumbers, guestPciPath, parseGuestPciPath, type RootBusSlot } from '../../../src/hypervisor/pci-path.ts';

describe('guestPciPath', () => {
  it("writes Kata's slot path and the sysfs chain of the same hops", () => {
    expect(guestPciPath([{ bus: 0, slot: 2 }])).toEqual({ path: '02', sysfs: '0000:00:02.0' });
    expect(
      guestPciPath([
        { bus: 0, slot: 0x1e },
        { bus: 0x1a, slot: 0 },
      ]),
    ).toEqual({ path: '1e/00', sysfs: '0000:00:1e.0/0000:1a:00.0' });
  });

  it('names function 0 on every hop: sysfs spells it out, Kata\'s form leaves it implied', () => {
    const pci = guestPciPath([
      { bus: 0, slot: 0x11 },
      { bus: 9, slot: 0 },
    ]);
    expect(pci).toEqual({ path: '11/00', sysfs: '0000:00:11.0/0000:09:00.0' });
    expect(pci.path).not.toContain('.');
  });

  it('refuses what is not a PCI address', () => {
    expect(() => guestPciPath([])).toThrow(RangeError);
    for (const hop of [
      { bus: 256, slot: 0 },
      { bus: 0, slot: 32 },
      { bus: -1, slot: 0 },
      { bus: 0, slot: -1 },
      { bus: 0, slot: 1.5 },
    ]) {
      expect(() => guestPciPath([hop])).toThrow(RangeError);
    }
  });
});

describe('parseGuestPciPath', () => {
  it('reads back the hops guestPciPath wrote', () => {
    const hops = [
      { bus: 0, slot: 0x1d },
      { bus: 3, slot: 0 },
    ];
    expect(parseGuestPciPath(guestPciPath(hops))).toEqual(hops);
  });

  it.each([
    [{ path: '02/00', sysfs: '0000:00:02.0' }, 'different numbers of hops'],
    [{ path: '2', sysfs: '0000:00:02.0' }, "not Kata's form"],
    [{ path: '02.0', sysfs: '0000:00:02.0' }, "not Kata's form"],
    [{ path: '02.1', sysfs: '0000:00:02.1' }, "not Kata's form"],
    [{ path: '02.1/00', sysfs: '0000:00:02.1/0000:02:00.0' }, "not Kata's form"],
    [{ path: '02/00.1', sysfs: '0000:00:02.0/0000:02:00.1' }, "not Kata's form"],
    [{ path: '02', sysfs: '0000:00:2.0' }, 'not a sysfs PCI address'],
    [{ path: '02', sysfs: '0001:00:02.0' }, 'not a sysfs PCI address'],
    [{ path: '03', sysfs: '0000:00:02.0' }, 'differs'],
    [{ path: '02', sysfs: '0000:00:02.1' }, 'at function 1'],
    [{ path: '02/00', sysfs: '0000:00:02.0/0000:01:00.7' }, 'at function 7'],
    [{ path: '20', sysfs: '0000:00:20.0' }, 'slot 32'],
    [{ path: '02', sysfs: '0000:01:02.0' }, 'only the first hop is on the root bus'],
    [{ path: '02/00', sysfs: '0000:00:02.0/0000:00:00.0' }, 'only the first hop is on the root bus'],
  ])('refuses %o (%s)', (pci, reason) => {
    const result = parseGuestPciPath(pci);
    expect(typeof result).toBe('string');
    expect(result).toContain(reason);
  });
});

describe('firmwareBusNumbers', () => {
  it('numbers bridges 1, 2, … in slot order, whatever order they were listed in, and skips other devices', () => {
    const rootBus = new Map<string, RootBusSlot>([
      ['late', { slot: 0x12, bridge: true }],
      ['disk', { slot: 2, bridge: false }],
      ['rp1', { slot: 4, bridge: true }],
      ['rp0', { slot: 3, bridge: true }],
      ['rp7', { slot: 0xa, bridge: true }],
    ]);
    expect(firmwareBusNumbers(rootBus)).toEqual(
      new Map([
        ['rp0', 1],
        ['rp1', 2],
        ['rp7', 3],
        ['late', 4],
      ]),
    );
  });
});
