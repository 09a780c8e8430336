"""Each filter step with records it must drop and records it must keep; decontamination on real MATH-500."""

from __future__ import annotations

import json
import sys
import types

import pytest
from pydantic import TypeAdapter, ValidationError

from ringctl.data.demo import DemoSource, generate_demo_records
from ringctl.data.filters import (
    Characters,
    Decontaminate,
    ExactDedup,
    FilterRun,
    GuessableFormats,
    Length,
    NearDedup,
    RequireFields,
    SplitRule,
    StepConfig,
    StepConfigError,
    VerifyAnswers,
    apply_steps,
    assign_splits,
)
from ringctl.data.readers import FileSource, read_source
from ringctl.data.records import make_record


def rec(prompt: str, answer="1", i: int | str = 0, **kw) -> dict:
    return make_record(id=str(i), prompt=prompt, answer=answer, **kw)


def run_steps(records: list[dict], steps) -> tuple[list[dict], FilterRun]:
    run = FilterRun()
    run.sources["test"] = len(records)
    kept = list(apply_steps(iter(records), steps, run))
    run.written_all = len(kept)
    assert run.check() == []
    return kept, run


def dropped_reasons(step, records: list[dict]) -> list[str | None]:
    flt = step.build()
    return [flt.check(r) for r in records]


def test_steps_are_a_discriminated_union_on_type():
    steps = TypeAdapter(list[StepConfig]).validate_python([
        {"type": "exact_dedup"}, {"type": "near_dedup", "threshold": 0.8, "num_perm": 128},
        {"type": "decontaminate", "benchmarks": ["a.jsonl"], "n": 13, "threshold": 0.5}])
    assert [type(s) for s in steps] == [ExactDedup, NearDedup, Decontaminate]
    with pytest.raises(ValidationError, match="exact_dedupe"):
        TypeAdapter(list[StepConfig]).validate_python([{"type": "exact_dedupe"}])
    with pytest.raises(ValidationError, match="treshold"):
        TypeAdapter(list[StepConfig]).validate_python([{"type": "near_dedup", "treshold": 0.8}])


def test_exact_dedup_ignores_case_and_whitespace_only():
    records = [rec("What is 2 + 2?", i=0), rec("  WHAT is 2 +   2?\n", i=1), rec("What is 2 + 3?", i=2)]
    kept, run = run_steps(records, [ExactDedup()])
    assert [r["id"] for r in kept] == ["0", "2"]
    assert run.steps[0].dropped_by_reason == {"exact_duplicate": 1}
    assert run.steps[0].examples == {"exact_duplicate": ["1"]}
    # with the answer in the key, the same prompt with another answer is not a duplicate
    kept, _ = run_steps([rec("Same?", "1", i=0), rec("Same?", "2", i=1)], [ExactDedup(fields=["prompt", "answer"])])
    assert len(kept) == 2


LONG = ("Mira lives near the harbour and spends every Sunday on pottery. She keeps 62 wooden ribbons in a box, "
        "buys 251 more at the village fair, then gives 38 to Farah, who already owns 16 postcards. "
        "How many ribbons does Mira have now?")


@pytest.mark.parametrize("index", ["compact", "datasketch"])
def test_near_dedup_catches_small_edits_not_different_texts(index):
    other = ("A cylinder of copper has mass 786 g and volume 115 cm^3 in the greenhouse laboratory. "
             "What is its density in g/cm^3, rounded to two decimals?")
    records = [rec(LONG, i="orig"), rec(LONG.replace(" now?", " at the end?"), i="edit"), rec(other, i="other"),
               rec(LONG.replace("Mira", "Omar").replace("62", "17").replace("pottery", "chess"), i="rewrite")]
    kept, run = run_steps(records, [NearDedup(threshold=0.7, index=index)])
    assert [r["id"] for r in kept] == ["orig", "other", "rewrite"]
    assert run.steps[0].dropped_by_reason == {"near_duplicate": 1}


def test_near_dedup_on_demo_data_finds_most_near_duplicates_and_few_false_ones():
    records = list(generate_demo_records(DemoSource(n=1500, exact_duplicates=0, guessable=0, too_long=0,
                                                    bad_characters=0, near_duplicates=0.1)))
    kept, run = run_steps(records, [NearDedup(threshold=0.7)])
    kept_ids = {r["id"] for r in kept}
    near = [r for r in records if r["metadata"]["demo_kind"] == "near_duplicate"]
    clean = [r for r in records if r["metadata"]["demo_kind"] == "clean"]
    caught = sum(r["id"] not in kept_ids for r in near) / len(near)
    false = sum(r["id"] not in kept_ids for r in clean) / len(clean)
    assert caught > 0.75, caught
    assert false < 0.01, false


