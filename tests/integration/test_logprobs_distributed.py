"""Chunked log-probs on two CPU processes (gloo): under DeepSpeed ZeRO-3 the output head is called inside the
engine's forward (and again, chunk by chunk, in the backward's recomputation), so its partitioned weight is
gathered by ZeRO's module hooks; under DDP (find_unused_parameters) the head's weight stays in the output's graph.
Either way the gradients and one optimizer step equal those of the full-vocab [N, R, V] path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import cli_env

WORKER = Path(__file__).with_name("logprobs_dist_worker.py")
LR = 1e-3  # logprobs_dist_worker's OptimSpec


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "tie"), [("zero3", "tied"), ("zero3", "untied"), ("ddp", "untied")])
def test_chunked_logprobs_match_full_vocab_on_two_ranks(tmp_path, mode, tie):
    from ringctl.pipeline.launchers import free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
           str(WORKER), mode, tie, str(tmp_path)]
    proc = subprocess.run(cmd, env=cli_env({"OMP_NUM_THREADS": "1"}), cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    for runs in ranks:
        for (share, chunk), got in runs.items():
            ref = runs[(share, 0)]
            msg = f"{mode} {tie} share={share} chunk_tokens={chunk}"
            torch.testing.assert_close(got["logprobs"], ref["logprobs"], atol=2e-6, rtol=1e-6, msg=msg)
            torch.testing.assert_close(got["entropy"], ref["entropy"], atol=2e-6, rtol=1e-6, msg=msg)
            torch.testing.assert_close(got["loss"], ref["loss"], atol=1e-6, rtol=1e-6, msg=msg)
            assert got["grads"].keys() == ref["grads"].keys()
            scale = max(g.abs().max() for g in ref["grads"].values())
            assert scale > 0
            for name, g in ref["grads"].items():
                torch.testing.assert_close(got["grads"][name], g, atol=2e-6 * scale, rtol=1e-5, msg=f"{msg} {name}")
                # Adam's first step is about lr * sign(grad): compare where the gradient is above rounding noise
                moved = g.abs() > 1e-4 * scale
                torch.testing.assert_close(got["params"][name][moved], ref["params"][name][moved],
                                           atol=1e-3 * LR, rtol=0, msg=f"{msg} {name} after one step")
    # the gradients were reduced over the ranks (each rank trained its own rows)
    for key in ranks[0]:
        for name, g in ranks[0][key]["grads"].items():
            torch.testing.assert_close(ranks[1][key]["grads"][name], g, atol=1e-7, rtol=1e-6)
