"""The SFT stage: the loss falls from the untrained model's, epoch checkpoints reload exactly, resume at an epoch
boundary, exact resume after SIGKILL, and DeepSpeed ZeRO-2/3 on two CPU processes matching one process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ringctl.pipeline.context import StageContext
from ringctl.recipe.schema import ResourcesConfig
from ringctl.train.config import BackendsConfig, ModelConfig
from tests.helpers import cli_env, ringctl_json, untrained_loss, wait_for, write
from tests.integration.sft_data import write_arithmetic


def _recipe(**backends):
    return SimpleNamespace(model=ModelConfig(), backends=BackendsConfig(**backends), resources=ResourcesConfig(),
                           seed=0, deterministic=True)


def _cfg(**kw):
    import stages.sft as sft

    base = dict(data="filter.sft", epochs=2, lr=3e-3, max_seq_len=256, batch_rows=4, save_every=5,
                eval_num_prompts=0, warmup_ratio=0.1, heldout_fraction=0.05)
    base.update(kw)
    return sft.Config(**base)


def _losses(ctx) -> list[float]:
    return [r["train/loss"] for r in ctx.tracker.history() if "train/loss" in r]


def test_sft_loss_falls_and_checkpoints_reload(tmp_path):
    from transformers import AutoModelForCausalLM

    import stages.sft as sft

    data = write_arithmetic(tmp_path / "data.jsonl", n=120)
    ctx = StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe())
    out = sft.run(_cfg(), ctx)
    losses = _losses(ctx)
    # 2 epochs x 10 steps; the first loss is the untrained model's (about ln(vocab)); the loss falls clearly
    assert len(losses) == 20
    expected, tolerance = untrained_loss(ModelConfig().tiny)
    assert losses[0] == pytest.approx(expected, abs=tolerance)
    assert losses[-1] < 0.45 * losses[0]
    ckpts = sorted(p.name for p in out["checkpoints"].path.iterdir() if p.name.startswith("epoch-"))
    assert ckpts == ["epoch-1", "epoch-2"]
    info = json.loads((out["final"].path / "epoch_info.json").read_text())
    assert info["epoch"] == 2 and info["sft_tokens"] == int(ctx.tracker.history()[-2]["train/tokens"])
    # the epoch checkpoint reloads with from_pretrained and gives the logits of the trained model
    reloaded = AutoModelForCausalLM.from_pretrained(out["final"].path).eval()
    state = torch.load(ctx.resume_state() / "engine" / "engine.pt", weights_only=False)["model"]
    in_memory = AutoModelForCausalLM.from_pretrained(out["final"].path).eval()
    in_memory.load_state_dict(state)
    ids = torch.tensor([[3, 20, 30, 40, 50, 7]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, in_memory(input_ids=ids).logits)


def test_resume_at_epoch_boundary_trains_next_epoch_and_resume_at_the_end_returns_outputs(tmp_path):
    """A resume from the final state (killed after the last state, before returning) trains nothing and returns
    the outputs already on disk; with the final checkpoint missing it would do zero steps, which is an error."""
    import stages.sft as sft

    data = write_arithmetic(tmp_path / "data.jsonl", n=60)
    ctx = StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe())
    sft.run(_cfg(epochs=1), ctx)
    steps_one_epoch = len(_losses(ctx))
    ctx2 = StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe())
    out = sft.run(_cfg(epochs=2), ctx2)  # same stage dir: resumes from the epoch-1 boundary state
    assert len(_losses(ctx2)) == 2 * steps_one_epoch
    assert (out["checkpoints"].path / "epoch-2").is_dir()
    ctx3 = StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe())
    again = sft.run(_cfg(epochs=2), ctx3)
    assert again["final"].path == out["final"].path and again["final"].meta == out["final"].meta
    assert len(_losses(ctx3)) == 2 * steps_one_epoch
    shutil.rmtree(out["checkpoints"].path / "epoch-2")
    ctx4 = StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe())
    with pytest.raises(RuntimeError, match="zero steps"):
        sft.run(_cfg(epochs=2), ctx4)


def test_stop_after_the_last_step_then_resume_writes_the_final_checkpoint(tmp_path):
    """should_stop() saves at the step boundary and returns early; a state at the last step whose epoch
    checkpoint is not written yet is not "zero steps": the resume writes epoch-1 and succeeds."""
    import stages.sft as sft

    data = write_arithmetic(tmp_path / "data.jsonl", n=12)
    cfg = _cfg(epochs=1, batch_rows=64, heldout_fraction=0.0)  # one optimizer step in all
    ctx = StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe())
    ctx.request_stop()
    assert sft.run(cfg, ctx) == {}
    assert ctx.resume_state() is not None and len(_losses(ctx)) == 1
    assert not (ctx.outputs_dir / "checkpoints" / "epoch-1").exists()
    ctx2 = StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe())
    out = sft.run(cfg, ctx2)
    assert (out["final"].path / "model.safetensors").is_file() and len(_losses(ctx2)) == 1
    again = sft.run(cfg, StageContext.for_test(tmp_path, "sft", inputs={"filter.sft": data}, recipe=_recipe()))
    assert again["final"].path == out["final"].path and len(_losses(ctx2)) == 1


SFT_RECIPE = """
name: sft-resume
seed: 0
stages:
  sft:
    kind: toy_stages.records
    path: {data}
  train:
    kind: sft
    data: sft.records
    epochs: 2
    lr: 3.0e-3
    max_seq_len: 256
    batch_rows: 4
    save_every: 3
    eval_num_prompts: 0
    heldout_fraction: 0.05