def test_guessable_formats():
    mc = rec("How many?\n(A) 3\n(B) 4\n(C) 5\n(D) 6", "B", i="mc")
    mc_inline = rec("Pick one: (A) red (B) blue (C) green", "(C)", i="mc2")
    tf = rec("True or false: 7 is prime.", "True", i="tf")
    tf_answer = rec("Is the statement '2 > 3' correct?", "false", i="tf2")
    yn = rec("Is 91 a prime number?", "No", i="yn")
    keep = [rec("Find x if 2x = 10.", "5", i="k1"), rec("Evaluate (a) f(1) for f(x)=x.", "1", i="k2"),
            rec("Which letter comes after A?", "B", i="k3"), rec("How many sides has a hexagon?", "6", i="k4")]
    assert dropped_reasons(GuessableFormats(), [mc, mc_inline, tf, tf_answer, yn]) == [
        "multiple_choice", "multiple_choice", "true_false", "true_false", "yes_no"]
    assert dropped_reasons(GuessableFormats(), keep) == [None] * 4
    # a kind left out of `drop` is kept
    assert dropped_reasons(GuessableFormats(drop=["multiple_choice"]), [tf, yn, mc]) == [None, None, "multiple_choice"]


def test_length_bounds():
    step = Length(field="prompt", min_chars=5, max_chars=30, max_words=4)
    records = [rec("tiny"), rec("x" * 31), rec("one two three four five"), rec("a fine prompt")]
    assert dropped_reasons(step, records) == ["prompt_too_short", "prompt_too_long", "prompt_too_long", None]
    with pytest.raises(ValidationError, match="at least one"):
        Length()
    with pytest.raises(ValidationError, match="above maximum"):
        Length(min_chars=10, max_chars=5)


def test_characters():
    records = [rec("bell \x07 here"), rec("broken \ufffd text"), rec("see ![fig](a.png)"),
               rec("<img src='x'> look"), rec("tab\tand\nnewline are fine"), rec("caf\u00e9 is fine"),
               rec("ok", solution="\\includegraphics{plot}")]
    assert dropped_reasons(Characters(), records) == [
        "control_characters", "replacement_character", "image", "image", None, None, "image"]
    assert dropped_reasons(Characters(max_non_ascii_fraction=0.3), [rec("日本語のテキスト"), rec("abc")]) == [
        "non_ascii", None]


def test_require_fields():
    records = [rec("p", None), rec("p", "  "), rec("p", {}), rec("", "1"), rec("p", "0"), rec("p", {"test": "x"})]
    assert dropped_reasons(RequireFields(), records) == [
        "missing_answer", "missing_answer", "missing_answer", "missing_prompt", None, None]


def _reworded(problem: str) -> str:
    """A light rewrite: a prefix, one substituted word and a changed ending."""
    return "Here is a question for you. " + problem.replace(" the ", " a ", 1).rstrip(".?$ ") + ", please."


def test_decontamination_catches_reworded_math500_problems(benchmarks):
    math500 = list(read_source(FileSource(path=str(benchmarks / "math500.jsonl"), preset="math500")))
    long_problems = [r for r in math500 if len(r["prompt"].split()) >= 25][:20]
    contaminated = [rec(_reworded(r["prompt"]), i=f"c{k}") for k, r in enumerate(long_problems)]
    clean = [rec(r["prompt"], i=f"k{k}") for k, r in enumerate(generate_demo_records(DemoSource(n=200)))]
    step = Decontaminate(benchmarks=[str(benchmarks / "math500.jsonl"), str(benchmarks / "gsm8k.jsonl")],
                         n=8, threshold=0.5)
    kept, run = run_steps(contaminated + clean, [step])
    assert run.steps[0].dropped_by_reason == {"contaminated:math500": len(contaminated)}
    assert len(kept) == len(clean)
    # a stricter threshold on the same n-grams misses reworded items: the threshold is what it says
    loose = dropped_reasons(Decontaminate(benchmarks=[str(benchmarks / "math500.jsonl")], n=8, threshold=1.0),
                            contaminated)
    assert loose.count(None) > 0


def test_decontamination_benchmark_item_inside_longer_text(benchmarks, tmp_path):
    gsm = [json.loads(line) for line in (benchmarks / "gsm8k.jsonl").read_text().splitlines()[:3]]
    text = "Some unrelated context about gardening. " + gsm[2]["question"] + " Answer with a number."
    step = Decontaminate(benchmarks=[{"path": str(benchmarks / "gsm8k.jsonl"), "name": "gsm"}], n=13)
    assert dropped_reasons(step, [rec(text), rec("A different question about apples and pears.")]) == [
        "contaminated:gsm", None]


def test_decontamination_names_presets(benchmarks, monkeypatch, tmp_path):
    """A preset name reads the shipped copy (or $RINGCTL_BENCHMARKS_DIR's); a path still works beside it."""
    gsm = json.loads((benchmarks / "gsm8k.jsonl").read_text().splitlines()[5])["question"]
    ifeval = json.loads((benchmarks / "ifeval.jsonl").read_text().splitlines()[0])["prompt"]
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"question": "a question of my own about eleven green bottles on a wall"}) + "\n")
    step = Decontaminate(benchmarks=["gsm8k", "ifeval", str(mine)], n=8)
    assert dropped_reasons(step, [rec(gsm), rec(ifeval), rec("Eleven green bottles on a wall: a question of my own "
                                                               "about eleven green bottles on a wall"),
                                  rec("A question about apples and pears that no benchmark asks.")]) == [
        "contaminated:gsm8k", "contaminated:ifeval", "contaminated:mine", None]
    # $RINGCTL_BENCHMARKS_DIR replaces the shipped copies; a directory without the file is a clear error
    monkeypatch.setenv("RINGCTL_BENCHMARKS_DIR", str(tmp_path))
    with pytest.raises(StepConfigError, match=r"step 'decontaminate': benchmark 'gsm8k': file .*gsm8k.jsonl not "
                                              r"found; set RINGCTL_BENCHMARKS_DIR to a directory that holds "
                                              r"gsm8k.jsonl, or unset it"):
        step.build()


