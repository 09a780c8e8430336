"""The evaluate stage: recipe errors located at file:line:field, preset files checked like any input, and a run
through StageContext.for_test (outputs, metrics per checkpoint, the table, overlap with the training data)."""

from __future__ import annotations

import importlib
import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from ringctl.errors import RecipeError
from ringctl.pipeline.context import Artifact, StageContext
from ringctl.recipe.loader import load_recipe
from ringctl.recipe.schema import ResourcesConfig

evaluate = importlib.import_module("stages.evaluate")

RECIPE = """
name: t
stages:
  filter:
    kind: data_filter
    sources: [{{type: synthetic, task: rl, n: 10}}]
  sft:
    kind: sft
    data: filter.sft
  evaluate:
    kind: evaluate
    checkpoints: [sft.final, {ckpt}]
    benchmarks_dir: {bdir}
    benchmarks:
      - {{name: heldout, data: filter.rl_reasoning, n: 4, k: {k}}}
      - {{name: {name}}}
"""


def _load(tmp_path, ckpt="sft.final", name="gsm8k", k="[1, 2]", bdir="/nowhere"):
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE).format(ckpt=ckpt, name=name, k=k, bdir=bdir).lstrip())
    return load_recipe(path)


def _errors(tmp_path, **kw) -> list[str]:
    with pytest.raises(RecipeError) as e:
        _load(tmp_path, **kw)
    return [str(p) for p in e.value.problems]


