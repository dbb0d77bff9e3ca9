# The two commands of the README, plus their helpers. Everything runs from .venv,
# which `make setup` creates and fills from pyproject.toml pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per install: `make run` installs what a run needs, `make test` and `make bench`
# add their extras on top.
RUN_STAMP := $(VENV)/.run-stamp
TEST_STAMP := $(VENV)/.test-stamp
BENCH_STAMP := $(VENV)/.bench-stamp
# Packages are installed by uv (itself pinned, and installed into .venv by pip): it fetches and
# unpacks them in parallel, where pip goes one by one; a fresh .venv fills in seconds.
# --compile-bytecode: uv writes no .pyc files itself, and with PYTHONDONTWRITEBYTECODE set (as on
# CI machines) Python writes none either, so every process (each worker, server and script)
# would compile Prefect and its dependencies from source again, twice the CPU of its imports.
# poolflow itself is installed editable, its subpackages links to the top-level folders (which
# compileall does not follow): their .pyc files are written once here (a file edited later has
# a stale one, and Python reads its source instead).
INSTALL := $(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -c constraints.txt
COMPILE_OWN := $(BIN)/python -m compileall -q poolflow flows tasks runners deployments > /dev/null
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup run test soak compat ui ruff lint chromium libreoffice bench bench-scale lock clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(BIN)/uv: | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -c constraints.txt uv

$(RUN_STAMP): pyproject.toml constraints.txt | $(BIN)/uv
	$(INSTALL) -e .
	$(COMPILE_OWN)
	touch $@

$(TEST_STAMP): pyproject.toml constraints.txt | $(BIN)/uv
	$(INSTALL) -e '.[dev]'
	$(COMPILE_OWN)
	touch $@ $(RUN_STAMP)

$(BENCH_STAMP): pyproject.toml constraints.txt | $(BIN)/uv
	$(INSTALL) -e '.[bench]'
	$(COMPILE_OWN)
	touch $@ $(RUN_STAMP)

setup: $(RUN_STAMP)

run: $(RUN_STAMP)
	$(BIN)/poolflow sample sample-corpus
	$(BIN)/poolflow run sample-corpus -o out

ui: $(RUN_STAMP)
	bash deployments/ui.sh

ruff: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lint: ruff
	$(BIN)/mypy poolflow bench

# Browser tests drive Debian's chromium (never a downloaded browser build).
chromium:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)

# The report's test reads it with a real spreadsheet application: Debian's headless Calc.
libreoffice:
	@test -x /usr/bin/soffice || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libreoffice-calc-nogui >/dev/null)

# The suite mostly waits on real servers and subprocesses: TEST_WORKERS pytest-xdist workers
# overlap those waits on 2 cores. Each test module runs whole on one worker (--dist loadfile),
# so its module fixtures are made once and its tests keep their order.
# mypy runs beside pytest (it needs one core for ~35 s on a fresh clone); either failing fails.
TEST_WORKERS ?= 4
test: ruff chromium libreoffice
	$(BIN)/mypy poolflow bench > $(VENV)/mypy.log 2>&1 & mypy=$$!; \
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile; tests=$$?; \
	wait $$mypy; typed=$$?; cat $(VENV)/mypy.log; test $$tests -eq 0 && test $$typed -eq 0

# The soak cases (minutes of load each), left out of `make test`; CI runs them as a stage.
soak: $(TEST_STAMP)
	$(BIN)/pytest -m soak

# Each Python x Prefect corner in a fresh virtualenv (tests/compat.py); CORNERS=extremes runs
# the oldest and the newest pair only, as CI does.
CORNERS ?= all
compat: $(RUN_STAMP)
	$(BIN)/python tests/compat.py --corners $(CORNERS)

# 200 items on every runner; 1,000 and 2,000 items; many short tasks on 32 processes; 2,000
# tiny files end to end; a user's own script with no API, then against a default `prefect
# server start` (200 and 1,000 files, 32 processes); 700 files end to end against the lean
# per-file step; one item's stages. Each writes its table into bench/results.md.
bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.run $(BENCH_ARGS)
	$(BIN)/python -m bench.run --modes pool,poolflow --repeat 100 --rounds 3 --mirrored --section "1,000 and 2,000 items"
	$(BIN)/python -m bench.simulation
	$(BIN)/python -m bench.tiny_files
	$(BIN)/python -m bench.user_script
	$(BIN)/python -m bench.user_script --api server
	$(BIN)/python -m bench.user_script --api server --times 50 --rounds 5 --mirrored --modes pool,empty,script
	$(BIN)/python -m bench.simulation --api server
	$(BIN)/python -m bench.task_context
	$(BIN)/python -m bench.scale
	$(BIN)/python -m bench.item_stages

# 700 files end to end against the lean and the old script's per-file steps; updates bench/results.md.
bench-scale: $(BENCH_STAMP)
	$(BIN)/python -m bench.scale $(BENCH_ARGS)

lock: $(TEST_STAMP) $(BENCH_STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt

clean:
	rm -rf $(VENV) out sample-corpus
