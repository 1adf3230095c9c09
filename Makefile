# The two commands a fresh machine needs:
#   make demo   installs, trains the sample ModelService, serves it here, prints a prediction
#   make test   installs, builds the Go binaries and images (cached), lints, runs every test
.PHONY: demo test lint typecheck unit bench tools images clean

VENV ?= .venv
PY := $(VENV)/bin/python
# operator/ sits at the repository root (it is tfmaas.operator); keep `python -m …` run from
# here from importing it in place of the standard library's operator module.
export PYTHONSAFEPATH := 1

demo:
	scripts/bootstrap
	@# The native gRPC front end needs Go; without it the server answers gRPC in Python.
	-$(VENV)/bin/tfmaas dev tools build grpc-frontend
	$(VENV)/bin/tfmaas local run deploy/samples/sentiment.yaml

test: lint typecheck
	.ci/install-system-packages
	.ci/install-node-packages
	.ci/build-tools
	$(VENV)/bin/pytest tests -q -p no:cacheprovider

unit:
	scripts/bootstrap
	$(VENV)/bin/pytest tests/unit -q

lint:
	scripts/bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# The editable install maps operator/ and trainer/ into tfmaas with an import hook that
# type checkers cannot follow, so mypy checks an installed copy of the package instead.
typecheck:
	scripts/bootstrap
	rm -rf build/typecheck
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation --target build/typecheck .
	cd build/typecheck && $(abspath $(VENV))/bin/mypy --config-file $(CURDIR)/pyproject.toml -p tfmaas

tools:
	scripts/bootstrap
	.ci/build-tools

# The release images (trainer, operator, access gateway, demo store: each whose Dockerfile exists),
# tagged [REGISTRY/]tfmaas/<name>:<version> as the chart expects; PUSH=1 pushes them.
# BUILDER=docker|buildah picks the tool (default: whichever is installed); BUILD_ARGS="A=b C=d".
REGISTRY ?=
PUSH ?=
BUILDER ?=
BUILD_ARGS ?=
images:
	scripts/bootstrap
	$(PY) -m tfmaas.dev.release_images --registry "$(REGISTRY)" --builder "$(BUILDER)" \
		$(if $(filter 1 true yes,$(PUSH)),--push) $(foreach arg,$(BUILD_ARGS),--build-arg $(arg))

bench:
	scripts/bootstrap
	$(PY) benchmarks/train_benchmark.py
	$(PY) benchmarks/serving_benchmark.py
	$(PY) benchmarks/operator_benchmark.py
	$(PY) benchmarks/access_gateway_benchmark.py
	$(PY) benchmarks/explain_benchmark.py
	$(PY) benchmarks/checkpoint_benchmark.py
	$(PY) benchmarks/tune_benchmark.py

clean:
	rm -rf .tfmaas build *.egg-info
