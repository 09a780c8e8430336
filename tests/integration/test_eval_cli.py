"""`ringctl eval` as a user types it: a tiny checkpoint on GSM8K plus a JSONL with other field names (field mapping),
offline, --json; the same seed gives the same samples (and --limit only drops problems); bad input stops with
exit code 2 and one clear message before any model is loaded."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

from tests.helpers import ringctl, ringctl_json


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    from ringctl.train.config import TinyModelConfig
    from ringctl.train.models import save_tiny

    class Cfg:  # the tiny default, smaller (random init: it writes noise, which the verifiers score 0)
        tiny = TinyModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               moe_intermediate_size=64, intermediate_size=128, num_experts=4, num_experts_per_tok=2,
                               max_position_embeddings=1024)
        attn_implementation = "sdpa"

    return save_tiny(Cfg, tmp_path_factory.mktemp("ckpt") / "tiny", seed=0)


@pytest.fixture
def mapped_file(tmp_path) -> Path:
    rows = [{"task": f"what is {a} plus {b}?", "gold": a + b, "key": f"q{a}{b}"} for a, b in ((1, 2), (3, 4), (5, 1))]
    path = tmp_path / "sums.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _env(benchmarks: Path) -> dict:
    return {"RINGCTL_BENCHMARKS_DIR": str(benchmarks)}


def _by_problem(samples_path: str, row: dict) -> dict[str, list[dict]]:
    per = defaultdict(list)
    for line in open(samples_path, encoding="utf-8"):
        s = json.loads(line)
        if s["checkpoint"] == row["checkpoint"] and s["benchmark"] == row["benchmark"]:
            per[s["problem_id"]].append(s)
    return per


def test_eval_gsm8k_and_a_mapped_file_offline_json(tiny_ckpt, mapped_file, benchmarks, tmp_path):
    args = ["eval", tiny_ckpt, "--benchmarks", "gsm8k", "--file", mapped_file, "--prompt-field", "task",
            "--answer-field", "gold", "--id-field", "key", "--domain", "math", "--n", "4", "--limit", "3",
            "--max-new-tokens", "12", "--workdir", tmp_path / "runs"]
    proc, doc = ringctl_json(*args, "--out", tmp_path / "a", cwd=tmp_path, env=_env(benchmarks))
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = doc["results"]
    assert [r["benchmark"] for r in rows] == ["gsm8k", "sums"]
    for r in rows:
        assert r["checkpoint"] == str(tiny_ckpt) and r["n"] == 4 and r["num_problems"] == 3
        assert set(r["pass@k"]) == {"1", "2", "4"} and "maj@4" in r and r["stderr"] >= 0
        per = _by_problem(r["samples"], r)
        assert len(per) == 3 and all(sorted(s["sample"] for s in v) == [0, 1, 2, 3] for v in per.values())
        c = [int(sum(s["score"] for s in v)) for v in per.values()]
        assert r["pass@1"] == pytest.approx(sum(x / 4 for x in c) / 3)
        for k, v in r["pass@k"].items():
            assert v == pytest.approx(sum(1 - math.comb(4 - x, int(k)) / math.comb(4, int(k)) for x in c) / 3)
    sums = _by_problem(rows[1]["samples"], rows[1])
    assert sorted(sums) == ["sums/q12", "sums/q34", "sums/q51"]
    one = next(iter(sums.values()))[0]
    assert set(one) >= {"checkpoint", "benchmark", "problem_id", "sample", "response", "extracted", "score"}
    out = tmp_path / "a"
    assert {p.name for p in out.iterdir()} >= {"report.json", "samples.jsonl", "results.md", "results.png"}
    assert json.loads((out / "report.json").read_text())["results"] == rows

    # a rerun gives the same samples; with --limit 2 the first two problems' samples are the same again
    proc, _ = ringctl_json(*args, "--out", tmp_path / "b", cwd=tmp_path, env=_env(benchmarks))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "b" / "samples.jsonl").read_text() == (out / "samples.jsonl").read_text()
    proc, _ = ringctl_json(*[a if a != "3" else "2" for a in args], "--out", tmp_path / "c", cwd=tmp_path,
                           env=_env(benchmarks))
    assert proc.returncode == 0, proc.stderr[-3000:]
    first_two = [json.loads(x) for x in (tmp_path / "c" / "samples.jsonl").read_text().splitlines()]
    full = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert first_two == [s for s in full if s["problem_id"] in {x["problem_id"] for x in first_two}]
    assert len(first_two) == 2 * 4 * 2

    # the table for people
    table = ringctl(*args[:-2], "--limit", "1", "--device", "cpu", "--out", tmp_path / "d", cwd=tmp_path,
                    env=_env(benchmarks))
    assert table.returncode == 0 and "gsm8k (n=4, 1)" in table.stdout and "sums (n=4, 1)" in table.stdout


@pytest.mark.parametrize("extra,message", [
    (["--benchmarks", "gsm8"], "unknown benchmark 'gsm8' (did you mean 'gsm8k'?)"),
    (["--benchmarks", "gsm8k", "--n", "2", "--k", "1,4"], "--k: k=4 is larger than n=2"),
    (["--file", "{file}", "--prompt-field", "task", "--answer-field", "answer", "--domain", "math"],
     "sums.jsonl:1: benchmark 'sums': --answer-field names the field 'answer', which this row does not have"),
    (["--file", "{file}", "--prompt-field", "task", "--answer-field", "gold"], "--file needs --domain"),
    (["--benchmarks", "aime24"], "benchmark 'aime24': file {empty}/aime24.jsonl not found; set RINGCTL_BENCHMARKS_DIR"),
    (["--benchmarks", "gsm8k", "--file", "{file}", "--prompt-field", "task", "--answer-field", "gold", "--domain",
      "mathh"], "--domain: unknown verifier domain 'mathh' (did you mean 'math'?)"),
    (["--benchmarks", "gsm8k", "--device", "tpu"], "--device must be one of auto, cpu, cuda, got 'tpu'"),
])
def test_bad_input_exits_2_before_loading_a_model(tiny_ckpt, mapped_file, benchmarks, tmp_path, extra, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _env(empty if "aime24" in extra else benchmarks)
    extra = [a.replace("{file}", str(mapped_file)) for a in extra]
    message = message.replace("{empty}", str(empty))
    proc = ringctl("eval", tiny_ckpt, *extra, "--out", tmp_path / "out", cwd=tmp_path, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in " ".join(proc.stderr.split()), proc.stderr
    assert "Loading weights" not in proc.stderr and not (tmp_path / "out").exists()
    proc, doc = ringctl_json("eval", tiny_ckpt, *extra, cwd=tmp_path, env=env)
    assert proc.returncode == 2 and doc["status"] == "error" and message in doc["error"]


def test_device_cuda_without_a_gpu_exits_2_before_loading_a_model(tiny_ckpt, benchmarks, tmp_path):
    """--device follows the device rule of every stage (ringctl.train.device): cuda without CUDA is an error, never a
    silent CPU run; the user typed it, so exit 2 and the flag's name."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    proc = ringctl("eval", tiny_ckpt, "--benchmarks", "gsm8k", "--device", "cuda", "--out", tmp_path / "out",
                   cwd=tmp_path, env=_env(benchmarks))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "--device is 'cuda' but torch sees no CUDA device" in " ".join(proc.stderr.split()), proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_not_a_checkpoint_and_no_benchmark(tmp_path, benchmarks):
    proc = ringctl("eval", tmp_path, "--benchmarks", "gsm8k", cwd=tmp_path, env=_env(benchmarks))
    assert proc.returncode == 2 and "not a checkpoint directory" in proc.stderr
    proc = ringctl("eval", tmp_path, cwd=tmp_path, env=_env(benchmarks))
    assert proc.returncode == 2 and "nothing to evaluate on" in proc.stderr
    proc = ringctl("eval", "--run", "nope", "--workdir", tmp_path, cwd=tmp_path)
    assert proc.returncode == 2 and "unknown run id 'nope'" in proc.stderr
