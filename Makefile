# proxydhcp — the commands the README and CI use.
VENV ?= .venv
# The project's virtual environment once `make install` made it, else the python3 on PATH.
PYTHON ?= $(if $(wildcard $(VENV)/bin/python3),$(VENV)/bin/python3,python3)
PYTEST ?= $(PYTHON) -m pytest

.PHONY: install test test-fast lint typecheck demo bench bench-smoke fuzz clean

install:            ## a virtual environment in .venv with proxydhcp and its test tools (the targets below use it)
	python3 -m venv $(VENV)
	$(VENV)/bin/python3 -m pip install -q --disable-pip-version-check -e '.[test,fast]'

test:               ## the whole suite: unit, golden, namespace integration and QEMU end-to-end (root)
	$(PYTEST) -q --timeout=900

test-fast:          ## everything but the QEMU end-to-end boots
	$(PYTEST) -q -m 'not e2e' --timeout=300

lint:
	$(PYTHON) -m ruff check proxydhcp tests bench
	$(PYTHON) -m ruff format --check proxydhcp

typecheck:
	$(PYTHON) -m mypy --strict proxydhcp

demo:               ## boot a BIOS and a UEFI VM through proxydhcp on a throwaway virtual network (root)
	$(PYTHON) -m tests.e2e.demo

bench:              ## side-by-side benchmark against tftpd-hpa, dnsmasq, atftpd, py3tftp, tftpy, PyPXE (root)
	$(PYTHON) -m bench.run

bench-smoke:        ## a few seconds of every benchmark, so it does not rot (run by CI)
	$(PYTHON) -m bench.run --smoke

fuzz:               ## coverage-guided fuzzing of the decoders (atheris), bounded in time
	$(PYTHON) -m pip install -q atheris || echo "atheris unavailable: falling back to a bounded Hypothesis run"
	$(PYTHON) -m tests.fuzz.run --seconds $${FUZZ_SECONDS:-300}

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
