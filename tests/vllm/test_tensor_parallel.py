"""tensor_parallel_size 2 under torchrun (2 gloo ranks, external_launcher): the two ranks are ONE vLLM engine and
must submit identical requests, yet each rank brings its own prompts. VLLMRolloutEngine.generate gathers the group's
requests, generates them together and hands each rank its rows: the union equals one process's draws (tp 1)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(900)]
WORKER = Path(__file__).with_name("tp_worker.py")


def _run(path: Path, out: Path, nproc: int, tp: int) -> list[dict]:
    out.mkdir()
    script = [str(WORKER), str(path), str(out), str(tp)]
    cmd = [sys.executable, *script] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}",
         *script]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out / f"r{r}.json").read_text()) for r in range(nproc)]


def test_a_tensor_parallel_group_of_ranks_with_their_own_prompts_draws_one_process_rollouts(tiny_checkpoints,
                                                                                             tmp_path):
    _, paths, _ = tiny_checkpoints
    (one,) = _run(paths[0], tmp_path / "one", 1, 1)
    two = _run(paths[0], tmp_path / "two", 2, 2)
    assert [r["tp"] for r in two] == [2, 2] and all(r["executor"] == "external_launcher" for r in two)
    assert len(one["responses"]) == 8
    assert two[0]["responses"] + two[1]["responses"] == one["responses"]
