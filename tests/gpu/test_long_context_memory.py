"""Issue 23 item 5 on a GPU: bench/long_context_memory.py at 32K tokens in bf16 on a ~1.1B-parameter Qwen3-MoE
(hidden 2048, 12 layers, 8 experts of 1408, top-2, vocabulary 32,768): torch.cuda.max_memory_allocated of one
SFT step against `ringctl.train.memory`'s prediction, full path vs chunked head + activation checkpointing.

Written against torch's CUDA memory statistics; not yet run on a GPU (no device in the session that wrote it)."""

import argparse
import json

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_32k_tokens_bf16_one_billion_parameters_measured_vs_predicted(capsys):
    from bench.long_context_memory import measure

    args = argparse.Namespace(device="cuda", dtype="bfloat16", vocab=32768, hidden=2048, layers=12, heads=16,
                              kv_heads=4, head_dim=128, experts=8, top_k=2, expert_inter=1408, tokens=[32768],
                              chunk_tokens=None)
    rows = {v: measure(args, "sft", 32768, v) for v in ("chunked+ckpt", "full")}
    with capsys.disabled():
        print(json.dumps(rows))
    for row in rows.values():
        assert abs(row["error"]) <= 0.25, row
    assert rows["full"]["measured_mib"] > 4 * rows["chunked+ckpt"]["measured_mib"], rows
