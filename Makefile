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

.PHONY: setup cluster-tools demo test test-fast test-extended test-multiseed bench clean

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
	$(BIN)/python -m pytest -m "not gpu and not extended" -q --durations=30

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not gpu and not slow and not extended" -q

# variants of what make test covers (more engines, ranks, failure kinds): opt-in, to keep make test within its budget
test-extended: $(STAMP) cluster-tools
	$(BIN)/python -m pytest -m "extended and not gpu" -q --durations=30

# the statistical learning claim of the tiny default for 3 seeds (about 3 x the demo's time)
test-multiseed: $(STAMP)
	$(BIN)/python -m pytest -m multiseed -q

bench: $(STAMP)
	for b in bench/[!_]*.py; do $(BIN)/python $$b --json || exit 1; done

clean:
	rm -rf $(VENV) runs mlflow.db mlruns .pytest_cache
