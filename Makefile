# lighthead: `make demo` runs the whole pipeline on the bundled demo data; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LH := $(VENV)/bin/lighthead
DATASET ?= demo
HEAD ?= casc
DEMO_OUT ?= demo-out
ifeq ($(DATASET),demo)
DATA ?= $(DEMO_OUT)/data
STORE ?= $(DEMO_OUT)/store
else
DATA ?= $(if $(LIGHTHEAD_DATA),$(LIGHTHEAD_DATA)/$(DATASET),data/$(DATASET))
STORE ?= stores/$(DATASET)
endif
RUN ?= runs/$(HEAD)-$(DATASET)
BENCH_ARGS ?= --quick
BENCH_GPU_ARGS ?=
EXTRACT_ARGS ?=
TRAIN_ARGS ?=

.PHONY: help install demo test lint format bench bench-gpu extract train docs docs-pages docs-transcripts clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-10s %s\n", $$1, $$2}'

install: $(VENV)/.installed ## create .venv (if absent) and install the project with its test extra (tested torch)

# pyproject.toml declares the supported torch range; constraints/tested.txt pins the tested pair.
$(VENV)/.installed: pyproject.toml constraints/tested.txt
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints/tested.txt -e '.[dev]'
	touch $@

demo: install ## generate the demo dataset, extract its features, train and evaluate heads (CPU, minutes)
	$(LH) demo --out $(DEMO_OUT)

test: lint ## lint, then run the tests (CPU, no network; GPU and SLURM tests are deselected)
	$(PY) -m pytest -q -m "not gpu and not slurm"

lint: install ## ruff: lint and format check (`make format` rewrites the files)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: install ## ruff: fix what can be fixed and format the code
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install ## run the benchmarks in their quick mode and print their ratios (BENCH_ARGS= for full sizes)
	$(PY) -m bench.store $(BENCH_ARGS)
	$(PY) -m bench.text $(BENCH_ARGS)
	$(PY) -m bench.extract $(BENCH_ARGS)
	$(PY) -m bench.retrieval_eval $(BENCH_ARGS)
	$(PY) -m bench.train $(BENCH_ARGS)
	$(PY) -m bench.sweep $(BENCH_ARGS)

bench-gpu: install ## one CUDA device, under 8 minutes: a 30 s self-check, gpu tests, then detector/text/scoring/training speed and memory -> bench/results/<device>.md
	$(PY) -m bench.gpu $(BENCH_GPU_ARGS)

extract: install ## extract every feature DATASET's heads need: make extract DATASET=coco [DATA=path]
ifeq ($(DATASET),demo)
	$(LH) demo --out $(DEMO_OUT) --stages data,extract
else
	$(LH) extract --dataset $(DATASET) --root $(DATA) --store $(STORE) $(EXTRACT_ARGS)
endif

train: install ## train and evaluate a head on a store: make train HEAD=casc DATASET=demo (builds the demo store if absent)
ifeq ($(DATASET),demo)
	test -f $(STORE)/meta/records.json || $(LH) demo --out $(DEMO_OUT) --stages data,extract
endif
	$(LH) train heads $(HEAD) --store $(STORE) --dataset $(DATASET) --out $(RUN) $(TRAIN_ARGS) \
		$(if $(wildcard $(RUN)/checkpoints/last.safetensors),--resume)
	$(LH) evaluate $(RUN)

docs: install ## build the documentation site into site/ (strict: a broken link or anchor fails); open site/index.html
	$(PY) docs/gen_pages.py --check
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-pages: install ## rewrite the generated tables in docs/ from the code (head settings, registries, CLI, bench figures)
	$(PY) docs/gen_pages.py

docs-transcripts: install ## rerun the commands whose output docs/ shows (all, or NAMES="demo train-casc"; slow)
	$(PY) docs/make_transcripts.py $(NAMES)

clean: ## remove generated demo outputs (keeps .venv)
	rm -rf $(DEMO_OUT) runs
