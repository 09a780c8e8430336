"""Differential test on the stored corpus (tests/data/verifier_corpus): ringctl against the verdicts of the
reference implementations (lm-evaluation-harness's IFEval code, stored by bench/verifier_agreement.py
--update-corpus) and against the math labels. No reference needs to be installed to run it."""

import json
from pathlib import Path

import pytest

from ringctl.rewards import score_detailed
from ringctl.rewards.ifeval import CHECKS, DEVIATIONS, BadKwargs, check_instruction

CORPUS = Path(__file__).resolve().parents[2] / "data" / "verifier_corpus"

# every instruction id of the IFEval data set (google/IFEval, 541 prompts)
IFEVAL_DATASET_IDS = {
    "keywords:existence", "keywords:frequency", "keywords:forbidden_words", "keywords:letter_frequency",
    "language:response_language", "length_constraints:number_sentences", "length_constraints:number_paragraphs",
    "length_constraints:number_words", "length_constraints:nth_paragraph_first_word",
    "detectable_content:number_placeholders", "detectable_content:postscript",
    "detectable_format:number_bullet_lists", "detectable_format:constrained_response",
    "detectable_format:number_highlighted_sections", "detectable_format:multiple_sections",
    "detectable_format:json_format", "detectable_format:title", "combination:two_responses",
    "combination:repeat_prompt", "startend:end_checker", "change_case:capital_word_frequency",
    "change_case:english_capital", "change_case:english_lowercase", "punctuation:no_comma", "startend:quotation",
}


def _rows(name):
    return [json.loads(line) for line in (CORPUS / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def ifeval_rows():
    return _rows("ifeval.jsonl")


@pytest.fixture(scope="module")
def math_rows():
    return _rows("math.jsonl")


def _ours(case, mode):
    out = []
    for iid, kw in zip(case["instruction_id_list"], case["kwargs"], strict=True):
        try:
            out.append(check_instruction(iid, kw, case["response"], mode))
        except BadKwargs:
            out.append(False)
    return out


def test_every_ifeval_instruction_id_is_implemented_and_in_the_corpus(ifeval_rows):
    assert set(CHECKS) == IFEVAL_DATASET_IDS
    assert len(ifeval_rows) >= 200
    assert {i for row in ifeval_rows for i in row["instruction_id_list"]} == IFEVAL_DATASET_IDS


def test_ifeval_agrees_with_the_reference_after_documented_deviations(ifeval_rows):
    n = agree = raw = 0
    disagreements = []
    for case in ifeval_rows:
        assert case["deviation"] is None or case["deviation"] in DEVIATIONS, case["id"]
        for mode in ("strict", "loose"):
            ours, ref = _ours(case, mode), case[f"reference_{mode}"]
            for k, iid in enumerate(case["instruction_id_list"]):
                r = ref[k] if ref is not None else None
                n += 1
                raw += ours[k] == r
                deviation = DEVIATIONS.get(case["deviation"] or "")
                documented = deviation is not None and iid in deviation["instructions"] and (
                    case["intended"] is None or mode == "loose" or ours[k] == case["intended"])
                if ours[k] == r or documented:
                    agree += 1
                else:
                    disagreements.append((case["id"], mode, iid, ours[k], r))
    assert agree / n >= 0.99, disagreements[:20]
    assert raw / n < 1.0  # the deviations are real: the reference gives other verdicts there


def test_each_deviation_is_shown_by_a_case_where_the_reference_disagrees(ifeval_rows):
    shown = set()
    for case in ifeval_rows:
        if case["deviation"] is None or case["intended"] is None:
            continue
        ours = _ours(case, "strict")
        assert all(ours) == case["intended"], case["id"]
        ref = case["reference_strict"]
        if ref is None or all(ref) != case["intended"]:
            shown.add(case["deviation"])
    assert shown == set(DEVIATIONS)


def test_math_agrees_with_the_labels_and_accepts_no_wrong_answer(math_rows):
    assert len(math_rows) >= 1000
    wrong_accepted, mismatches = [], []
    for case in math_rows:
        res = score_detailed("math", case["response"], case["reference"])
        ok = res.score == 1.0
        if ok != case["label"]:
            mismatches.append((case["id"], case["reference"], case["answer"], res.reason))
        if ok and not case["label"]:
            wrong_accepted.append((case["id"], case["reference"], case["answer"]))
    assert not wrong_accepted
    assert 1 - len(mismatches) / len(math_rows) >= 0.99, mismatches[:20]
    kinds = {c["kind"] for c in math_rows}
    for kind in ("percent", "thousands", "units", "degrees", "interval", "tuple", "set_reordered", "enotation",
                 "equation", "multipart", "wrong_split_digits", "wrong_fragment"):
        assert kind in kinds


def test_math_corpus_is_built_from_the_real_benchmark_references(math_rows, benchmarks):
    refs = {json.loads(line)["answer"] for line in open(benchmarks / "math500.jsonl", encoding="utf-8")}
    from_math500 = [c for c in math_rows if c["source"] == "math500"]
    assert len(from_math500) >= 1000
    assert all(c["reference"] in refs for c in from_math500)


@pytest.mark.slow
def test_stored_verdicts_are_what_the_reference_says_now():
    """Runs the references themselves (bench/verifier_agreement.py, in their own virtual environment) when that
    environment exists; creating it needs PyPI, so the test is skipped without it."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[3]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ringctl" / "verifier-reference"
    if not (cache / ".ringctl-reference-ready").exists():
        pytest.skip(f"no reference environment at {cache} (python bench/verifier_agreement.py creates it)")
    proc = subprocess.run([sys.executable, str(repo / "bench" / "verifier_agreement.py"), "--json"],
                          capture_output=True, text=True, cwd=repo, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["stored_verdicts_changed"] == []
    assert result["ifeval"]["agreement"] >= 0.99 and result["ifeval"]["instruction_ids_covered"] == 25
    assert result["math"]["agreement_with_labels"] >= 0.99 and result["math"]["ringctl_wrong_accepted"] == 0
