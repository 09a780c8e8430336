"""Sample rows from responses, scored by the RL verifiers: the extracted answer, IFEval's strict and loose
instruction verdicts, checkpoint directories, and the context-window cap (no model sampling here)."""

from __future__ import annotations

from ringctl.eval.benchmarks import Benchmark, BenchmarkSpec
from ringctl.eval.sampling import checkpoint_dirs, score_samples
from ringctl.rollout.base import Rollout
from ringctl.rollout.generation import EngineSettings, Generator


def _rollouts(responses_per_problem: list[list[str]]) -> tuple[list[Rollout], list[str]]:
    rollouts, texts = [], []
    for p, responses in enumerate(responses_per_problem):
        for s, text in enumerate(responses):
            rollouts.append(Rollout(prompt_index=p, sample_index=s, prompt_ids=[1], response_ids=[5] * (s + 1),
                                    finished=s != 1))
            texts.append(text)
    return rollouts, texts


def test_answer_rows_carry_the_extracted_answer_and_the_verifier_score():
    bench = Benchmark(BenchmarkSpec(name="sums", path="x.jsonl", n=3), "x.jsonl", [
        {"id": "a", "prompt": "2+2?", "question": "2+2?", "reference": "4", "domain": "math", "meta": {}},
        {"id": "b", "prompt": "what is 7-3", "question": "", "reference": "4", "domain": "arithmetic", "meta": {}}])
    rollouts, texts = _rollouts([["so \\boxed{4}", "\\boxed{5}", "no answer"],
                                 ["<think>7-3=4</think>the answer is \\boxed{4}", "<think>unfinished", "\\boxed{4}"]])
    rows = score_samples(bench, rollouts, texts, EngineSettings(reward_workers=1))
    assert [(r["problem_id"], r["sample"], r["score"], r["extracted"]) for r in rows] == [
        ("a", 0, 1.0, "4"), ("a", 1, 0.0, "5"), ("a", 2, 0.0, None),
        ("b", 0, 1.0, "4"), ("b", 1, 0.0, None), ("b", 2, 1.0, "4")]
    assert rows[1]["finished"] is False and rows[2]["response_tokens"] == 3 and rows[2]["reason"]


def test_ifeval_rows_hold_strict_and_loose_verdicts():
    from ringctl.data import synth

    rec = synth.generate_ifeval(1, seed=0)[0]
    bench = Benchmark(BenchmarkSpec(name="ifeval"), "ifeval.jsonl", [
        {"id": "0", "prompt": rec["prompt"], "question": rec["prompt"], "reference": rec["answer"],
         "domain": "ifeval", "meta": {}}])
    # the reference solution follows everything; with a first line of chatter it fails strict (title, ...) only
    chatter = "Sure, here it is:\n" + rec["solution"]
    rollouts, texts = _rollouts([[rec["solution"], chatter, "no"]])
    rows = score_samples(bench, rollouts, texts, EngineSettings(reward_workers=1))
    assert [r["score"] for r in rows] == [1.0, 0.0, 0.0]
    assert [r["loose_score"] for r in rows] == [1.0, 1.0, 0.0]
    assert set(rows[0]["instructions"]) == set(rec["answer"]["instruction_id_list"])
    assert not all(rows[1]["instructions"].values()) and all(rows[1]["instructions_loose"].values())
    assert rows[0]["extracted"] is None


def test_checkpoint_dirs(tmp_path):
    one = tmp_path / "ckpt"
    one.mkdir()
    (one / "config.json").write_text("{}")
    assert checkpoint_dirs(one) == [one]
    root = tmp_path / "checkpoints"
    for name in ("epoch-10", "epoch-2", "epoch-1", "notes"):
        (root / name).mkdir(parents=True)
        if name != "notes":
            (root / name / "config.json").write_text("{}")
    assert [p.name for p in checkpoint_dirs(root)] == ["epoch-1", "epoch-2", "epoch-10"]
    assert checkpoint_dirs(tmp_path / "missing") == [] and checkpoint_dirs(root / "notes") == []


def test_max_new_tokens_fits_the_context_window():
    class Cfg:
        max_position_embeddings = 100

    sampler = Generator.__new__(Generator)
    sampler.model = type("M", (), {"config": Cfg})()
    assert sampler.max_new_tokens(64, [[1] * 10, [1] * 30]) == 64
    assert sampler.max_new_tokens(128, [[1] * 10, [1] * 30]) == 70
    assert sampler.max_new_tokens(128, [[1] * 120]) == 1
