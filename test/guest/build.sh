#!/usr/bin/env bash
# Builds the small sandbox guest the tests and the demo boot, for one architecture:
#   build.sh [x86_64|aarch64]      (default x86_64)
# Debian 12's cloud kernel (unpacked, never installed on the host) and a busybox-static initramfs
# with the virtio modules, an init and a command agent; the same init and agent on every
# architecture. Cached in .cache/guest/<arch>/<key>/ with .cache/guest/<arch>/current.json naming
# it, keyed by the architecture, the kernel and busybox versions and a hash of the build inputs; a
# warm cache returns at once.
#   x86_64   the host's busybox-static and linux-image-cloud-amd64 (apt-get download)
#   aarch64  busybox-static:arm64 and linux-image-*-cloud-arm64, pinned and fetched with a private
#            apt setup by scripts/arm64-guest-pieces.mjs (the host's apt is left alone)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
arch="${1:-x86_64}"

say() { echo "[guest $arch] $*" >&2; }

# What differs between architectures, and only that.
# modules: what the guest loads (the build adds their dependencies); builtins are skipped.
#   button + evdev: the ACPI power button, so that a graceful powerdown (system_powerdown) works.
#   The arm64 cloud kernel has neither pvpanic nor gpio-keys: virt's power button (a GPIO line) is
#   watched by rootfs/on-power-gpio instead, and a guest panic cannot be reported there.
# params: the kernel command line; the console is the machine's serial port (PL011 on virt).
case "$arch" in
  x86_64)
    modules="virtio_pci virtio_blk virtio_mem virtio_console virtio_net virtio_scsi sd_mod pvpanic-pci button evdev virtiofs"
    params='"console=ttyS0", "quiet", "panic=0", "memhp_default_state=online_movable", "tsc=reliable", "no_timer_check"'
    arch_inputs=()
    ;;
  aarch64)
    modules="virtio_pci virtio_blk virtio_mem virtio_console virtio_net virtio_scsi sd_mod evdev virtiofs"
    params='"console=ttyAMA0", "quiet", "panic=0", "memhp_default_state=online_movable"'
    arch_inputs=("$root/scripts/arm64-guest-pieces.mjs")
    ;;
  *)
    echo "[guest] unknown architecture '$arch': use x86_64 or aarch64" >&2; exit 2 ;;
esac

cache="$root/.cache/guest/$arch"
manifest="$cache/current.json"
inputs_hash="$(cat "$here/build.sh" "$here"/rootfs/* "${arch_inputs[@]}" | sha256sum | cut -c1-12)"

