#!/bin/sh
# Put a Debian cloud kernel's vmlinuz in DEST (default build/test-kernel) for the initramfs boot
# test. The package is downloaded with apt-get and unpacked there; nothing is installed.
set -eu
dest=${1:-build/test-kernel}
[ -f "$dest/vmlinuz" ] && exit 0
mkdir -p "$dest"
cd "$dest"
pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)
if [ -z "$pkg" ]; then
    apt-get update -qq
    pkg=$(apt-cache depends linux-image-cloud-amd64 | sed -n 's/.*Depends: \(linux-image-[0-9][^ ]*\).*/\1/p' | head -n 1)
fi
apt-get download -q "$pkg" >/dev/null 2>&1
dpkg-deb --fsys-tarfile "$pkg"_*.deb | tar -x --wildcards './boot/vmlinuz-*'
mv boot/vmlinuz-* vmlinuz.tmp
rm -rf boot "$pkg"_*.deb
mv vmlinuz.tmp vmlinuz
