# proxydhcp — the commands the README and CI use. `make demo` and `make test` first install what is
# missing (scripts/bootstrap: the Debian packages of debian-packages.txt, then .venv) and say so.
VENV ?= .venv
PYTHON ?= $(VENV)/bin/python3
PYTEST ?= $(PYTHON) -m pytest
# The targets that build network namespaces run as root: directly, or through sudo when there is one
# (no byte code or pytest cache then, so the checkout keeps no root-owned files).
AS_ROOT := $(shell [ "$$(id -u)" = 0 ] || { command -v sudo >/dev/null && echo sudo env PYTHONDONTWRITEBYTECODE=1; })
NO_CACHE := $(if $(AS_ROOT),-p no:cacheprovider)

.PHONY: bootstrap packages venv install test test-fast lint typecheck demo bench bench-smoke fuzz clean

bootstrap:          ## what is missing of the Debian packages (debian-packages.txt) and .venv; a no-op otherwise
	@VENV=$(VENV) scripts/bootstrap all

packages:           ## only the Debian packages of debian-packages.txt
	@scripts/bootstrap packages

venv:               ## only .venv: proxydhcp editable and its test tools (pip again when pyproject.toml changed)
	@VENV=$(VENV) scripts/bootstrap venv

install: bootstrap

test: bootstrap     ## the whole suite: unit, golden, namespace integration and QEMU end-to-end (as root)
	$(AS_ROOT) $(PYTEST) -q $(NO_CACHE) --timeout=900

test-fast: bootstrap  ## everything but the QEMU end-to-end boots
	$(AS_ROOT) $(PYTEST) -q $(NO_CACHE) -m 'not e2e' --timeout=300

lint: bootstrap
	$(PYTHON) -m ruff check proxydhcp tests bench
	$(PYTHON) -m ruff format --check proxydhcp

typecheck: bootstrap
	$(PYTHON) -m mypy --strict proxydhcp

demo: bootstrap     ## boot a BIOS and a UEFI VM through proxydhcp on a throwaway virtual network (as root)
	$(AS_ROOT) $(PYTHON) -m tests.e2e.demo

bench: bootstrap    ## side-by-side benchmark against tftpd-hpa, dnsmasq, atftpd, py3tftp, tftpy, PyPXE (as root)
	$(AS_ROOT) $(PYTHON) -m bench.run

bench-smoke: bootstrap  ## a few seconds of every benchmark, so it does not rot (run by CI)
	$(AS_ROOT) $(PYTHON) -m bench.run --smoke

fuzz: bootstrap      ## coverage-guided fuzzing of the decoders (atheris), bounded in time
	$(PYTHON) -m pip install -q atheris || echo "atheris unavailable: falling back to a bounded Hypothesis run"
	$(PYTHON) -m tests.fuzz.run --seconds $${FUZZ_SECONDS:-300}

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
