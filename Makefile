# The two commands of the README, plus helpers. Each target sets the machine up first (idempotent).
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup pretrain test doctor gpu-test gpu-bench gpu-check docs clean

setup:
	@bash scripts/setup.sh

## The main job on the embedded default (Fashion-MNIST, MoCo v3 + SDMP, tiny ViT) with the DALI loader; ARGS adds overrides.
pretrain: setup
	$(PY) -m sdmp_fast.pretrain --loader dali run.tensorboard=true $(ARGS)

## The test suite. SDMP_REQUIRE makes a broken DALI/FFCV install fail instead of skipping their tests.
test: setup
	SDMP_REQUIRE=dali,ffcv $(PY) -m pytest -q --durations=20 $(ARGS)

## A new machine's check before a long run (docs/performance.md, "GPU check"); ARGS: e.g. --config X --data D.
## Uses $(PYTHON), else .venv when there is one, else the machine's python3 (GPU machines have no package registry).
doctor:
	$(or $(PYTHON),$(if $(wildcard .venv/bin/python),.venv/bin/python,python3)) -m sdmp_fast.doctor $(ARGS)

## GPU machines only, with the machine's own python3, installing nothing; output under GPU_CHECK_OUT
## (default runs/gpu-check/). gpu-check = doctor + gpu-test + gpu-bench in under 6 minutes on one H100.
gpu-test:
	@bash scripts/gpu_test.sh

gpu-bench:
	@bash scripts/gpu_bench.sh

gpu-check:
	@bash scripts/gpu_check.sh

docs:
	$(PY) -c "from sdmp_fast.config import config_markdown; print(config_markdown())" > docs/config.md

clean:
	rm -rf runs .pytest_cache
