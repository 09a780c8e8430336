"""The tiny pipeline on CUDA in bf16 (filter, sft, select, reasoning_rl with its own scaled-down steps), and one
RL step on the GPU with every tensor on the rank's device. Skipped without CUDA (tests/conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, ringctl_json

pytestmark = pytest.mark.gpu

OVERRIDES = ["++resources.device=cuda", "model.dtype=bfloat16", "stages.sft.epochs=2", "stages.reasoning_rl.steps=6",
             "stages.reasoning_rl.save_every=3", "stages.reasoning_rl.eval_every=3",
             "stages.reasoning_rl.eval_prompts_count=32", "+stages.reasoning_rl.max_tokens_per_micro_batch=512"]


def test_tiny_pipeline_on_cuda_in_bf16(tmp_path):
    proc, doc = ringctl_json("run", REPO / "recipes" / "tiny.yaml", *OVERRIDES, "--workdir", tmp_path / "runs",
                             "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db", cwd=tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert doc["status"] == "completed"
    run_dir = Path(doc["run_dir"]) if "run_dir" in doc else tmp_path / "runs" / doc["run_id"]
    rows = [json.loads(line) for line in (run_dir / "reasoning_rl" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/tokens" in r]
    assert len(steps) == 6
    assert all(r["train/tokens"] == 4096 for r in steps)  # phi on the GPU as on CPU
    assert all(torch.isfinite(torch.tensor([r["loss"], r["grad_norm"], r["kl"]])).all() for r in steps)
    # the rollout engine (HF on the GPU) and the trainer agree on the sampled tokens' log-probs up to bf16
    assert all(r["rollout/logprob_abs_diff"] < 0.1 for r in steps if "rollout/logprob_abs_diff" in r)


def test_rl_trainer_step_places_every_tensor_on_the_rank_device():
    from ringctl.data.synth import generate_rl
    from ringctl.rl.hyper import RLHyper
    from ringctl.rl.trainer import RLTrainer, build_train_engine
    from ringctl.rollout.generation import build_rollout_engine, frozen_copy
    from ringctl.train.config import ModelConfig
    from ringctl.train.device import rank_device
    from ringctl.train.models import load_model_and_tokenizer

    device = rank_device("cuda", 0)
    policy, tok = load_model_and_tokenizer(ModelConfig(dtype="bfloat16"))
    policy.to(device)
    hp = RLHyper(prompts_per_step=4, samples_per_prompt=4, token_budget=128, max_new_tokens=24, max_prompt_tokens=64,
                 lr=1e-4, kl_beta=1e-3, old_logprobs="recompute", tis_cap=2.0, max_tokens_per_micro_batch=128,
                 reward_workers=1)
    engine = build_train_engine(policy, None, hp, 2)
    records = [dict(r) for r in generate_rl(8, 0, domains=["arithmetic"])]
    trainer = RLTrainer(policy, tok, engine, build_rollout_engine(policy, tok, None), hp, ref_model=frozen_copy(policy))
    metrics, _ = trainer.step(records[:4], [], step_seed=1)
    assert metrics["train/tokens"] <= 128 and "rollout/kl" in metrics
    assert all(p.device.type == "cuda" for p in policy.parameters())
