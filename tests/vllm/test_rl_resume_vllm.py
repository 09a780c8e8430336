"""SIGKILL during RL with vLLM rollouts, then `ringctl resume`: the metrics and the final weights equal an
uninterrupted run exactly. What makes it hold: every request's seed comes from (step seed, global row), the resumed
policy's weights are pushed into a fresh engine before the first rollout (prefix cache empty in both runs, it is
reset after every weight sync), and building the engine no longer reseeds the process's generators (vLLM's
set_random_seed), which the resumed RNG state would otherwise lose."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import ringctl_json, run_then_sigkill, write
from tests.integration.sft_data import write_arithmetic
from tests.integration.test_rl_resume_two_ranks import RECIPE, _final, _rl_metrics

pytestmark = [pytest.mark.vllm, pytest.mark.slow, pytest.mark.timeout(1800)]


def test_sigkill_during_rl_with_vllm_then_resume_is_exact(tmp_path):
    from ringctl.data.records import write_jsonl
    from ringctl.data.synth import generate_rl

    sft = write_arithmetic(tmp_path / "sft.jsonl", n=160)
    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, [dict(r) for r in generate_rl(60, 0, domains=["arithmetic"])])
    text = RECIPE.format(sft=sft, prompts=prompts, nproc=1).replace("seed: 0\n", "seed: 0\nbackends: {rollout: vllm}\n")
    recipe = write(tmp_path / "r.yaml", text + "    old_logprobs: recompute\n")  # (the rl stage is the last one)
    proc, doc = ringctl_json("run", recipe, "--workdir", tmp_path / "ref", cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref_dir = tmp_path / "ref" / doc["run_id"]
    ref_metrics = _rl_metrics(ref_dir)
    diffs = [r["rollout/logprob_abs_diff"] for r in ref_metrics if "rollout/logprob_abs_diff" in r]
    # step 1 trains on fresh rollouts only; later steps also on leftovers deferred from the step before (sampled
    # by the previous weights: their gap to the trainer is the update itself, by design)
    assert len(diffs) == 6 and diffs[0] <= 1e-5

    run_dir = run_then_sigkill(recipe, tmp_path / "k", "rl/state/step-00000[45]", "RL's state at step 4 or 5")
    assert not (run_dir / "rl" / "manifest.json").exists()
    proc, doc = ringctl_json("resume", run_dir.name, "--workdir", tmp_path / "k", cwd=tmp_path, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _rl_metrics(run_dir) == ref_metrics
    ref, resumed = _final(ref_dir), _final(run_dir)
    for k in ref:
        torch.testing.assert_close(resumed[k], ref[k], atol=0, rtol=0)
