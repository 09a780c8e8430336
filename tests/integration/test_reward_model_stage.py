"""The reward_model stage: a tiny RM trained on the synthetic preference pairs learns the documented rule (read
back from MLflow), its output loads as a Hugging Face sequence classifier and ranks held-out pairs, wrapping that
directory measures the same held-out accuracy, and `ringctl validate` catches a stage with no model or a causal
LM given as a reward model."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.helpers import ringctl_json, write

TINY = ("{hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, "
        "moe_intermediate_size: 64, intermediate_size: 128, num_experts: 4, num_experts_per_tok: 2, "
        "max_position_embeddings: 512}")

RECIPE = """
name: rm-test
seed: 1
model:
  name_or_path: tiny
  tiny: {tiny}
stages:
  prefs:
    kind: data_filter
    print_table: false
    sources:
      - {{type: synthetic, task: preferences, n: 600, seed: 1}}
    splits:
      preferences: {{sources: [synthetic-preferences]}}
  rm:
{rm}
"""

TRAIN = """\
    kind: reward_model
    pairs: prefs.preferences
    epochs: 2
    lr: 3.0e-3
"""


def _recipe(tmp_path: Path, rm: str, name: str = "r.yaml") -> Path:
    return write(tmp_path / name, RECIPE.format(tiny=TINY, rm=rm))


def _metric(tmp_path: Path, run_id: str, stage: str, key: str) -> list[tuple[int, float]]:
    from mlflow.tracking import MlflowClient

    c = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = c.get_experiment_by_name("ringctl")
    parent = c.search_runs([exp.experiment_id], f"tags.`ringctl.run_id` = '{run_id}'")[0]
    child = next(r for r in c.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
                 if r.data.tags["ringctl.stage"] == stage)
    return sorted((m.step, m.value) for m in c.get_metric_history(child.info.run_id, key))


@pytest.mark.slow
def test_tiny_reward_model_learns_the_preference_rule_and_wrapping_it_agrees(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    import stages.reward_model as rm_stage
    from ringctl.pipeline.context import StageContext
    from ringctl.rewards.rm_scorer import RewardModelScorer
    from ringctl.train.config import ModelConfig
    from ringctl.train.runtime import split_heldout

    proc, doc = ringctl_json("run", _recipe(tmp_path, TRAIN), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    outputs = {s["name"]: s["outputs"] for s in doc["stages"]}
    model_dir, pairs_file = Path(outputs["rm"]["model"]), Path(outputs["prefs"]["preferences"])

    # learning, read back from MLflow: held-out accuracy at step 0 (baseline) and after every epoch
    acc = _metric(tmp_path, doc["run_id"], "rm", "rm/heldout_accuracy")
    assert acc[0][0] == 0 and len(acc) == 1 + 2
    # an untrained RM's accuracy is whatever its random features give (0.2 with this seed, 0.92 with seed 0), so
    # learning is asserted on the margin below. Trained: 0.85 measured (2 epochs here; 0.83-0.87 over 2-4 epochs
    # and seeds 0-1), the misses mostly off-topic answers that do end with the polite closing (the topic has to be
    # matched against the prompt's)
    assert acc[-1][1] >= 0.7, acc
    assert _metric(tmp_path, doc["run_id"], "rm", "rm/heldout_pairs")[-1][1] == 60
    margins = _metric(tmp_path, doc["run_id"], "rm", "rm/margin")
    assert margins[-1][1] > margins[0][1] + 1.0  # the scores separate chosen from rejected
    assert len(_metric(tmp_path, doc["run_id"], "rm", "train/loss")) > 10
    report = json.loads(Path(outputs["rm"]["report"]).read_text())
    assert report["mode"] == "trained" and report["heldout_pairs"] == 60 and report["train_pairs"] == 540
    assert report["heldout_accuracy"] == pytest.approx(acc[-1][1])

    # the output is an ordinary Hugging Face reward model
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    assert model.config.architectures[0].endswith("ForSequenceClassification")
    assert model.config.num_labels == 1 and model.config.pad_token_id is not None
    assert (model_dir / "chat_template.jinja").exists() or "chat_template" in json.loads(
        (model_dir / "tokenizer_config.json").read_text())
    pairs = [json.loads(line) for line in pairs_file.read_text().splitlines()]
    _, held = split_heldout(len(pairs), 0.1, rm_stage.heldout_seed(1))
    held_pairs = [pairs[i] for i in held]
    scorer = RewardModelScorer(model_dir, max_length=512)
    chosen = scorer.score([p["prompt"] for p in held_pairs], [p["chosen"] for p in held_pairs])
    rejected = scorer.score([p["prompt"] for p in held_pairs], [p["rejected"] for p in held_pairs])
    right = sum(c > r for c, r in zip(chosen, rejected)) / len(held_pairs)
    assert right == pytest.approx(report["heldout_accuracy"])
    del model, torch

    # wrapped: the same directory as `path:`, measured on the same pairs, nothing trained
    recipe = SimpleNamespace(model=ModelConfig(), resources=SimpleNamespace(device="cpu"), seed=1)
    ctx = StageContext.for_test(tmp_path / "wrap", "judge", inputs={"prefs.preferences": pairs_file},
                                recipe=recipe, seed=1)
    out = rm_stage.run(rm_stage.Config(path=str(model_dir), pairs="prefs.preferences"), ctx)
    assert out["model"].path == model_dir  # not copied
    wrapped = json.loads(out["report"].path.read_text())
    assert wrapped["mode"] == "wrapped" and wrapped["train_pairs"] == 0 and wrapped["heldout_pairs"] == 60
    assert wrapped["heldout_accuracy"] == pytest.approx(report["heldout_accuracy"])
    assert wrapped["margin"] == pytest.approx(report["margin"], abs=1e-4)
    assert ctx.tracker.history()[0]["rm/heldout_accuracy"] == wrapped["heldout_accuracy"]


def test_validate_a_reward_model_with_no_model_or_a_causal_lm(tmp_path):
    proc, doc = ringctl_json("validate", _recipe(tmp_path, "    kind: reward_model\n    epochs: 1\n"), cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = doc["errors"][0]
    assert err["file"] == "r.yaml" and err["line"] == 15 and err["path"].startswith("stages.rm")
    assert "needs `path:`" in err["message"]

    causal = tmp_path / "causal-lm"
    causal.mkdir()
    (causal / "config.json").write_text(json.dumps({"architectures": ["Qwen3MoeForCausalLM"],
                                                    "model_type": "qwen3_moe"}))
    (causal / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages }}"}))
    r = _recipe(tmp_path, f"    kind: reward_model\n    path: {causal}\n", name="causal.yaml")
    proc, doc = ringctl_json("validate", r, cwd=tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = doc["errors"][0]
    assert err["file"] == "causal.yaml" and err["line"] == 15 and err["path"] == "stages.rm"
    assert f"path {causal}" in err["message"] and "ForSequenceClassification" in err["message"]
    # a missing directory: the input check names it
    r = _recipe(tmp_path, f"    kind: reward_model\n    path: {tmp_path / 'nowhere'}\n", name="missing.yaml")
    proc, doc = ringctl_json("validate", r, cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in doc["errors"][0]["message"]
    assert doc["errors"][0]["path"] == "stages.rm.path"
