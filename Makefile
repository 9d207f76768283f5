# Entry points (README.md, docs/install.md, docs/development.md): `make run` (main job), `make test`
# (test suite, quick tier), `make test-slow` (its long end-to-end cases) and `make lint` (ruff).
# Both create or reuse the virtual environment .venv in this checkout and install the pinned
# requirements into it first. `make bazel-test` runs the suite again under Bazel (docs/bazel.md);
# it installs no Bazel: when `bazel` is not on PATH it says how to get it and stops.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: run test test-slow lint bazel-test benchmark meta-benchmark meta-benchmark-scaling genome-mnist-fast genome-mnist-scratch clean

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m launchers.main

# The quick tier; the long end-to-end cases (marker `slow`) run with `make test-slow`, and both
# under `.ci/run` and Bazel (docs/development.md).
test: $(VENV)/.installed
	$(PY) -m pytest -q -m "not slow" tests

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow tests

# ruff, configured in pyproject.toml: lint, then the format check (docs/development.md).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

BAZEL ?= bazel
BAZEL_FLAGS ?=
BLUR_TFDS_MANUAL_DIR ?= $(abspath $(CURDIR)/..)/shared/data

# Bazel 4 (WORKSPACE) runs every target with $(PY), so the virtualenv comes first.
bazel-test:
	@command -v $(BAZEL) >/dev/null 2>&1 || { \
	  echo "make bazel-test: '$(BAZEL)' is not on PATH; nothing was installed. Install Bazel first," >&2; \
	  echo "  on Debian/Ubuntu (Bazel 4.2.3, ~38 MB): sudo apt-get install -y bazel-bootstrap" >&2; \
	  echo "  or Bazel 7+ through Bazelisk (uses MODULE.bazel; see docs/bazel.md)." >&2; \
	  exit 1; }
	@$(MAKE) --no-print-directory $(VENV)/.installed
	BLUR_TFDS_MANUAL_DIR="$(BLUR_TFDS_MANUAL_DIR)" $(BAZEL) test $(BAZEL_FLAGS) //...

benchmark: $(VENV)/.installed
	$(PY) -m launchers.benchmark

meta-benchmark: $(VENV)/.installed
	BLUR_TFDS_MANUAL_DIR="$(BLUR_TFDS_MANUAL_DIR)" $(PY) -m launchers.meta_benchmark

# meta-steps/s on 1 device and under MirroredStrategy on 2 logical CPU devices
# (docs/distributed.md); run it on an idle machine.
meta-benchmark-scaling: $(VENV)/.installed
	BLUR_TFDS_MANUAL_DIR="$(BLUR_TFDS_MANUAL_DIR)" $(PY) -m launchers.meta_benchmark \
	  --devices=1,2 --estimators=full --lengths=10,50

# genomes/mnist_fast.json from scratch (genomes/mnist_fast.md): the two meta-training stages of
# launchers/configs/mnist_fast*.cfg, each resumable; the result is runs/mnist_fast_stage2/genome.json.
genome-mnist-fast: $(VENV)/.installed
	$(PY) -m launchers.meta_train --flagfile=launchers/configs/mnist_fast.cfg \
	  --out_dir=runs/mnist_fast_stage1 --tfds_manual_dir="$(BLUR_TFDS_MANUAL_DIR)"
	$(PY) -m launchers.meta_train --flagfile=launchers/configs/mnist_fast_stage2.cfg \
	  --out_dir=runs/mnist_fast_stage2 --tfds_manual_dir="$(BLUR_TFDS_MANUAL_DIR)"

# genomes/mnist_scratch.json from a random genome (genomes/mnist_scratch.md): CMA-ES
# (launchers/configs/mnist_scratch_cma.cfg), then the gradient meta-trainer at the 200-step horizon
# (mnist_scratch_stage2.cfg), each resumable; SEED=n reruns it from another random genome (out_dir
# suffix _seedn). The result is runs/mnist_scratch_stage2$(SUFFIX)/genome.json.
SEED ?= 0
SUFFIX := $(if $(filter 0,$(SEED)),,_seed$(SEED))
genome-mnist-scratch: $(VENV)/.installed
	$(PY) -m launchers.cma_train --flagfile=launchers/configs/mnist_scratch_cma.cfg --seed=$(SEED) \
	  --out_dir=runs/mnist_scratch_cma$(SUFFIX) --tfds_manual_dir="$(BLUR_TFDS_MANUAL_DIR)"
	$(PY) -m launchers.meta_train --flagfile=launchers/configs/mnist_scratch_stage2.cfg \
	  --seed=$(SEED) --init_genome=runs/mnist_scratch_cma$(SUFFIX)/genome.json \
	  --out_dir=runs/mnist_scratch_stage2$(SUFFIX) --tfds_manual_dir="$(BLUR_TFDS_MANUAL_DIR)"

clean:
	rm -rf $(VENV)
