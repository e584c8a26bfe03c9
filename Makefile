# dsls — `make help` lists the targets. Every target installs what is missing first (idempotent).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
ARGS   ?=
# Paths reach the recipes verbatim ($(value): no make expansion) through the environment, and the shell expands them
# inside double quotes ("$$CKPT"): a value is one argument, never code. ARGS stays a make expansion on purpose: it is
# several arguments, split by the shell.
override CKPT := $(value CKPT)
override DATASET := $(value DATASET)
override CONFIRM := $(value CONFIRM)
export CKPT DATASET CONFIRM
# The torch build. TORCH=cuda: PyPI's default, which on Linux brings 3.2 GB of CUDA libraries (a 5.9 GB .venv).
# TORCH=cpu: the newest CPU builds (+cpu) of torch and torchvision at TORCH_CPU_INDEX (a ~1.5 GB .venv). Unset: cuda
# where an NVIDIA GPU shows (/dev/nvidia0, or nvidia-smi lists one), else cpu, or PyPI's default where that index has
# no +cpu pair (PyPI's torchvision needs the CUDA torch). A torch already in .venv stays: rm -rf .venv to switch.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
ifndef TORCH  # found once per make (not at each use of the variable)
TORCH := $(if $(wildcard /dev/nvidia0),cuda,$(if $(shell nvidia-smi -L 2>/dev/null),cuda,cpu))
endif
export TORCH_CPU_INDEX
# The newest +cpu version of package $(1) at TORCH_CPU_INDEX, or nothing (pip lists the newest first).
cpu_build = $(PY) -m pip index versions $(1) --retries 1 --timeout 15 --index-url "$$TORCH_CPU_INDEX" 2>/dev/null \
	| sed -n 's/^Available versions: //p' | tr ', ' '\n\n' | grep -m1 '+cpu$$'
# Busy-waiting OpenMP threads slow torch ~10x on a machine whose cores are busy; must be set before torch loads.
OMP_WAIT_POLICY ?= PASSIVE
export OMP_WAIT_POLICY

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast train-mnist train-cifar train-celebahq train-lsun evaluate ablate bench clean \
	clean-runs

help:  ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@$(if $(filter-out cpu cuda,$(TORCH)),echo "error: TORCH must be cpu or cuda (unset: cuda with an NVIDIA GPU and cpu without)"; exit 2)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV) || { echo "error: '$(PYTHON) -m venv' failed; install the venv module (e.g. apt-get install python3-venv) or set PYTHON=..."; exit 1; }
	$(PY) -m pip install --quiet --upgrade pip
	@if [ $(TORCH) = cpu ] && ! $(PY) -m pip show --quiet torch >/dev/null 2>&1; then \
	  torch=$$($(call cpu_build,torch)); vision=$$($(call cpu_build,torchvision)); \
	  if [ -n "$$torch" ] && [ -n "$$vision" ]; then \
	    echo "torch: the CPU build, torch $$torch and torchvision $$vision from $$TORCH_CPU_INDEX"; \
	    $(PY) -m pip install --quiet --extra-index-url "$$TORCH_CPU_INDEX" "torch==$$torch" "torchvision==$$vision" -e '.[dev]' \
	      && exit 0; \
	  fi; \
	  $(if $(filter file,$(origin TORCH)),echo "torch: no CPU torch with a matching torchvision at $$TORCH_CPU_INDEX; PyPI's default instead", \
	    echo "error: no CPU torch with a matching torchvision at $$TORCH_CPU_INDEX; set TORCH_CPU_INDEX or TORCH=cuda"; exit 1); \
	fi; \
	$(PY) -m pip install --quiet -e '.[dev]' || { echo "error: pip could not install dsls and its dependencies (see above)"; exit 1; }
	@touch $@

install: $(STAMP)  ## create .venv with dsls and its dev extra; TORCH=cpu|cuda picks torch (default: cpu without a GPU)

