# The two commands of the README, plus their helpers. Everything runs from .venv,
# which `make setup` creates and fills from pyproject.toml pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup run test ui lint chromium libreoffice bench bench-scale lock clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,dask,bench,s3]'
	touch $(STAMP)

setup: $(STAMP)

run: setup
	$(BIN)/poolflow sample sample-corpus
	$(BIN)/poolflow run sample-corpus -o out

ui: setup
	bash deployments/ui.sh

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy runners tasks

# Browser tests drive Debian's chromium (never a downloaded browser build).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The report's test reads it with a real spreadsheet application: Debian's headless Calc.
libreoffice:
	@test -x /usr/bin/soffice || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libreoffice-calc-nogui >/dev/null)

test: lint chromium libreoffice
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# 700 files end to end against the old script's per-file step; updates bench/results.md.
bench-scale: setup
	$(BIN)/python -m bench.scale $(BENCH_ARGS)

lock: setup
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) out sample-corpus
