# The template's own tooling. `make test` is what CI runs (.ci/run) and what the README promises.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
WORKERS ?= 2

.PHONY: install test lint bake

$(BIN)/python:
	@echo "Creating the virtualenv in $(VENV) with $(PYTHON)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: requirements.txt | $(BIN)/python
	@echo "Installing the template's test requirements"
	$(BIN)/python -m pip install --quiet -r requirements.txt
	@touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -n $(WORKERS) --dist loadgroup

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bake: install
	$(BIN)/cookiecutter . --output-dir build
