# The two commands a new user types are `make demo` and `make test`; both set the project up
# first when .venv is missing.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
SAM_VENV := .tools/sam
CHECKOV_VENV := .tools/checkov
STAMP := $(VENV)/.installed-stamp

.PHONY: setup test unit integration e2e lint stack api demo bench bench-scoring clean mlflow-ui train \
	engine-up engine-down training-image containers-test bench-containers localstack-test

setup: $(STAMP) $(SAM_VENV)/bin/sam $(CHECKOV_VENV)/bin/checkov

$(STAMP): pyproject.toml requirements-dev.txt layers/fraudlib/requirements.txt functions/scoring/requirements.txt training_job/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -r training_job/requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(SAM_VENV)/bin/sam: requirements-sam.txt
	$(PYTHON) -m venv $(SAM_VENV)
	$(SAM_VENV)/bin/pip install --quiet --upgrade pip
	$(SAM_VENV)/bin/pip install --quiet -r requirements-sam.txt
	touch $@

# checkov, in its own virtual environment too: it pins boto3, pydantic and others.
$(CHECKOV_VENV)/bin/checkov: requirements-checkov.txt
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.txt
	touch $@

test: setup
	$(PY) -m pytest

unit: setup
	$(PY) -m pytest tests/unit

integration: setup
	$(PY) -m pytest tests/integration

e2e: setup
	$(PY) -m pytest tests/e2e

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/cfn-lint template.yaml
	$(SAM_VENV)/bin/sam validate --lint --template template.yaml --region us-east-1
	$(CHECKOV_VENV)/bin/checkov -f template.yaml --framework cloudformation --skip-download --compact

stack: setup
	$(PY) -m devstack.stack $(ARGS)

# The scoring API alone on http://127.0.0.1:3000, against a running `make stack`'s S3.
api: setup
	$(PY) -m devstack.api $(ARGS)

# KEEP=1 leaves the stack running afterwards; ARGS='--synthetic' or '--data PATH'.
demo: setup
	$(PY) -m devstack.demo $(if $(KEEP),--keep) $(ARGS)

bench: setup
	$(PY) bench/drift_bench.py

bench-scoring: setup
	$(PY) bench/scoring_bench.py $(ARGS)

clean:
	rm -rf .stack .pytest_cache .ruff_cache

mlflow-ui: setup
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/.stack/mlflow.db --host 127.0.0.1 --port 5000

train: setup
	$(PY) training_job/entrypoint.py $(ARGS)

# -- containers (a Docker engine, or podman's Docker API from scripts/container-engine.sh) ----
# DOCKER_HOST for podman's service when it runs; nothing for a real Docker engine.
ENGINE_ENV = eval "$$(scripts/container-engine.sh env)";
TRAINING_IMAGE ?= fraud-training:local
# Where a CPU torch wheel may lie on this machine (training_job/wheels/README.md).
TORCH_WHEEL_DIR ?= /opt/wheels

engine-up: setup
	scripts/container-engine.sh up

engine-down:
	scripts/container-engine.sh down

training-image:
	@for wheel in $(TORCH_WHEEL_DIR)/torch-*+cpu-*.whl; do \
		if [ -f "$$wheel" ] && [ ! -f "training_job/wheels/$$(basename "$$wheel")" ]; then cp "$$wheel" training_job/wheels/; fi; \
	done
	$(ENGINE_ENV) docker build -f training_job/Dockerfile -t $(TRAINING_IMAGE) \
		--build-arg GIT_COMMIT=$$(git rev-parse HEAD 2>/dev/null || echo unknown) .

# Sets the engine up first; REQUIRE_CONTAINERS=1 turns a missing engine into a failure.
containers-test: engine-up
	REQUIRE_CONTAINERS=1 $(PY) -m pytest tests/containers

bench-containers: engine-up
	$(PY) bench/container_bench.py $(ARGS)

# The integration and e2e tests against LocalStack on the host (scripts/localstack.sh): its own
# Python 3.13 venv (.tools/localstack), started before and stopped after the run.
localstack-test: $(STAMP)
	scripts/localstack.sh test $(ARGS)
