# simgym developer entry points. Every target works on a fresh clone: the venv is
# created (or refreshed when pyproject.toml changes) before anything runs.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.simgym-installed
# torch==2.13.0 from plain PyPI is the CUDA build on Linux x86_64 (several GB). Where pip has no
# CPU wheel at hand (this workplace keeps one on disk), point it at PyTorch's CPU index:
#   make demo TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
PIP_TORCH := $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX),)

.PHONY: demo test test-slow test-docker test-all lint proto bench clean ci-setup

$(STAMP): pyproject.toml examples/cstr/native/_cstr_native.c examples/cstr/native/setup.py examples/cstr/native/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "simgym needs Python >= 3.11 (found " + sys.version.split()[0] + "); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_TORCH) -e ".[dev,train,infer,aml,bonsai]"
# The CSTR sample's optional C accelerator: without a C compiler the sample runs pure Python.
	$(BIN)/python -m pip install --quiet ./examples/cstr/native || echo "WARNING: examples/cstr/native (the CSTR accelerator) did not build: the CSTR sample runs its pure-Python path (same results, slower)"
	@touch $(STAMP)

# The Node.js sim kit's packages (sdk/node, tests/test_node_sim.py), from its lock file. Node.js
# and npm are required: without them this fails, loudly, rather than skip the kit's tests.
NODE_STAMP := sdk/node/node_modules/.simgym-installed
$(NODE_STAMP): sdk/node/package.json sdk/node/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "ERROR: npm not found: sdk/node (the Node.js sim kit) and its tests need Node.js >= 18 and npm (apt-get install nodejs npm)" >&2; exit 1; }
	npm ci --prefix sdk/node --no-audit --no-fund
	@touch $(NODE_STAMP)

## demo: the CSTR sample checked on loopback, then trained briefly (the PPO recipe, sidecar sims).
DEMO_TIME ?= 3m
demo: $(STAMP)
	$(BIN)/simgym check examples/cstr/spec.yaml --episodes 5
	$(BIN)/simgym train examples/cstr/train.yaml --max-time $(DEMO_TIME)

## ci-setup: system packages the tests need (Open MPI for the multi-node test, iproute2 for
## network namespaces, Node.js and npm for the Node.js sim kit, docker.io and debootstrap for
## the image tests); installed only when missing. Starts dockerd when no engine answers.
## .ci/run calls it before `make test`.
ci-setup:
	@command -v mpirun >/dev/null 2>&1 && command -v ip >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openmpi-bin iproute2; }
	@command -v npm >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	sh .ci/docker-engine.sh

## test: the default suite (what CI runs via .ci/run).
test: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

## test-slow: only the long tests (real training runs, multi-node, long soak, image locks).
test-slow: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest -m slow -q

## test-docker: the image tests only (real Docker builds and containers; part of test-slow).
test-docker: $(STAMP)
	$(BIN)/python -m pytest -m docker -q

## test-all: every test: the default suite, then the long ones (what .ci/run runs). The Docker
## images the long ones use are built meanwhile on CPU the default suite leaves idle (smallest
## CPU share, niced): ~7 minutes off the slow suite's wall time on 2 cores. A failed or
## impossible build only leaves the image tests to build (and report) it themselves.
test-all: $(STAMP) $(NODE_STAMP)
	@( $(BIN)/python -m tests.dockerkit build all --low-priority > .docker-images.log 2>&1 \
		|| echo "docker images not prebuilt (see .docker-images.log): the image tests build them" ) & \
	status=0; $(MAKE) test || status=$$?; \
	echo "waiting for the Docker image builds (.docker-images.log) ..."; wait; \
	tail -n 6 .docker-images.log || true; \
	[ $$status -eq 0 ] || exit $$status; \
	$(MAKE) test-slow

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy simserver gymclient launcher

## proto: regenerate simgym/v1 from proto/ (commit the result).
proto: $(STAMP)
	$(BIN)/python -m simserver.protogen

## bench: the bridge benchmark; dm-env-rpc (its peer baseline) is installed for it only.
bench: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pip install --quiet dm-env-rpc
	$(BIN)/python bench/bridge.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
