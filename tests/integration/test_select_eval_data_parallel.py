"""select_sft and evaluate data-parallel: the same recipe run with both stages in one process (launcher local) and
over 2 gloo ranks (real torchrun, 2 CPU processes) writes the same selection table (selection.json: entropies,
probe accuracies, the C3PO probe's gains and tokens, the choice) and the same evaluation report (report.json rows,
every sample of samples.jsonl), exactly. Shares are uneven on purpose (5 prompts and 5 problems over 2 ranks), each
candidate's C3PO probe trains over both ranks (torch DDP, and DeepSpeed ZeRO-3 in its own test), and evaluate lists a
checkpoint twice (sampled once).
With backends.rollout: vllm (marker vllm, `make test-vllm`) every rank samples with its own vLLM engine
(external_launcher); the entropy comes from the HF model over vLLM's samples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import ringctl_json, write

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

RECIPE = """
name: dp-select-eval
seed: 7
backends: {{rollout: {rollout}, train: {train}, deepspeed: {{zero_stage: 3}}}}
stages:
  ckpts:
    kind: toy_stages.checkpoints
    path: {ckpts}
  prompts:
    kind: toy_stages.records
    path: {prompts}
  select:
    kind: select_sft
    checkpoints: ckpts.checkpoints
    prompts: prompts.records
    launch: {launch}
    metric: token-efficiency
    num_prompts: 5
    samples_per_prompt: 3
    max_new_tokens: 12
    probe_steps: 1
    probe: {{prompts_per_step: 3, samples_per_prompt: 2, token_budget: 24, max_new_tokens: 12, lr: 1.0e-3,
             warmup_steps: 0, kl_beta: 0.0, entropy_coef: 0.0, reward_workers: 1}}
  evaluate:
    kind: evaluate
    launch: {launch}
    checkpoints: [ckpts.checkpoints, select.checkpoint]
    reward_workers: 1
    benchmarks:
      - {{name: probe, data: prompts.records, n: 3, max_new_tokens: 12, check_overlap: false}}
"""
LAUNCH = {1: "{launcher: local}", 2: "{launcher: torchrun, nproc_per_node: 2}"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny epoch checkpoints (epoch_info.json beside the weights, as SFT writes them) and 5 RL prompts. Head
    dimension 32: vLLM's CPU attention has no kernel for 16."""
    from ringctl.data import synth
    from ringctl.data.records import write_jsonl
    from ringctl.train.checkpoint import EPOCH_INFO
    from ringctl.train.config import ModelConfig, TinyModelConfig
    from ringctl.train.models import save_tiny

    model = ModelConfig(tiny=TinyModelConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                                             num_key_value_heads=1, moe_intermediate_size=32, intermediate_size=64,
                                             num_experts=2, num_experts_per_tok=1, max_position_embeddings=256))
    root = tmp_path_factory.mktemp("inputs")
    for epoch in (1, 2):
        d = save_tiny(model, root / "ckpts" / f"epoch-{epoch}", seed=epoch)
        (d / EPOCH_INFO).write_text(json.dumps({"epoch": epoch, "sft_tokens": 1000 * epoch}))
    prompts = root / "prompts.jsonl"
    write_jsonl(prompts, synth.generate_rl(5, seed=3, domains=["arithmetic"]))
    return root / "ckpts", prompts


def _run(tmp: Path, inputs: tuple[Path, Path], nproc: int, rollout: str = "hf", train: str = "torch") -> dict:
    ckpts, prompts = inputs
    recipe = write(tmp / f"r{nproc}.yaml", RECIPE.format(ckpts=ckpts, prompts=prompts, launch=LAUNCH[nproc],
                                                         rollout=rollout, train=train))
    proc, doc = ringctl_json("run", recipe, "--workdir", tmp / f"w{nproc}", cwd=tmp, timeout=800)
    assert proc.returncode == 0, proc.stderr[-5000:]
    run_dir = tmp / f"w{nproc}" / doc["run_id"]
    from ringctl.pipeline.watchdog import ranks_dir

    for stage in ("select", "evaluate"):  # the stage really ran as nproc processes
        assert len(list(ranks_dir(run_dir / stage).glob("rank-*.json"))) == nproc, stage

    def read(path: Path) -> str:  # the run directory named alike in both runs
        return path.read_text().replace(str(run_dir.resolve()), "RUN").replace(str(run_dir), "RUN")

    return {"selection": json.loads(read(run_dir / "select" / "outputs" / "selection.json")),
            "report": json.loads(read(run_dir / "evaluate" / "outputs" / "report.json")),
            "samples": [json.loads(line) for line in read(run_dir / "evaluate" / "outputs" / "samples.jsonl")
                        .splitlines()]}


@pytest.fixture(scope="module")
def one_hf(inputs, tmp_path_factory) -> dict:
    return _run(tmp_path_factory.mktemp("one"), inputs, 1)


@pytest.mark.parametrize("rollout", ["hf", pytest.param("vllm", marks=pytest.mark.vllm)])
def test_two_ranks_write_the_single_process_selection_and_report(inputs, tmp_path, rollout, request):
    one = request.getfixturevalue("one_hf") if rollout == "hf" else _run(tmp_path, inputs, 1, rollout)
    two = _run(tmp_path, inputs, 2, rollout)
    sel = one["selection"]
    assert [c["epoch"] for c in sel["candidates"]] == [1, 2]
    assert all(c["rl_tokens"] > 0 and c["reward_gain"] is not None for c in sel["candidates"])  # probes ran
    assert two["selection"] == sel
    assert len(one["samples"]) == 3 * 5 * 3  # 3 labels (one directory listed twice) x 5 problems x n=3
    assert two["samples"] == one["samples"]
    assert two["report"]["results"] == one["report"]["results"]
    assert two["report"] == one["report"]


@pytest.mark.extended  # a variant of the DDP test above (make test-extended): ~2 min more
def test_probe_over_two_deepspeed_zero3_ranks_gives_the_single_process_table(inputs, tmp_path, one_hf):
    """The probe trains each candidate over both ranks with DeepSpeed ZeRO-3 (the model built partitioned, gradients
    reduced across ranks): the probes' gains and tokens, and so the table and the choice, are the one-process torch
    run's."""
    two = _run(tmp_path, inputs, 2, train="deepspeed")
    assert two["selection"] == one_hf["selection"]
