# Two commands do all set-up on a fresh machine with Python 3.11+:
#   make run    create .venv, install the app, start it
#   make test   create .venv, install app + test tools, run every test
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: run dev test lint format bench clean engines

# The optional engines environment (NautilusTrader) needs Python 3.12 or newer, which the app's
# venv may not have: it lives in its own venv, used only by subprocesses. It also holds the
# app's requirements (the NautilusTrader project calls our models), whose pins have wheels up to
# Python 3.13 (tensorflow-cpu 2.21 has none for 3.14). ENGINES_PYTHON prints the newest
# Python 3.12 or 3.13 found on PATH or in pyenv, or nothing.
ENGINES_VENV ?= .venv-engines
ENGINES_PYTHON ?= \
	for c in python3.13 python3.12; do \
		$$c -c 'import sys; assert (3, 12) <= sys.version_info < (3, 14); print(sys.executable)' \
			2>/dev/null && exit 0; \
	done; \
	for v in $$(pyenv versions --bare 2>/dev/null | grep -E '^3\.(12|13)(\.[0-9]+)?$$' | sort -rV); do \
		PYENV_VERSION=$$v pyenv exec python -c 'import sys; print(sys.executable)' \
			2>/dev/null && exit 0; \
	done

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files re-run the install only when a requirements file changes.
$(VENV)/.app-installed: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev-installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(VENV)/.app-installed $@

run: $(VENV)/.app-installed
	$(BIN)/streamlit run app.py

# For editing the app: rerun it when a source file is saved.
dev: $(VENV)/.app-installed
	$(BIN)/streamlit run app.py --server.fileWatcherType auto --server.runOnSave true

test: $(VENV)/.dev-installed engines
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/fetch_bench.py
	$(BIN)/python bench/models_bench.py
	$(BIN)/python bench/experiment_bench.py

# Installs once (stamp file; requirements-engines.txt includes requirements.txt); without a
# Python 3.12 or 3.13 it says so and succeeds, and the tests that need NautilusTrader skip
# with that reason.
engines: $(ENGINES_VENV)/.engines-installed

$(ENGINES_VENV)/.engines-installed: requirements-engines.txt requirements.txt
	@py=$$($(ENGINES_PYTHON)); \
	if [ -z "$$py" ]; then \
		echo "engines: no Python 3.12 or 3.13 found (python3.13, python3.12, pyenv); skipping NautilusTrader"; \
		exit 0; \
	fi; \
	set -e; echo "engines: $$py -> $(ENGINES_VENV)"; \
	rm -rf $(ENGINES_VENV); \
	"$$py" -m venv $(ENGINES_VENV); \
	$(ENGINES_VENV)/bin/python -m pip install --quiet --upgrade pip; \
	$(ENGINES_VENV)/bin/python -m pip install --quiet -r requirements-engines.txt; \
	touch $@

clean:
	rm -rf $(VENV) $(ENGINES_VENV) .pytest_cache .ruff_cache .hypothesis
