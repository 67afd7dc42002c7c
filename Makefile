# The two commands of the README, plus helpers. Each target sets the machine up first (idempotent).
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup pretrain test gpu-check docs clean

setup:
	@bash scripts/setup.sh

## The main job on the embedded default (Fashion-MNIST, MoCo v3 + SDMP, tiny ViT) with the DALI loader; ARGS adds overrides.
pretrain: setup
	$(PY) -m sdmp_fast.pretrain --loader dali run.tensorboard=true $(ARGS)

## The test suite. SDMP_REQUIRE makes a broken DALI/FFCV install fail instead of skipping their tests.
test: setup
	SDMP_REQUIRE=dali,ffcv $(PY) -m pytest -q --durations=20 $(ARGS)

## GPU machines only: the gpu-marked tests and the throughput benchmark with the machine's own python3, about 8 minutes
## on one H100; writes benchmarks/results/throughput-cuda.json and gpu-check-report.md (GPU_CHECK_OUT: elsewhere).
## Installs nothing (those machines have torch/torchvision/timm/triton and no package registry).
gpu-check:
	@bash scripts/gpu_check.sh

docs:
	$(PY) -c "from sdmp_fast.config import config_markdown; print(config_markdown())" > docs/config.md

clean:
	rm -rf runs .pytest_cache
