# Two commands on a fresh machine: `make demo` and `make test`. Everything lives in .venv.
PYTHON ?= python3
VENV ?= .venv
EXTRAS ?= dev
comma := ,
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(subst $(comma),-,$(EXTRAS))
# The edge Worker's packages (edge/package-lock.json), where npm is installed; without
# it the Worker's tests skip and say why.
NPM := $(shell command -v npm 2>/dev/null)
EDGE_STAMP := edge/node_modules/.installed

.PHONY: setup edge-setup demo test lint bench models clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[$(EXTRAS)]'
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
	$(VENV)/bin/ruff check .
	@command -v node >/dev/null 2>&1 || echo "make test: node is not installed: the edge Worker's tests skip"
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

bench: setup
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
	rm -rf $(VENV) .pytest_cache build *.egg-info edge/node_modules
