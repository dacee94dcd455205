# isotune: the two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# The tests run in pytest-xdist worker processes, handed one test at a time (tests/conftest.py
# orders the longest first). `make test` uses more workers than the 2 cores it was sized on: many
# of its tests wait on the servers, workers and scripts they start; `make check` computes, one
# worker a core. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= 4
CHECK_WORKERS ?= auto
XDIST := --dist load --maxschedchunk 1

.PHONY: demo test check mutate lint clean

# CPU install path: torch is pinned to its CPU build by constraints/cpu.txt (no CUDA download).
$(STAMP): pyproject.toml constraints/cpu.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints/cpu.txt -e '.[dev,worker,service]'
	touch $(STAMP)

# The main job: a server on SQLite, two workers, a theory-restricted study and a control, end to end.
demo: $(STAMP)
	$(BIN)/isotune demo

# The test command (.ci/run calls exactly this): every check, every test. PostgreSQL and SLURM are
# required: their binaries are installed when missing (.ci/postgres, .ci/slurm);
# ISOTUNE_SKIP_POSTGRES=1 and ISOTUNE_SKIP_SLURM=1 opt out, and the run then says what it skipped.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	@if [ "$${ISOTUNE_SKIP_POSTGRES:-0}" != 1 ]; then bash .ci/postgres; fi
	@if [ "$${ISOTUNE_SKIP_SLURM:-0}" != 1 ]; then bash .ci/slurm; fi
	ISOTUNE_REQUIRE_POSTGRES=$$([ "$${ISOTUNE_SKIP_POSTGRES:-0}" = 1 ] && echo 0 || echo 1) \
	ISOTUNE_REQUIRE_SLURM=$$([ "$${ISOTUNE_SKIP_SLURM:-0}" = 1 ] && echo 0 || echo 1) \
		$(BIN)/pytest -q -n $(PYTEST_WORKERS) $(XDIST)

# The inner loop (about a minute): the same lint, and the tests not marked slow (no server,
# worker or benchmark process, no simulation that takes seconds).
check: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q -n $(CHECK_WORKERS) $(XDIST) -m "not slow"

# Mutation testing of the cell maps, the lease logic and the prior (not in make test or CI; about
# an hour on 2 cores): benchmarks/results/mutation.md lists every surviving mutant and its judgement.
mutate: $(STAMP)
	$(BIN)/pip install --quiet -c constraints/cpu.txt -e '.[mutate]'
	$(BIN)/python benchmarks/mutation.py run --max-children $${MUTATE_WORKERS:-2}

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis mutants .simcache