def test_recipe_errors_name_file_line_and_field(tmp_path):
    (err,) = _errors(tmp_path, name="gsm8")
    assert err.startswith(f"{tmp_path}/r.yaml:15:16: "), err
    assert "stages.evaluate.benchmarks[1].name: unknown benchmark 'gsm8' (did you mean 'gsm8k'?)" in err
    (err,) = _errors(tmp_path, k="[1, 8]")
    assert ":14:61: " in err and "stages.evaluate.benchmarks[0].k: k=8 is larger than n=4" in err
    (err,) = _errors(tmp_path, ckpt="sft.best")
    assert ":11:30: stages.evaluate.checkpoints[1]: reference 'sft.best'" in err
    # an average over a benchmark the stage does not have
    path = tmp_path / "r.yaml"
    path.write_text(textwrap.dedent(RECIPE).format(ckpt="sft.final", name="gsm8k", k="[1, 2]", bdir="/nowhere").lstrip()
                    + "    averages: {both: [heldout, gsm8]}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    (err,) = [str(p) for p in e.value.problems]
    assert ":16:15: stages.evaluate.averages: both: an average is over two or more of this stage's " \
           "benchmarks (heldout, gsm8k), got ['heldout', 'gsm8']" in err, err


def test_preset_files_are_checked_before_anything_runs(tmp_path, benchmarks):
    from ringctl.pipeline.preconditions import problems

    loaded = _load(tmp_path, name="aime24", bdir=str(tmp_path / "empty"))
    (p,) = problems(loaded)
    assert p.path == "stages.evaluate.benchmarks[1].name" and p.line == 15
    assert f"{tmp_path}/empty/aime24.jsonl does not exist" in p.message
    assert problems(_load(tmp_path, name="aime24", bdir=str(benchmarks))) == []
    cfg = _load(tmp_path, name="humaneval", bdir=str(benchmarks)).recipe.stages["evaluate"]
    assert cfg.scores_code() and cfg.external_files() == [str(benchmarks / "humaneval.jsonl.gz")]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from ringctl.train.config import TinyModelConfig
    from ringctl.train.models import save_tiny

    cfg = SimpleNamespace(tiny=TinyModelConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                               num_key_value_heads=1, moe_intermediate_size=32, intermediate_size=64,
                                               num_experts=2, num_experts_per_tok=1, max_position_embeddings=512),
                          attn_implementation="sdpa")
    return save_tiny(cfg, tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def test_stage_run(tmp_path, tiny_ckpt, benchmarks, capsys):
    from ringctl.data import synth
    from ringctl.data.records import write_jsonl
    from ringctl.train.config import BackendsConfig, ModelConfig

    heldout = tmp_path / "heldout.jsonl"
    write_jsonl(heldout, synth.generate_rl(5, seed=11, domains=["arithmetic"]))
    train = tmp_path / "train.jsonl"  # holds one GSM8K problem verbatim: the stage must warn about it
    gsm = json.loads((benchmarks / "gsm8k.jsonl").read_text().splitlines()[1])
    write_jsonl(train, [{"id": "leak-1", "prompt": "Q: " + gsm["question"]}, {"id": "x", "prompt": "what is 1+1"}])
    cfg = evaluate.Config(checkpoints=["sft.final", "select.checkpoint"], training_data=["filter.sft"],
                          benchmarks_dir=str(benchmarks), reward_workers=1,
                          benchmarks=[{"name": "heldout", "data": "heldout.rl_reasoning", "n": 2, "max_new_tokens": 8},
                                      {"name": "gsm8k", "limit": 3, "n": 2, "max_new_tokens": 8}],
                          averages={"mean": ["heldout", "gsm8k"]})
    recipe = SimpleNamespace(model=ModelConfig(), backends=BackendsConfig(), resources=ResourcesConfig(),
                             deterministic=True)
    inputs = {"sft.final": Artifact(tiny_ckpt), "select.checkpoint": Artifact(tiny_ckpt),
              "heldout.rl_reasoning": Artifact(heldout), "filter.sft": Artifact(train)}
    ctx = StageContext.for_test(tmp_path, "evaluate", inputs=inputs, recipe=recipe, seed=3)
    out = evaluate.run(cfg, ctx)
    assert set(out) == {"report", "samples", "table"}
    doc = json.loads(out["report"].path.read_text())
    assert [(r["checkpoint"], r["benchmark"]) for r in doc["results"]] == [
        ("sft.final", "heldout"), ("sft.final", "gsm8k"), ("select.checkpoint", "heldout"),
        ("select.checkpoint", "gsm8k"), ("sft.final", "mean"), ("select.checkpoint", "mean")]
    by = {(r["checkpoint"], r["benchmark"]): r for r in doc["results"]}
    assert by["sft.final", "mean"]["pass@1"] == pytest.approx(
        (by["sft.final", "heldout"]["pass@1"] + by["sft.final", "gsm8k"]["pass@1"]) / 2)
    assert doc["overlap"]["gsm8k"]["problems"] == 1 and doc["overlap"]["heldout"]["problems"] == 0
    printed = capsys.readouterr().out
    assert "warning: benchmark gsm8k: 1 of 3 problems overlap this run's training data" in printed
    assert "gsm8k (n=2, 3)" in printed and "heldout (n=2, 5)" in printed
    # the same directory under two labels is sampled once and reported under both
    samples = [json.loads(line) for line in out["samples"].path.read_text().splitlines()]
    assert len(samples) == 2 * (5 + 3) * 2 and "same checkpoint as an earlier label" in printed
    strip = [{k: v for k, v in s.items() if k != "checkpoint"} for s in samples]
    assert strip[:16] == strip[16:]
    # one metrics step per checkpoint, MLflow-safe names; the table for the terminal
    metrics = [json.loads(line) for line in (ctx.stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1] and "eval/gsm8k/pass_at_1" in metrics[0]
    assert "eval/heldout/pass_at_2" in metrics[0]
    assert metrics[0]["eval/mean/pass_at_1"] == by["sft.final", "mean"]["pass@1"]
    assert "mean (mean of 2)" in printed
    assert "sft.final" in (ctx.stage_dir / "summary.txt").read_text()
    assert {p.name for p in ctx.outputs_dir.iterdir()} >= {"report.json", "samples.jsonl", "results.md",
                                                            "results.png"}


def test_several_ranks_are_allowed_when_vllm_engines_divide_them(tmp_path):
    """evaluate runs data-parallel (tests/integration/test_select_eval_data_parallel.py): any number of ranks with
    HF generate; with vLLM the stage's ranks must split into engines of tensor_parallel_size ranks."""
    def load(launch: str, tp: int | None):
        text = textwrap.dedent(RECIPE).format(ckpt="sft.final", name="gsm8k", k="[1, 2]", bdir="/nowhere").lstrip()
        text += f"    launch: {launch}\n"
        if tp is not None:
            text += f"backends: {{rollout: vllm, vllm: {{tensor_parallel_size: {tp}}}}}\n"
        (tmp_path / "r.yaml").write_text(text)
        return load_recipe(tmp_path / "r.yaml")

    load("{launcher: torchrun, nproc_per_node: 3}", None)
    load("{launcher: torchrun, nproc_per_node: 4}", 2)
    with pytest.raises(RecipeError) as e:
        load("{launcher: torchrun, nproc_per_node: 3}", 2)
    (err,) = [str(p) for p in e.value.problems]
    assert "stages.evaluate.launch: evaluate runs on 3 ranks" in err and "tensor_parallel_size 2" in err, err
