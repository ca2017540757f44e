# The two set-up commands: `make demo` and `make test`. Both install what they need
# (Debian packages for the validators and Bazel, a venv with the Python deps) and are
# quick when everything is already present.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
APT_PKGS := e2fsprogs squashfs-tools dosfstools mtools gdisk fdisk genext2fs time file xfsprogs \
	bazel-bootstrap bazel-bootstrap-source python3-zstandard python3-lz4 python3-crc32c
PYTEST_ARGS ?=

.PHONY: demo demo-cli test deps apt venv bench clean

deps: apt venv

apt:
	@scripts/ensure-apt.sh $(APT_PKGS)

venv: $(VENV)/.stamp

$(VENV)/.stamp: pyproject.toml requirements_lock.txt
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --disable-pip-version-check -r requirements_lock.txt pytest==8.3.4 hypothesis==6.122.3 wheel==0.45.1
	$(VPY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

demo: deps
	@scripts/bazel-demo.sh $(VPY)

demo-cli: deps
	@scripts/demo.sh $(VPY)

test: deps
	$(VPY) -m pytest -q -ra $(PYTEST_ARGS) tests

bench: deps
	$(VPY) bench/run_all.py

clean:
	rm -rf $(VENV) build bench/out
