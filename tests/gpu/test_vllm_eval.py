"""`ringctl eval --backend vllm` on a GPU: the tiny model of recipes/tiny.yaml (saved in HF format with its
tokenizer) through the one vLLM set-up (ringctl.rollout.generation.vllm_engine: CUDA graphs, the engine shut down
after the checkpoint), the report shape of HF generate. Evaluation asks for no log-probs, so top_p < 1 is allowed
with vLLM. Exact reproducibility of GPU rollouts is not promised (docs/architecture.md, "Determinism"): one run.

Marked gpu (skipped without CUDA) and vllm (skipped without vllm): tests/gpu/run_device.sh runs it.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers import REPO, ringctl_json

pytestmark = [pytest.mark.gpu, pytest.mark.vllm, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    pytest.importorskip("vllm")
    from ringctl.recipe.loader import load_recipe
    from ringctl.train.models import save_tiny

    model_cfg = load_recipe(REPO / "recipes" / "tiny.yaml").recipe.model
    return save_tiny(model_cfg, tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def test_vllm_eval_matches_the_report_contract(tiny_ckpt, benchmarks, tmp_path):
    args = ["eval", tiny_ckpt, "--benchmarks", "gsm8k", "--backend", "vllm", "--device", "cuda", "--n", "4",
            "--limit", "8", "--max-new-tokens", "32", "--top-p", "0.95", "--out", tmp_path / "a"]
    proc, doc = ringctl_json(*args, cwd=tmp_path, env={"RINGCTL_BENCHMARKS_DIR": str(benchmarks)}, timeout=500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = doc["results"]
    assert row["n"] == 4 and row["num_problems"] == 8 and set(row["pass@k"]) == {"1", "2", "4"}
    assert row["sampling"]["top_p"] == 0.95
    samples = [json.loads(x) for x in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 32 and all(0 < s["response_tokens"] <= 32 for s in samples)