def test_missing_benchmark_file_is_a_clear_error(tmp_path):
    step = Decontaminate(benchmarks=[str(tmp_path / "math500.jsonl")])
    run = FilterRun()
    with pytest.raises(StepConfigError, match=r"benchmark file .*math500.jsonl.* not found.*name a preset: math500"):
        apply_steps(iter([rec("x")]), [ExactDedup(), step], run)


def test_verify_answers_errors_clearly_without_rewards(monkeypatch):
    monkeypatch.setitem(sys.modules, "ringctl.rewards", None)  # makes the import fail
    with pytest.raises(StepConfigError, match="verify_answers needs ringctl.rewards.verify_reference"):
        VerifyAnswers().build()


def test_verify_answers_calls_the_domain_verifier(monkeypatch):
    calls = []

    def verify_reference(domain, reference, **meta):
        calls.append((domain, reference, meta))
        return (reference != "???", "cannot parse")

    monkeypatch.setitem(sys.modules, "ringctl.rewards", types.SimpleNamespace(verify_reference=verify_reference))
    records = [rec("a", "3", domain="math", metadata={"level": 1}), rec("b", "???", domain="math"),
               rec("c", "???", domain="general")]
    assert dropped_reasons(VerifyAnswers(domains=["math"]), records) == [
        None, "unverifiable:math:cannot parse", None]
    assert calls[0] == ("math", "3", {"level": 1}) and len(calls) == 2


def test_splits_first_match_all_matches_and_default():
    rules = {"sft": SplitRule(domains=["math"], has_solution=True), "rl_reasoning": SplitRule(domains=["math", "code"]),
             "rl_general": SplitRule(sources=["chat*"])}
    with_solution = rec("p", domain="math", solution="work")
    code = rec("p", domain="code", source="x")
    chat = rec("p", domain="general", source="chat-v1")
    other = rec("p", domain="general", source="web")
    assert assign_splits(with_solution, rules, None, all_matches=False) == ["sft"]
    assert assign_splits(with_solution, rules, None, all_matches=True) == ["sft", "rl_reasoning"]
    assert assign_splits(code, rules, None, all_matches=False) == ["rl_reasoning"]
    assert assign_splits(chat, rules, None, all_matches=False) == ["rl_general"]
    assert assign_splits(other, rules, None, all_matches=False) == []
    assert assign_splits(other, rules, "rl_general", all_matches=False) == ["rl_general"]


def test_report_counts_add_up_over_a_chain():
    records = list(generate_demo_records(DemoSource(n=400, seed=3)))
    steps = [Characters(), Length(max_chars=2000), ExactDedup(), NearDedup(threshold=0.7), GuessableFormats()]
    kept, run = run_steps(records, steps)
    seen = [s.seen for s in run.steps]
    assert seen[0] == len(records)
    assert all(a.kept == b.seen for a, b in zip(run.steps, run.steps[1:], strict=False))
    assert len(records) - sum(s.dropped for s in run.steps) == len(kept) == run.kept
    kinds = {r["metadata"]["demo_kind"] for r in kept}
    assert kinds == {"clean"} or kinds <= {"clean", "near_duplicate"}  # LSH may miss a near duplicate
    metrics = run.metrics()
    assert metrics["filter/exact_dedup/dropped"] == run.steps[2].dropped > 0
    assert metrics["filter/guessable_formats/kept"] == len(kept)
    report = run.to_dict()
    assert report["read"] == len(records) and report["kept"] == len(kept)
    assert "| exact_dedup | exact_dedup |" in run.to_markdown()
    run.check()
    run.written_all += 1
    assert run.check() and "'all' holds" in run.check()[0]


def test_band_key_index_merges_without_losing_keys():
    import numpy as np

    from ringctl.data.filters.dedup import BandKeyIndex

    index = BandKeyIndex(merge_every=8)
    rng = np.random.RandomState(0)
    batches = [rng.randint(0, 2**63, size=5, dtype=np.uint64) for _ in range(40)]
    for keys in batches:
        assert not index.contains_any(keys)
        index.add(keys)
    assert index.sorted.size > 0 and len(index) == 200
    assert all(index.contains_any(keys[2:3]) for keys in batches)
    assert not index.contains_any(rng.randint(0, 2**63, size=5, dtype=np.uint64))
    index.add(batches[0])  # re-adding known keys keeps the array a set
    index.merge()
    assert len(index) == 200 and bool(np.all(np.diff(index.sorted.astype(np.float64)) >= 0))
