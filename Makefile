# Every command a person runs. `make demo` and `make test` create .venv with python3 if absent.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PYTHONUNBUFFERED := 1

.PHONY: venv demo demo-all test test-fast bench lint clean report compare tensorboard notebook

# The packages are byte-compiled by compileall on every core rather than by pip on one (the install 41 ->
# 35-39 s on 2 cores); a file that does not compile is skipped, as pip skips it. Left out (`NOT_IMPORTED`):
# what nothing here imports, i.e. transformers' 2,900 model files but BERT's and RoBERTa's, TFDS's dataset
# catalogue (its core stays) and pip: compileall 17.5 -> about 14 s. A left-out module that something does import
# still works (Python compiles it in memory when it is imported); what the CLIs, models, pipeline, report and
# the tests' libraries import is all compiled (checked over sys.modules).
NOT_IMPORTED := /site-packages/(transformers/models/(?!(auto|bert|roberta)/|__init__)|tensorflow_datasets/(?!(core|proto|rlds)/|[a-z_]+\.py$$)|pip/)
$(STAMP): requirements.txt requirements-dev.txt requirements-extract.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --no-compile -r requirements.txt -r requirements-dev.txt -r requirements-extract.txt
	$(BIN)/python -m compileall -q -j 0 -x '$(NOT_IMPORTED)' $(VENV)/lib > /dev/null || true
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

# Train text_only and early_fusion on the synthetic benchmark, evaluate both, print the table.
demo: $(STAMP)
	$(BIN)/python -m mmfuse_jax.demo --workdir=runs/demo

# Everything `make demo` runs, plus mvcl_daf beside the other intent models.
demo-all: $(STAMP)
	$(BIN)/python -m mmfuse_jax.demo --workdir=runs/demo --suites=intent,intent_more,open_intent

# Redraw a run's report.md and plots: make report RUN=runs/demo/dyken_hyena
report: $(STAMP)
	$(BIN)/python -m mmfuse_jax.report --workdir=$(RUN)

# Compare run folders: make compare RUNS="runs/demo/*" (also writes compare.md)
RUNS ?= runs/*/ runs/demo/*/
compare: $(STAMP)
	$(BIN)/python -m mmfuse_jax.compare $(RUNS) --out=compare.md

# TensorBoard over every run (needs `pip install tensorboard`; the runs only need tensorboardX)
tensorboard:
	$(BIN)/tensorboard --logdir runs

# Run the Colab notebook here on CPU with the tiny preset (as the test suite does)
notebook: $(STAMP)
	$(BIN)/python -m pytest -q tests/test_notebook.py

test: lint
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=15 tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not slow" tests

bench: $(STAMP)
	$(BIN)/python -m benchmarks.all_models --steps=10

# ruff (rules in pyproject.toml) and the import contracts of ../shared/DESIGN.md ([tool.importlinter]).
lint: $(STAMP)
	$(BIN)/python -m ruff check mmfuse_jax configs tests benchmarks train.py eval.py predict.py
	$(BIN)/lint-imports --no-cache

clean:
	rm -rf runs data/synthetic_demo data/synthetic_tiny
