# The two set-up commands of the README:
#   make demo   -> a 10 s song with the bundled demo model on the CPU, SQLite default
#   make test   -> lint, types and the whole test suite (SQLite and PostgreSQL)
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: venv demo test lint typecheck

$(STAMP): pyproject.toml
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

typecheck: venv
	$(BIN)/mypy bot engine lyrics publisher db

test: lint typecheck
	$(BIN)/pytest -q -p no:cacheprovider
