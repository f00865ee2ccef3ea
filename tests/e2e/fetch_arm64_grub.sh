#!/bin/sh
# Debian's signed ARM64 network GRUB (grub-efi-arm64-signed) for the AAVMF e2e boots, unpacked into a
# cache directory. The package does not install on amd64, so it is downloaded for arm64 and unpacked
# with dpkg -x; the arm64 architecture is added only for the download and removed again.
#
#   tests/e2e/fetch_arm64_grub.sh [CACHE_DIR]     (root; default /var/cache/proxydhcp-e2e)
#
# Idempotent: exits at once when CACHE_DIR/grub-arm64/grubnetaa64.efi.signed is already there.
# Prints the path of grubnetaa64.efi.signed on its last line.
set -eu
cache=${1:-${PROXYDHCP_E2E_CACHE:-/var/cache/proxydhcp-e2e}}
out=$cache/grub-arm64
target=$out/grubnetaa64.efi.signed
if [ -s "$target" ]; then echo "$target"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "fetch_arm64_grub.sh: needs root (dpkg --add-architecture)" >&2; exit 2; }
mkdir -p "$out"
work=$(mktemp -d)
added=0
cleanup() {
    if [ "$added" = 1 ]; then
        dpkg --remove-architecture arm64 || true
        apt-get update -qq >/dev/null 2>&1 || true   # drop the arm64 package lists again
    fi
    rm -rf "$work"
}
trap cleanup EXIT INT TERM
# One apt user at a time on a shared machine.
exec 9>/tmp/proxydhcp-apt.lock
flock 9
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    dpkg --add-architecture arm64
    added=1
fi
apt-get update -qq
(cd "$work" && apt-get download -qq grub-efi-arm64-signed:arm64)
dpkg -x "$work"/grub-efi-arm64-signed_*.deb "$work/x"
found=$(find "$work/x" -name grubnetaa64.efi.signed | head -n 1)
[ -n "$found" ] || { echo "fetch_arm64_grub.sh: grubnetaa64.efi.signed not in the package" >&2; exit 1; }
cp "$found" "$target.tmp" && mv "$target.tmp" "$target"
ls "$work"/grub-efi-arm64-signed_*.deb | sed 's|.*/||' > "$out/PACKAGE"
echo "$target"
