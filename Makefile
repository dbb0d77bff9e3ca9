# The two commands of the README, plus their helpers. Everything runs from .venv,
# which `make setup` creates and fills from pyproject.toml pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup run test ui lint chromium bench lock clean

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
	$(BIN)/mypy runners tasks flows deployments poolflow bench

# Browser tests drive Debian's chromium (never a downloaded browser build).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

test: lint chromium
	$(BIN)/pytest

bench: setup
	$(BIN)/python -m bench.run $(BENCH_ARGS)

lock: setup
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) out sample-corpus
