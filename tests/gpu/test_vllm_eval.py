"""`ringctl eval --backend vllm` on a GPU: the tiny model (char tokenizer, saved in HF format) through the vLLM
rollout engine, the same report shape as HF generate, the same seeds recorded on a rerun (exact reproducibility of
GPU rollouts is not promised: docs/architecture.md, "Determinism").

Skipped without CUDA (tests/conftest.py) or without vllm installed.
"""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from tests.helpers import ringctl_json

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    pytest.importorskip("vllm")
    from ringctl.train.config import TinyModelConfig
    from ringctl.train.models import save_tiny

    cfg = SimpleNamespace(tiny=TinyModelConfig(max_position_embeddings=1024), attn_implementation="sdpa")
    return save_tiny(cfg, tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


def test_vllm_eval_matches_the_report_contract(tiny_ckpt, benchmarks, tmp_path):
    args = ["eval", tiny_ckpt, "--benchmarks", "gsm8k", "--backend", "vllm", "--n", "4", "--limit", "8",
            "--max-new-tokens", "32", "--top-p", "0.95"]
    env = {"RINGCTL_BENCHMARKS_DIR": str(benchmarks)}
    runs = []
    for out in ("a", "b"):
        proc, doc = ringctl_json(*args, "--out", tmp_path / out, cwd=tmp_path, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        runs.append(doc)
    (row,) = runs[0]["results"]
    assert row["n"] == 4 and row["num_problems"] == 8 and set(row["pass@k"]) == {"1", "2", "4"}
    samples = [json.loads(x) for x in (tmp_path / "a" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 32 and all(0 < s["response_tokens"] <= 32 for s in samples)
    assert runs[1]["results"][0]["sampling"] == row["sampling"] and row["sampling"]["top_p"] == 0.95
