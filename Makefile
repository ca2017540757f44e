# The two set-up commands: `make demo` and `make test`. Both install what they need
# (Debian packages for the validators and Bazel, a venv with the Python deps) and are
# quick when everything is already present.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PKGS := e2fsprogs squashfs-tools dosfstools mtools gdisk fdisk genext2fs time file xfsprogs \
	bazel-bootstrap bazel-bootstrap-source python3-zstandard python3-lz4 python3-crc32c \
	bazel-skylib android-sdk-libsparse-utils bmap-tools qemu-utils cryptsetup-bin \
	erofs-utils liblz4-1 liblzma5 acl libcap2-bin attr selinux-utils \
	cpio libarchive-tools xorriso genisoimage gzip xz-utils zstd lz4 qemu-system-x86 isolinux syslinux-common \
	ovmf grub-efi-amd64-bin busybox-static
PYTEST_ARGS ?=
JOBS ?= 2
# BuildGrid (a Remote Execution API server) for the remote execution test, in a venv of its own.
BG_VENV := .venv-buildgrid

.PHONY: demo demo-cli test deps apt venv buildgrid bench clean

deps: apt venv

apt:
	@scripts/ensure-apt.sh $(APT_PKGS)

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml requirements_lock.txt Makefile
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check --require-hashes -r requirements_lock.txt
	$(VPY) -m pip install -q --disable-pip-version-check pytest==8.3.4 pytest-xdist==3.6.1 hypothesis==6.122.3 wheel==0.45.1
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

buildgrid: $(BG_VENV)/.stamp

$(BG_VENV)/.stamp: tests/buildgrid_requirements.txt
	$(PY) -m venv $(BG_VENV)
	$(BG_VENV)/bin/python -m pip install -q --disable-pip-version-check -r tests/buildgrid_requirements.txt
	touch $@

demo: deps
	@scripts/bazel-demo.sh $(VPY)

demo-cli: deps
	@scripts/demo.sh $(VPY)

test: deps buildgrid
	$(VPY) -m pytest -q -ra -n $(JOBS) --dist loadfile $(PYTEST_ARGS) tests

bench: deps
	$(VPY) bench/run_all.py

# The exFAT and F2FS checkers (fsck.exfat, exfat-fuse, fsck.f2fs, dump.f2fs, sload.f2fs, setfacl).
APT_PKGS += exfatprogs exfat-fuse f2fs-tools acl

clean:
	rm -rf $(VENV) $(BG_VENV) build bench/out