demo: $(STAMP)  ## toy grid25: train AE, train D, search; prints the table and writes runs/toy/<time>/samples.png
	$(PY) experiments/run_pipeline.py --config-dir configs/toy --profile demo $(ARGS)

test: $(STAMP)  ## run the whole test suite (CPU, offline, a few minutes)
	$(PY) -m pytest -q $(ARGS)

test-fast: $(STAMP)  ## the suite without the slow end-to-end tests
	$(PY) -m pytest -q -m "not slow" $(ARGS)

train-mnist: $(STAMP)  ## MNIST: the three phases (ARGS="--trainer.devices=8 ..." go to every phase)
	$(PY) experiments/run_pipeline.py --config-dir configs/mnist $(ARGS)

train-cifar: $(STAMP)  ## CIFAR-10: the three phases (downloads to data/ on first use)
	$(PY) experiments/run_pipeline.py --config-dir configs/cifar10 $(ARGS)

train-celebahq: $(STAMP)  ## CelebA-HQ 256 from data/celebahq256 (a folder or zip of the 30k images)
	$(PY) experiments/run_pipeline.py --config-dir configs/celebahq256 $(ARGS)

train-lsun: $(STAMP)  ## LSUN church_outdoor 256 from data/lsun/church_outdoor_train_lmdb
	$(PY) experiments/run_pipeline.py --config-dir configs/lsun_church $(ARGS)

evaluate: $(STAMP)  ## CKPT=<phase-2 ckpt or search.ckpt>: samples-*.npz, results.json, samples.png
	@test -n "$$CKPT" || { echo "usage: make evaluate CKPT=runs/<dataset>/<run>/adversarial/checkpoints/last.ckpt [ARGS=...]"; exit 2; }
	$(PY) experiments/evaluate.py --ckpt "$$CKPT" $(ARGS)

ablate: $(STAMP)  ## DATASET=digits|toy|mnist|cifar10|...: the peer table (trains what its run folder lacks)
	$(PY) experiments/ablate.py --config-dir "configs/$${DATASET:-digits}" $(ARGS)

bench: $(STAMP)  ## sampling and training cost ratios on this machine (default CIFAR-10 networks)
	$(PY) experiments/bench_sampling.py $(ARGS)
	$(PY) experiments/bench_training.py $(ARGS)

clean:  ## remove caches (.pytest_cache); keeps .venv and every run (runs/, lightning_logs/, wandb/: see clean-runs)
	rm -rf .pytest_cache

# What users made: checkpoints, samples and logs of every run. Listed first, deleted only after a yes (read from stdin,
# so no answer, as in a script, deletes nothing) or with CONFIRM=yes.
RUN_FOLDERS := runs lightning_logs wandb
clean-runs:  ## DELETE runs/, lightning_logs/, wandb/ (every run): lists them, asks first (CONFIRM=yes: no question)
	@found=$$(for d in $(RUN_FOLDERS); do if [ -e "$$d" ]; then echo "$$d"; fi; done); \
	if [ -z "$$found" ]; then echo "nothing to delete: no $(RUN_FOLDERS)"; exit 0; fi; \
	echo "this deletes:"; \
	for d in $$found; do \
	  if [ "$$d" = runs ]; then find runs -mindepth 1 -maxdepth 2 \( -path 'runs/*/*' -o -type f \) | sort; \
	  else echo "$$d"; fi; \
	done | sed 's/^/  /'; \
	du -sch $$found | tail -n 1 | sed 's/total$$/in all/; s/^/  /'; \
	if [ "$$CONFIRM" != yes ]; then \
	  printf 'delete them? [y/N] '; read -r answer || { answer=; echo; }; \
	  case "$$answer" in y|Y|yes) ;; *) echo "nothing deleted (CONFIRM=yes deletes without asking)"; exit 1;; esac; \
	fi; \
	echo rm -rf $$found; rm -rf $$found
