"""A training stage meets bad numerics or a full disk, and a resume continues as if nothing happened.

- A NaN loss (injected with RINGCTL_CHAOS_NAN_AT) stops SFT with one error naming the stage, the step and the
  value (exit 1) before that update; the last checkpoint is intact and nothing is written after it; `ringctl
  resume` without the injection ends with the weights and metrics of an uninterrupted run (same machine: exact).
- `on_nonfinite: skip_step` on 2 ranks with the NaN on one rank only: both ranks withhold the update, the run
  completes, train/skipped_steps counts 1 and every later loss is finite.
- RL and the reward model: stop naming the step (the RL state before it intact, a resume completes), skip counted.
- The run's workdir on a real tmpfs where the first checkpoints fit and a later one does not: exit 1, one error
  naming the checkpoint's path and the space needed, no partial directory, the previous state intact and loadable;
  after the tmpfs is enlarged `ringctl resume` ends with the uninterrupted run's weights and metrics.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ringctl import chaos
from ringctl.errors import NonFiniteError
from tests.helpers import ringctl, ringctl_json, write
from tests.integration.sft_data import write_arithmetic
from tests.integration.test_sft import SFT_RECIPE, _history
from tests.tmpfs import remount, tmpfs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

# test_sft's SFT run cut to one epoch: 10 optimizer steps, states at steps 3, 6, 9 and 10
RECIPE = SFT_RECIPE.replace("epochs: 2", "epochs: 1") + "{extra}"


def _recipe(tmp_path: Path, name: str = "r.yaml", extra: str = "") -> Path:
    data = tmp_path / "data.jsonl"
    if not data.exists():
        write_arithmetic(data, n=120)
    return write(tmp_path / name, RECIPE.format(data=data, extra=extra))


def _run_dir(workdir: Path) -> Path:
    (run_dir,) = [d for d in workdir.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return run_dir


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "train" / "outputs" / "checkpoints" / "epoch-1" / "model.safetensors"))


def _same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=0, rtol=0)


def _states(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "train" / "state").iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("reference")
    proc, doc = ringctl_json("run", _recipe(tmp), "--workdir", tmp / "w", cwd=tmp)
    assert proc.returncode == 0, proc.stderr
    return tmp / "w" / doc["run_id"]


def test_nan_loss_stops_sft_naming_the_step_then_resume_matches_an_uninterrupted_run(tmp_path, reference):
    recipe = _recipe(tmp_path)
    proc = ringctl("run", recipe, "--workdir", tmp_path / "w", cwd=tmp_path, env={chaos.ENV_NAN_AT: "train:5"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_dir = _run_dir(tmp_path / "w")
    error = (run_dir / "train" / "error.txt").read_text()
    first = error.splitlines()[0]
    assert first == "stage 'train': non-finite loss nan and grad norm nan at step 5: training stopped there."
    assert "stage 'train': non-finite loss nan" in proc.stderr  # the terminal shows it
    # nothing after the last good state (step 3): no later state, no epoch checkpoint, metrics up to step 4 only
    assert _states(run_dir) == ["step-0000003"]
    assert not list((run_dir / "train" / "outputs" / "checkpoints").iterdir())
    assert [r["step"] for r in _history(run_dir)] == [1, 2, 3, 4]
    proc, _ = ringctl_json("resume", run_dir.name, "--workdir", tmp_path / "w", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    _same_weights(_weights(run_dir), _weights(reference))
    assert _history(run_dir) == _history(reference)


def test_skip_step_on_two_ranks_withholds_the_update_everywhere_and_counts_it(tmp_path):
    recipe = _recipe(tmp_path, extra="    on_nonfinite: skip_step\n"
                                     "    launch: {launcher: torchrun, nproc_per_node: 2}\n")
    proc, doc = ringctl_json("run", recipe, "--workdir", tmp_path / "w", cwd=tmp_path,
                             env={chaos.ENV_NAN_AT: "train:5:1", "OMP_NUM_THREADS": "1"})  # rank 1's loss only
    assert proc.returncode == 0, proc.stderr
    run_dir = tmp_path / "w" / doc["run_id"]
    rows = [r for r in _history(run_dir) if "train/loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert [r["train/skipped_steps"] for r in rows] == [0] * 4 + [1] * 6
    assert math.isnan(rows[4]["train/loss"]) and math.isnan(rows[4]["grad_norm"])  # the summed loss of step 5
    # a rank that applied the NaN update would have NaN weights, and every later (summed) loss would be NaN
    assert all(math.isfinite(r["train/loss"]) for i, r in enumerate(rows) if i != 4)
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert all(torch.isfinite(w).all() for w in _weights(run_dir).values())
    log = (run_dir / "train" / "stage.log").read_text()
    assert log.count("step 5: non-finite loss nan and grad norm nan: update skipped (on_nonfinite: skip_step)") == 1


def _tiny_recipe():
    from ringctl.recipe.schema import ResourcesConfig
    from ringctl.train.config import BackendsConfig, ModelConfig

    return SimpleNamespace(model=ModelConfig(), backends=BackendsConfig(), resources=ResourcesConfig(), seed=0,
                           deterministic=True)


def test_rl_stops_at_a_nan_step_keeping_the_state_before_it_and_skip_step_counts(tmp_path, monkeypatch):
    import stages.rl as rl
    from ringctl.data.synth import generate_rl
    from ringctl.pipeline.context import StageContext
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ModelConfig())
    init = tmp_path / "init"
    model.save_pretrained(init)
    tok.save_pretrained(init)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in generate_rl(40, seed=0, domains=["arithmetic"])))
    inputs = {"select.checkpoint": init, "filter.rl": prompts}

    def cfg(**kw):
        return rl.Config(init="select.checkpoint", prompts="filter.rl", steps=2, save_every=1, eval_every=2,
                         prompts_per_step=2, samples_per_prompt=2, token_budget=64, max_new_tokens=16,
                         max_prompt_tokens=64, lr=1e-4, heldout_fraction=0.1, eval_prompts_count=4, reward_workers=1,
                         **kw)

    monkeypatch.setenv(chaos.ENV_NAN_AT, "rl:2")
    ctx = StageContext.for_test(tmp_path / "stop", "rl", inputs=inputs, recipe=_tiny_recipe())
    with pytest.raises(NonFiniteError, match=r"^stage 'rl': non-finite loss nan and grad norm nan at step 2"):
        rl.run(cfg(), ctx)
    assert ctx.resume_state().name == "step-000001" and [p.name for p in ctx.state_dir.iterdir()] == ["step-000001"]
    assert [p.name for p in (ctx.outputs_dir / "checkpoints").iterdir()] == ["step-000001"]
    assert [r["step"] for r in ctx.tracker.history() if "reward/mean" in r] == [1]
    monkeypatch.delenv(chaos.ENV_NAN_AT)
    resumed = StageContext.for_test(tmp_path / "stop", "rl", inputs=inputs, recipe=_tiny_recipe())
    out = rl.run(cfg(), resumed)
    assert out["final"].meta == {"step": 2}
    assert [r["step"] for r in resumed.tracker.history() if "reward/mean" in r] == [1, 2]

    monkeypatch.setenv(chaos.ENV_NAN_AT, "rl:1")
    ctx = StageContext.for_test(tmp_path / "skip", "rl", inputs=inputs, recipe=_tiny_recipe())
    out = rl.run(cfg(on_nonfinite="skip_step"), ctx)
    rows = [r for r in ctx.tracker.history() if "reward/mean" in r and r["step"] > 0]
    assert [r["train/skipped_steps"] for r in rows] == [1, 1]
    assert math.isnan(rows[0]["grad_norm"]) and math.isfinite(rows[1]["grad_norm"])
    state = torch.load(ctx.resume_state() / rl.STATE_FILE, weights_only=False)
    assert state["skipped_steps"] == 1  # carried over a resume


@pytest.mark.extended  # the same check as SFT and RL, through the reward model's loop
def test_reward_model_stops_at_a_nan_step_and_skip_step_counts(tmp_path, monkeypatch):
    import stages.reward_model as rm
    from ringctl.data.records import write_jsonl
    from ringctl.data.synth import generate_preferences
    from ringctl.pipeline.context import StageContext

    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(pairs, generate_preferences(48, seed=1))
    cfg = dict(pairs="prefs.preferences", epochs=1, batch_pairs=8, micro_batch_pairs=4, max_length=128,
               heldout_fraction=0.2)

    monkeypatch.setenv(chaos.ENV_NAN_AT, "rm:3")
    ctx = StageContext.for_test(tmp_path / "stop", "rm", inputs={"prefs.preferences": pairs}, recipe=_tiny_recipe())
    with pytest.raises(NonFiniteError, match=r"^stage 'rm': non-finite loss nan and grad norm nan at step 3"):
        rm.run(rm.Config(**cfg), ctx)
    assert not (ctx.outputs_dir / rm.MODEL_DIR).exists() and not list(ctx.outputs_dir.iterdir())

    ctx = StageContext.for_test(tmp_path / "skip", "rm", inputs={"prefs.preferences": pairs}, recipe=_tiny_recipe())
    out = rm.run(rm.Config(**cfg, on_nonfinite="skip_step"), ctx)
    rows = [r for r in ctx.tracker.history() if "train/loss" in r]
    assert [r["train/skipped_steps"] for r in rows] == [0, 0, 1, 1, 1]
    assert (out["model"].path / "config.json").is_file()


def test_disk_full_at_a_state_write_keeps_the_previous_state_then_resume_after_space_is_freed(tmp_path, reference):
    from ringctl.artifacts import human_bytes, tree_size

    state_size = tree_size(reference / "train" / "state" / "step-0000009")
    # room for two states (steps 3 and 6) but not a third beside them (step 9, before step 3's is pruned)
    with tmpfs(tmp_path / "disk", int(2.5 * state_size) + (2 << 20)) as disk:
        recipe = _recipe(tmp_path)
        proc = ringctl("run", recipe, "--workdir", disk, cwd=tmp_path)
        assert proc.returncode == 1, proc.stdout + proc.stderr
        run_dir = _run_dir(disk)
        error = (run_dir / "train" / "error.txt").read_text()
        target = run_dir / "train" / "state" / "step-0000009"
        lines = error.splitlines()
        assert lines[0] == f"no space left on the device while writing {target}"
        previous = run_dir / "train" / "state" / "step-0000006"
        assert lines[1].startswith(f"it needs about {human_bytes(tree_size(previous))} (the size of step-0000006) and ")
        assert lines[2] == ("The partial .tmp-step-0000009-shared was removed; step-0000006, written before, is "
                            "intact. Free space on that device and `ringctl resume` the run.")
        assert f"no space left on the device while writing {target}" in proc.stderr  # the terminal shows it
        assert _states(run_dir) == ["step-0000003", "step-0000006"]  # no partial directory, the previous state
        assert (previous / "COMPLETE").is_file()
        assert torch.load(previous / "sft_state.pt", weights_only=False)["step"] == 6
        torch.load(previous / "engine" / "engine.pt", weights_only=False)  # readable

        remount(disk, 8 * state_size)
        proc, _ = ringctl_json("resume", run_dir.name, "--workdir", disk, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        _same_weights(_weights(run_dir), _weights(reference))
        assert _history(run_dir) == _history(reference)


DS_SCRIPT = """
import sys, torch
sys.path.insert(0, {repo!r})
from ringctl.errors import NonFiniteError
from ringctl.train.config import DeepSpeedConfig
from ringctl.train.engine import DeepSpeedEngine, OptimSpec
from ringctl.train.numerics import NonFiniteGuard
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
engine = DeepSpeedEngine(model, OptimSpec(lr=0.1), DeepSpeedConfig(zero_stage=int(sys.argv[1])))
guard = NonFiniteGuard("sft", "skip_step")
before = [p.detach().clone() for p in engine.module.parameters()]
loss = ((engine(torch.randn(8, 6)) - torch.randn(8, 3)) ** 2).mean() * float("nan")
try:
    norm = engine.accumulate(loss, last=True, check=guard.at(1).check(float(loss.detach())))
    same = all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))
    print("RESULT", "skipped", guard.skipped, "norm", norm, "unchanged", same)
