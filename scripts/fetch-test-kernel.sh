#!/bin/sh
# Put a Debian cloud kernel's vmlinuz in DEST (default build/test-kernel), and in DEST/modules the
# modules a VM needs to mount an ISO 9660 image from a virtio disk, for the boot and mount tests.
# The package is downloaded with apt-get and unpacked there; nothing is installed.
set -eu
dest=${1:-build/test-kernel}
[ -f "$dest/vmlinuz" ] && [ -f "$dest/modules/isofs.ko" ] && exit 0
mkdir -p "$dest"
cd "$dest"
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)
fi
apt-get download -q "$pkg" >/dev/null 2>&1
mods="isofs cdrom virtio virtio_ring virtio_pci virtio_pci_modern_dev virtio_pci_legacy_dev virtio_blk"
dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards './boot/vmlinuz-*' \
    $(for m in $mods; do printf "*/%s.ko " "$m"; done)
mkdir -p modules
find lib -name '*.ko' -exec mv {} modules/ \;
mv boot/vmlinuz-* vmlinuz.tmp
rm -rf boot lib "$pkg"_*.deb
mv vmlinuz.tmp vmlinuz
