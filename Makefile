# Podium: `make run` sets up and starts a server; `make test` sets up and runs every test.
# Both create .venv with the project's own pyproject; nothing is installed by hand.

# The newest Python >= 3.11 on PATH (override: make run PYTHON=/path/to/python3.12).
PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
	  && { command -v $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_DIR ?= var
LISTEN ?= 127.0.0.1:3939
PYTEST_ARGS ?=

.PHONY: install system-deps sandbox-deps run test lint clean

$(STAMP): pyproject.toml setup.py src/podium/_hitlog.c
	@test -n "$(PYTHON)" || { echo "Podium needs Python 3.11 or newer on PATH (or make PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: install sandbox-deps
	$(BIN)/podium serve --data-dir $(DATA_DIR) --listen $(LISTEN)

# Content runs in bubblewrap sandboxes (setting sandbox): install Debian's bubblewrap
# when missing and apt-get can; otherwise the server says at start what to do.
sandbox-deps:
	@command -v bwrap >/dev/null || { apt-get update && apt-get install -y --no-install-recommends bubblewrap; } \
	  || echo "Could not install bubblewrap: install it (Debian: apt-get install bubblewrap), or run with PODIUM_SANDBOX=optional"

# The dashboard's browser tests drive Debian's Chromium (Playwright never downloads one here).
# The install builds the usage recorder's C part with a C compiler (gcc; a test checks it
# was built: without one, Podium records usage in Python, more slowly).
# R content (rmd-static, shiny, api) runs on Debian's R with rmarkdown, shiny and plumber;
# R Markdown needs pandoc. Sandboxed jobs run in bubblewrap (bwrap).
# apt-get runs only when something is missing.
R_PACKAGES := rmarkdown shiny plumber
system-deps:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	@missing=""; \
	command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	command -v cc >/dev/null || missing="$$missing gcc"; \
	command -v Rscript >/dev/null || missing="$$missing r-base-core"; \
	command -v pandoc >/dev/null || missing="$$missing pandoc"; \
	for pkg in $(R_PACKAGES); do \
	  command -v Rscript >/dev/null && Rscript -e "quit(status = !requireNamespace('$$pkg', quietly = TRUE))" \
	    >/dev/null 2>&1 || missing="$$missing r-cran-$$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing from Debian:$$missing"; \
	  apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

# pytest exits 5 when it collected no tests: that is a failure here too (any non-zero is).
# Lint first: ruff, mypy --strict on src/, and the layers of docs/architecture.md.
test: system-deps install lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy --strict src
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