except NonFiniteError as e:
    print("RESULT", "error", str(e).splitlines()[1])
"""


@pytest.mark.extended  # the DeepSpeed engine's variants of the check make test runs on the torch engine
@pytest.mark.parametrize("zero", [0, 2])
def test_skip_step_under_deepspeed_confirms_its_own_skip_or_stops(tmp_path, zero):
    """ZeRO 1-3 in fp32 withhold a non-finite update themselves (skip counted, weights unchanged); ZeRO 0 has
    applied it before the check can see it, so skip_step stops with the reason."""
    import subprocess
    import sys

    from ringctl.pipeline.launchers import free_port
    from tests.helpers import REPO, cli_env

    script = write(tmp_path / "ds.py", DS_SCRIPT.format(repo=str(REPO)))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1",
                           f"--master_port={free_port()}", str(script), str(zero)],
                          env=cli_env({"OMP_NUM_THREADS": "1"}), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    (result,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT")]
    if zero == 0:
        assert result == ("RESULT error on_nonfinite: skip_step could not withhold this update: DeepSpeed had already "
                          "applied it (ZeRO stages 1-3 in fp32 or fp16 skip a non-finite step themselves, ZeRO stage 0 "
                          "and bf16 do not).")
    else:
        assert result == "RESULT skipped 1 norm inf unchanged True"
