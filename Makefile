# isotune: the two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

# CPU install path: torch is pinned to its CPU build by constraints/cpu.txt (no CUDA download).
$(STAMP): pyproject.toml constraints/cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/cpu.txt -e '.[dev,worker,service]'
	touch $(STAMP)

# The main job: a server on SQLite, two workers, a theory-restricted study and a control, end to end.
demo: $(STAMP)
	$(BIN)/isotune demo

# The test command (.ci/run calls exactly this).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