# Warm cache: the manifest names this input hash and its files exist.
if [ -f "$manifest" ] && grep -q "\"inputsHash\": \"$inputs_hash\"" "$manifest"; then
  kernel="$(sed -n 's/.*"kernel": "\([^"]*\)".*/\1/p' "$manifest")"
  initrd="$(sed -n 's/.*"initrd": "\([^"]*\)".*/\1/p' "$manifest")"
  [ -f "$kernel" ] && [ -f "$initrd" ] && exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Each sets busybox (the binary), kernel_root (an unpacked linux-image package) and source_key
# (the package versions, for the cache key).
pieces_x86_64() {
  if [ ! -x /bin/busybox ] && [ ! -x /usr/bin/busybox ]; then
    say "busybox-static is missing: apt-get install busybox-static"; exit 1
  fi
  busybox="$(command -v busybox)"
  if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
    say "refreshing apt lists"; apt-get update -qq
  fi
  local kernel_pkg kernel_pkg_version busybox_version deb
  kernel_pkg="$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
  [ -n "$kernel_pkg" ] || { say "cannot resolve the package behind linux-image-cloud-amd64"; exit 1; }
  kernel_pkg_version="$(apt-cache policy "$kernel_pkg" | awk '/Candidate:/ { print $2 }')"
  busybox_version="$(dpkg-query -W -f='${Version}' busybox-static 2>/dev/null || echo unknown)"
  mkdir -p "$work/debs"
  (cd "$work/debs" && apt-get download -q "$kernel_pkg=$kernel_pkg_version" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
  deb="$(ls "$work"/debs/*.deb 2>/dev/null | head -1)"
  [ -n "$deb" ] || { say "apt-get download $kernel_pkg failed"; exit 1; }
  kernel_root="$work/kernel"
  dpkg-deb -x "$deb" "$kernel_root"
  source_key="${kernel_pkg}_${kernel_pkg_version}_busybox-${busybox_version}"
}

pieces_aarch64() {
  local pieces
  pieces="$(node "$root/scripts/arm64-guest-pieces.mjs")" || { say "the arm64 kernel and busybox are not available (see above)"; exit 1; }
  busybox="$pieces/busybox/bin/busybox"
  kernel_root="$pieces/kernel"
  source_key="$(basename "$pieces")"
}

"pieces_$arch"
key="$(echo "${arch}_${source_key}_${inputs_hash}" | tr -c 'A-Za-z0-9._\n-' '_')"
out="$cache/$key"
say "building $key"
kver="$(ls "$kernel_root/lib/modules" | head -1)"
moddir="$kernel_root/lib/modules/$kver"

# The modules the guest needs, with their dependencies first (read from each .ko's depends=).
declare -A seen=()
order=()
find_module() { find "$moddir/kernel" \( -name "$1.ko" -o -name "${1//_/-}.ko" -o -name "${1//-/_}.ko" \) | head -1; }
visit() {
  local name="$1" file deps dep
  [ -n "${seen[$name]:-}" ] && return 0
  seen[$name]=1
  if grep -qE "/(${name}|${name//_/-}|${name//-/_})\.ko$" "$moddir/modules.builtin"; then return 0; fi
  file="$(find_module "$name")"
  [ -n "$file" ] || { say "module $name not found"; exit 1; }
  deps="$(grep -a -o 'depends=[A-Za-z0-9_,-]*' "$file" | head -1 | cut -d= -f2)"
  for dep in ${deps//,/ }; do visit "$dep"; done
  order+=("${file#"$moddir/kernel/"}")
}
for module in $modules; do visit "$module"; done

initramfs="$work/initramfs"
mkdir -p "$initramfs"/{bin,dev,proc,sys,tmp,etc,lib/modules}
cp "$busybox" "$initramfs/bin/busybox"
# /init is a shell script: its interpreter must exist before busybox installs its applets.
ln -s busybox "$initramfs/bin/sh"
cp "$here/rootfs/init" "$initramfs/init"
cp "$here/rootfs/agent" "$here/rootfs/on-uevent" "$here/rootfs/on-power-gpio" "$initramfs/bin/"
# busybox acpid runs /etc/acpi/PWRF/00000080 when the power button is pressed.
mkdir -p "$initramfs/etc/acpi/PWRF"
cp "$here/rootfs/on-power-button" "$initramfs/etc/acpi/PWRF/00000080"
: > "$initramfs/etc/modules.order"
for rel in "${order[@]}"; do
  mkdir -p "$initramfs/lib/modules/$(dirname "$rel")"
  cp "$moddir/kernel/$rel" "$initramfs/lib/modules/$rel"
  echo "$rel" >> "$initramfs/etc/modules.order"
done
chmod 0755 "$initramfs/init" "$initramfs/bin/"* "$initramfs/etc/acpi/PWRF/00000080"

rm -rf "$out.tmp" && mkdir -p "$out.tmp"
(cd "$initramfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$out.tmp/initrd.img"
cp "$kernel_root/boot/vmlinuz-$kver" "$out.tmp/vmlinuz"
# QEMU runs as an unprivileged user: everything must be world-readable.
chmod 0644 "$out.tmp/initrd.img" "$out.tmp/vmlinuz"
chmod 0755 "$out.tmp"
rm -rf "$out" && mv "$out.tmp" "$out"
chmod 0755 "$cache" "$root/.cache/guest" "$root/.cache" 2>/dev/null || true

# Older builds of this architecture are of no further use.
for old in "$cache"/*/; do
  [ "${old%/}" = "$out" ] || rm -rf "$old"
done

cat > "$manifest.tmp" <<JSON
{
  "arch": "$arch",
  "kernel": "$out/vmlinuz",
  "initrd": "$out/initrd.img",
  "kernelParams": [$params],
  "kernelVersion": "$kver",
  "key": "$key",
  "inputsHash": "$inputs_hash",
  "modules": [$(printf '"%s",' "${order[@]}" | sed 's/,$//')]
}
JSON
mv "$manifest.tmp" "$manifest"
say "guest ready: $out"
