# The two commands a newcomer needs: `make run` and `make test` (`make lint` before a commit;
# see CONTRIBUTING.md).
# Both create .venv with a Python 3.12+ found by scripts/find-python and
# install the locked dependencies (requirements.lock) before doing anything.

VENV      := .venv
BIN       := $(VENV)/bin
PY        := $(BIN)/python
STAMP     := $(VENV)/.installed
UV_PIN    := uv==0.13.9
PORT      ?= 8000
PG_URL    ?= postgres://postgres@127.0.0.1:5432/notify
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: run test test-pg lint bench lock clean

$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || "$$(scripts/find-python)" -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check $(UV_PIN)
	@$(BIN)/uv pip sync --quiet --python $(PY) requirements.lock
	@$(BIN)/uv pip install --quiet --python $(PY) --no-deps -e .
	@touch $(STAMP)

## run: migrate, load demo data (embedded SQLite only) and start web + worker pool + scheduler on 127.0.0.1:$(PORT)
run: $(STAMP)
	@$(PY) manage.py migrate --no-input -v 0
	@$(PY) manage.py notify demo --if-embedded  # new demo users' passwords are printed once, here
	@$(PY) manage.py notify run --port $(PORT)

## test: the whole suite on SQLite
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest $(PYTEST_ARGS)

## test-pg: the whole suite on PostgreSQL ($(PG_URL))
test-pg: $(STAMP)
	DATABASE_URL=$(PG_URL) $(BIN)/pytest $(PYTEST_ARGS)

## lint: ruff (rules and formatting), the import-linter contracts, mypy over the public API
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/mypy

## bench: the benchmark workloads (bench/, results in BENCHMARKS.md)
bench: $(STAMP)
	$(PY) manage.py notify bench

## lock: re-resolve requirements.lock from pyproject.toml
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra push --python-version 3.12 --generate-hashes -o requirements.lock

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
