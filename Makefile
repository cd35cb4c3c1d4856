# The two set-up commands of the README:
#   make demo   -> a 10 s song with the bundled demo model on the CPU, SQLite default
#   make test   -> lint, types and the whole test suite (SQLite and PostgreSQL)
# Any supported Python (3.11-3.13), newest first; `make PY=/path/to/python` chooses another.
SUPPORTED := import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))
PY ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	$$p -c '$(SUPPORTED)' >/dev/null 2>&1 && { command -v $$p; break; }; done)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv demo test lint typecheck prereqs

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PY)" || { \
	  echo "No Python 3.11-3.13 found (tried python3.13, python3.12, python3.11, python3)."; \
	  echo "Install one, e.g. Debian: apt-get install -y python3 python3-venv"; exit 1; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,test,corpus]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/jukebot generate --model demo --artist bach --genre chorale --seconds 10 --drafts 3 --out out/demo

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: venv
	$(BIN)/mypy bot engine lyrics publisher db

# FluidSynth, the soundfont, fonts and PostgreSQL, each with the command that installs or starts it.
prereqs:
	@.ci/prereqs.sh

test: prereqs lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider
