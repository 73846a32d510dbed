# Two commands on a fresh machine: `make demo` and `make test`. Everything lives in .venv.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev
comma := ,
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# Exact versions of every package of the default, dev and bench extras, from pyproject.toml's
# ranges (`make lock` regenerates it). A constraints file: torch (the train extra, a
# build pip takes from this machine's disk) stays out of it and unconstrained.
LOCK := requirements/lock.txt
# The newest versions pyproject.toml allows, no lock (`make test-latest`).
LATEST_VENV := .venv-latest
MAIN_PACKAGES := aiohttp redis onnxruntime numpy orjson pydantic
# Prints the versions a venv took of the main packages: $(call versions,VENV,LABEL).
versions = @$(1)/bin/python -c 'import importlib.metadata as m, sys; \
	print("$(2):", " ".join(f"{p}=={m.version(p)}" for p in sys.argv[1:]))' $(MAIN_PACKAGES)
# The edge Worker's packages (edge/package-lock.json), where npm is installed; without
# it the Worker's tests skip and say why.
NPM := $(shell command -v npm 2>/dev/null)
EDGE_STAMP := edge/node_modules/.installed

.PHONY: setup edge-setup demo test test-latest lint lock bench models clean

# Reinstalls when the lock changes: pip moves every package to the version it names.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c $(LOCK) -e '.[$(EXTRAS)]'
	touch $(STAMP)

$(EDGE_STAMP): edge/package.json edge/package-lock.json
	cd edge && npm ci --no-audit --no-fund --loglevel=error
	touch $(EDGE_STAMP)

setup: $(STAMP)

# The edge Worker's packages, for its tests (`make demo` needs none of them).
ifeq ($(NPM),)
edge-setup:
	@echo "make: npm not found: the edge Worker's tests will skip (they need node and npm)"
else
edge-setup: $(EDGE_STAMP)
endif

demo: setup
	$(VENV)/bin/rankgate demo

test: setup edge-setup
	$(call versions,$(VENV),make test (requirements/lock.txt))
	$(VENV)/bin/ruff check .
	@command -v node >/dev/null 2>&1 || echo "make test: node is not installed: the edge Worker's tests skip"
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The same tests on the newest versions pyproject.toml's ranges allow, in a venv of their
# own: a new release that breaks rankgate shows the day it comes, not on the next lock.
test-latest: edge-setup
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade pip
	$(LATEST_VENV)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[dev]'
	$(call versions,$(LATEST_VENV),make test-latest (newest allowed))
	$(LATEST_VENV)/bin/python -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# Regenerate the lock from pyproject.toml: the newest versions its ranges allow, for every
# platform and Python 3.11+; the next `make setup` installs them. uv comes from .venv (the
# dev extra), or is put there when missing: a lock at odds with a changed pyproject.toml
# must not stop its own regeneration.
lock:
	test -x $(VENV)/bin/uv || { $(PYTHON) -m venv $(VENV) && $(PY) -m pip install -q uv; }
	$(VENV)/bin/uv pip compile -q --upgrade --universal --python-version 3.11 \
		--custom-compile-command 'make lock' pyproject.toml --extra dev --extra bench -o $(LOCK)

# The bench extra too: bench/run.py measures the FastAPI ranking service beside rankgate.
bench:
	$(MAKE) setup EXTRAS=dev,bench
	$(PY) bench/run.py

# Rebuild every committed model artifact (seeded; models/README.md says what each is).
models:
	$(MAKE) setup EXTRAS=dev,train
	$(VENV)/bin/pip install -q --no-deps recbole==1.2.1
	$(PY) -m models.train
	$(PY) -m models.export
	$(PY) -m models.quantize models/ranker_v1.onnx models/ranker_v1.int8.onnx \
		--npz models/demo_embeddings.npz
	$(PY) -m models.report

clean:
	rm -rf $(VENV) $(LATEST_VENV) .pytest_cache build *.egg-info edge/node_modules