"""


def _final_weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "train" / "outputs" / "checkpoints" / "epoch-2" / "model.safetensors"))


def _history(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "train" / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "train/tokens_per_s"} for r in rows]  # wall-clock is not replayed


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_exact(tmp_path):
    data = write_arithmetic(tmp_path / "data.jsonl", n=120)
    recipe = write(tmp_path / "r.yaml", SFT_RECIPE.format(data=data))
    proc, doc = ringctl_json("run", recipe, "--workdir", tmp_path / "ref", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ref_dir = tmp_path / "ref" / doc["run_id"]

    p = subprocess.Popen([sys.executable, "-m", "ringctl", "run", str(recipe), "--workdir", str(tmp_path / "k")],
                         cwd=tmp_path, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    wait_for(lambda: list((tmp_path / "k").glob("*/train/state/step-0000006")), "SFT's state at step 6", 300, p)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    (run_dir,) = [d for d in (tmp_path / "k").iterdir() if d.is_dir() and not d.name.startswith(".")]
    assert not (run_dir / "train" / "manifest.json").exists()  # killed mid-stage (epoch 1 has 10 steps)
    proc, doc = ringctl_json("resume", run_dir.name, "--workdir", tmp_path / "k", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    ref, resumed = _final_weights(ref_dir), _final_weights(run_dir)
    assert ref.keys() == resumed.keys()
    for k in ref:
        torch.testing.assert_close(resumed[k], ref[k], atol=0, rtol=0)
    assert _history(run_dir) == _history(ref_dir)


DS_SCRIPT = """
import json, os, sys
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, {repo!r})
from ringctl.pipeline.context import StageContext
from ringctl.recipe.schema import ResourcesConfig
from ringctl.train.config import BackendsConfig, DeepSpeedConfig, ModelConfig
import stages.sft as sft
zero, out = sys.argv[1], Path(sys.argv[2])
# "long": the long-context settings - activation checkpointing and a 16-token output-head chunk (uneven chunk
# counts per rank: the ranks pad to the same number of head calls under ZeRO-3)
long = dict(activation_checkpointing=True, logprob_chunk_tokens=16) if sys.argv[3:] == ["long"] else {{}}
backends = (BackendsConfig(train="torch") if zero == "ddp"
            else BackendsConfig(train="deepspeed", deepspeed=DeepSpeedConfig(zero_stage=int(zero))))
recipe = SimpleNamespace(model=ModelConfig(), backends=backends, resources=ResourcesConfig(), seed=0,
                         deterministic=True)
ctx = StageContext(run_id="t", stage_name="sft", stage_dir=out, inputs={{"filter.sft": __import__("ringctl.pipeline.context").pipeline.context.Artifact(Path({data!r}))}}, recipe=recipe, seed=0)
cfg = sft.Config(data="filter.sft", epochs=1, lr=3e-3, max_seq_len=256, batch_rows=4, save_every=100,
                 eval_num_prompts=0, heldout_fraction=0.0, warmup_ratio=0.0, **long)
sft.run(cfg, ctx)
# end as stage_main does: a clean group teardown, then os._exit (C++ threads of the gloo / shm communicators can
# abort the interpreter's normal exit with "terminate called without an active exception")
import torch.distributed as dist
if dist.is_initialized():
    dist.barrier()
    dist.destroy_process_group()
sys.stdout.flush(); sys.stderr.flush()
os._exit(0)
"""


def _sft_losses(tmp_path, script, env, nproc: int, zero: str, *extra: str) -> list[float]:
    from ringctl.pipeline.launchers import free_port

    out = tmp_path / f"n{nproc}{'-'.join(('', *extra))}"
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           str(script), zero, str(out), *extra]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["2", "3", "ddp"])
def test_deepspeed_two_processes_match_one_process(tmp_path, zero):
    """ZeRO-2, ZeRO-3 and plain torch DDP (gloo) on two CPU processes follow the one-process loss curve. Under
    ZeRO-3 also with the long-context settings (activation checkpointing, the chunked loss head in 16-token chunks:
    uneven chunk counts per rank, padded to the same number of head calls), against the plain one-process run."""
    from tests.helpers import REPO

    data = write_arithmetic(tmp_path / "data.jsonl", n=48)
    script = tmp_path / "ds_sft.py"
    script.write_text(DS_SCRIPT.format(repo=str(REPO), data=str(data)))
    env = cli_env({"OMP_NUM_THREADS": "1"})

    one, two = _sft_losses(tmp_path, script, env, 1, zero), _sft_losses(tmp_path, script, env, 2, zero)
    runs = [("n2", two)] + ([("n2-long", _sft_losses(tmp_path, script, env, 2, zero, "long"))] if zero == "3" else [])
    assert len(one) == len(two) >= 4
    assert one[-1] < one[0]
    from safetensors.torch import load_file

    w1 = load_file(str(tmp_path / "n1" / "outputs" / "checkpoints" / "epoch-1" / "model.safetensors"))
    for name, curve in runs:
        assert len(curve) == len(one), name
        for a, b in zip(one, curve):
            assert b == pytest.approx(a, rel=1e-4, abs=1e-5), name
        # the epoch checkpoint is consolidated (ZeRO-3 shards gathered) into one HF model with the same weights
        w2 = load_file(str(tmp_path / name / "outputs" / "checkpoints" / "epoch-1" / "model.safetensors"))
        assert w1.keys() == w2.keys() and all(w2[k].shape == w1[k].shape for k in w1)
        for k in w1:
            torch.testing.assert_close(w2[k], w1[k], atol=2e-4, rtol=1e-3, msg=lambda m, k=k, n=name: f"{n} {k}: {m}")
