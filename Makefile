# The template's own tooling. `make test` is what CI runs (.ci/run) and what the README promises.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKERS ?= 2
# make bench: tests per suite, rounds, a subset of configurations (all when empty), results path,
# and PROFILE=1 to sample floor and shared once more with py-spy (CPU per test by library).
N ?= 475
ROUNDS ?= 3
CONFIGS ?=
OUTPUT ?= bench/results/latest
PROFILE ?=
# The official AsyncAPI parser (npm), which tests/test_asyncapi.py runs on a baked service's document.
ASYNCAPI := tools/asyncapi
# A bake's `make client-ts` tooling (Modelina, TypeScript, ws), installed from the bake's own lock
# into .cache/client-ts/, where tests/test_client_codegen.py lends it to the bakes it generates in.
CLIENT_TS_TOOLS := {{cookiecutter.project_slug}}/tools/client-ts
CLIENT_TS := .cache/client-ts

.PHONY: install test lint bake bench durations locks

$(BIN)/python:
	@echo "Creating the virtualenv in $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	@echo "Installing the template's test requirements"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

# npm ci writes node_modules/.package-lock.json, so this reinstalls only when the lock changes.
# Without npm the parser's tests skip (they need node) or say what to install.
$(ASYNCAPI)/node_modules/.package-lock.json: $(ASYNCAPI)/package-lock.json
	@if command -v npm >/dev/null; then \
		echo "Installing the AsyncAPI parser into $(ASYNCAPI)/node_modules (npm ci)"; \
		cd $(ASYNCAPI) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: not installing the AsyncAPI parser (its tests skip without node)"; \
	fi

$(CLIENT_TS)/node_modules/.package-lock.json: $(CLIENT_TS_TOOLS)/package-lock.json
	@if command -v npm >/dev/null; then \
		echo "Installing a bake's make client-ts tools into $(CLIENT_TS)/node_modules (npm ci)"; \
		mkdir -p $(CLIENT_TS) && cp '$(CLIENT_TS_TOOLS)/package.json' '$(CLIENT_TS_TOOLS)/package-lock.json' $(CLIENT_TS)/ && \
		cd $(CLIENT_TS) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error; \
	else \
		echo "npm not found: not installing the make client-ts tools (their tests skip without npm)"; \
	fi

install: $(VENV)/.installed $(ASYNCAPI)/node_modules/.package-lock.json $(CLIENT_TS)/node_modules/.package-lock.json

test: install
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bake: install
	$(BIN)/cookiecutter . --output-dir build

bench: install
	$(BIN)/python -m bench --tests $(N) --rounds $(ROUNDS) --output $(OUTPUT) $(if $(CONFIGS),--configs $(CONFIGS)) \
		$(if $(PROFILE),--profile)

# Re-times the generated suite into the template's .test_durations, which balances pytest-split's
# shards, by running a fresh bake's own `make durations`. Run it after changing generated tests.
# The bake asks for the Python that runs it, which its Makefile then requires.
durations: install
	rm -rf build/durations
	$(BIN)/cookiecutter . --no-input --output-dir build/durations \
		python_version=$$($(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
	$(MAKE) -C build/durations/chat-service durations PYTHON=$(PYTHON)
	cp build/durations/chat-service/.test_durations '{{cookiecutter.project_slug}}/.test_durations'

# Writes the uv.lock of every python_version and tracing answer into templates/uv-lock/, which
# a bake's uv.lock includes (tools/locks.py). Run it after changing the baked pyproject.toml's
# dependencies; UPGRADE=1 moves every pin to the newest release.
locks: install
	$(BIN)/python -m tools.locks $(if $(UPGRADE),--upgrade)
