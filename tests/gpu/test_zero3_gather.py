"""ZeRO-3 on CUDA (nccl, one process per GPU, float32 as the tiny recipe): the model loads partitioned and the block-by-block weight
stream equals save_pretrained's file. The two-process CPU version is tests/integration/test_zero3_weights.py;
this one runs the same script on the GPUs present (nproc = number of GPUs, at most 2)."""

import subprocess
import sys

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.slow]


def test_zero3_gather_on_cuda(tmp_path):
    from ringctl.pipeline.launchers import free_port
    from ringctl.train.config import ModelConfig
    from ringctl.train.models import build_tiny
    from tests.helpers import REPO, cli_env
    from tests.integration.test_zero3_weights import SCRIPT

    model, tok = build_tiny(ModelConfig(), seed=0)
    ckpt = tmp_path / "ckpt"
    model.save_pretrained(ckpt, safe_serialization=True)
    tok.save_pretrained(ckpt)
    reference = tmp_path / "reference.pt"
    torch.save({k: v.clone() for k, v in model.state_dict().items()}, reference)
    script = tmp_path / "zero3.py"
    # on CUDA the script's inputs go to the rank's device
    script.write_text(SCRIPT.format(repo=str(REPO)).replace(
        "ids = torch.tensor([[1, 10, 11, 12, 13, 14, 15, 16]]) + rank",
        "ids = (torch.tensor([[1, 10, 11, 12, 13, 14, 15, 16]]) + rank).cuda()"))
    out = tmp_path / "out"
    out.mkdir()
    nproc = min(torch.cuda.device_count(), 2)
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
           str(script), str(ckpt), str(out), str(reference)]
    proc = subprocess.run(cmd, env=cli_env(), cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    for rank in range(nproc):
        r = json.loads((out / f"rank{rank}.json").read_text())
        assert r["ckpt_partitioned"] and r["ckpt_local_numel"] == 0
        for prefix in ("ckpt_stream", "trained_stream", "ckpt_gathered", "tiny_init"):
            assert r[f"{prefix}_names"] and r[f"{prefix}_shapes"], (rank, prefix, r[f"{prefix}_missing"])
            assert r[f"{prefix}_max_diff"] == 0.0, (rank, prefix)
