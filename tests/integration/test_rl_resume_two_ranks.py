"""SIGKILL during 2-rank RL (torchrun, gloo), then `ringctl resume`: the metrics and final weights equal an
uninterrupted 2-rank run (same machine: exact); resuming the 2-rank state on 1 rank is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import ringctl_json, run_then_sigkill, write
from tests.integration.sft_data import write_arithmetic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

RECIPE = """
name: rl-two-ranks
seed: 0
stages:
  sftdata:
    kind: toy_stages.records
    path: {sft}
  prompts:
    kind: toy_stages.records
    path: {prompts}
  sft:
    kind: sft
    data: sftdata.records
    epochs: 1
    lr: 3.0e-3
    max_seq_len: 256
    batch_rows: 8
    save_every: 100
    eval_num_prompts: 0
    heldout_fraction: 0.0
  rl:
    kind: rl
    init: sft.final
    prompts: prompts.records
    launch: {{launcher: torchrun, nproc_per_node: {nproc}}}
    steps: 6
    save_every: 2
    eval_every: 3
    eval_prompts_count: 8
    heldout_fraction: 0.2
    prompts_per_step: 4
    samples_per_prompt: 4
    token_budget: 96
    budget_scope: global
    leftover: defer
    max_new_tokens: 24
    max_prompt_tokens: 64
    max_tokens_per_micro_batch: 160
    lr: 1.0e-3
    kl_beta: 1.0e-3
    reward_workers: 1
"""


def _rl_metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "rl" / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "throughput/"))} for r in rows]


def _final(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "rl" / "outputs" / "checkpoints" / "step-000006" / "model.safetensors"))


def _recipe(tmp_path: Path, nproc: int) -> Path:
    from ringctl.data.records import write_jsonl
    from ringctl.data.synth import generate_rl

    sft = write_arithmetic(tmp_path / "sft.jsonl", n=160)
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [dict(r) for r in generate_rl(60, 0, domains=["arithmetic"])])
    return write(tmp_path / f"r{nproc}.yaml", RECIPE.format(sft=sft, prompts=prompts, nproc=nproc))


def test_sigkill_during_two_rank_rl_then_resume_is_exact(tmp_path):
    recipe = _recipe(tmp_path, 2)
    proc, doc = ringctl_json("run", recipe, "--workdir", tmp_path / "ref", cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    ref_dir = tmp_path / "ref" / doc["run_id"]
    ref_metrics = _rl_metrics(ref_dir)
    assert [r["train/tokens"] for r in ref_metrics if "train/tokens" in r] == [96.0] * 6  # phi over both ranks

    run_dir = run_then_sigkill(recipe, tmp_path / "k", "rl/state/step-00000[45]", "RL's state at step 4 or 5")
    assert not (run_dir / "rl" / "manifest.json").exists()
    assert list((run_dir / "rl" / "state").glob("step-*/rl_state.rank1.pt"))  # per-rank state

    # the 2-rank state resumed by one rank: a clear error (on a copy, so that nothing is touched)
    import shutil
    from types import SimpleNamespace

    import yaml

    import stages.rl as rl
    from ringctl.pipeline.context import StageContext
    from ringctl.recipe.schema import ResourcesConfig
    from ringctl.train.config import BackendsConfig, ModelConfig

    shutil.copytree(run_dir / "rl", tmp_path / "copy" / "rl")
    cfg = rl.Config(**yaml.safe_load(recipe.read_text())["stages"]["rl"])
    inputs = {k: v["path"] for k, v in json.loads((run_dir / "rl" / "inputs.json").read_text()).items()}
    ctx = StageContext.for_test(tmp_path / "copy", "rl", inputs=inputs,
        recipe=SimpleNamespace(model=ModelConfig(), backends=BackendsConfig(), resources=ResourcesConfig(),
                               seed=0, deterministic=True))
    with pytest.raises(RuntimeError, match="saved by 2 rank"):
        rl.run(cfg, ctx)

    proc, doc = ringctl_json("resume", run_dir.name, "--workdir", tmp_path / "k", cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr
    assert _rl_metrics(run_dir) == ref_metrics
    ref, resumed = _final(ref_dir), _final(run_dir)
    for k in ref:
        torch.testing.assert_close(resumed[k], ref[k], atol=0, rtol=0)
