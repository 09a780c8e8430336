"""Verifier fidelity: ringctl's IFEval and math verifiers against the reference implementations and the labels.

    python bench/verifier_agreement.py [--json] [--update-corpus] [--stored] [--reference-venv DIR]

The corpus is tests/data/verifier_corpus/ (written by bench/verifier_corpus.py). The references run in a
virtual environment of their own (created on first use under ~/.cache/ringctl/verifier-reference, about a
minute from PyPI): lm-evaluation-harness's IFEval code (``lm-eval`` installed without its heavy dependencies,
plus the langdetect, nltk, immutabledict and packaging that the IFEval module imports) and math-verify with its
own antlr (``math-verify[antlr4_13_2]``), where ringctl's environment has the antlr 4.9 that hydra-core pins.
The reference's NLTK needs the ``punkt_tab`` English model, which cannot be downloaded here: the bench writes
the tables ringctl ships (ringctl/rewards/data/punkt_english.json.gz) into the reference's NLTK_DATA, so both
split sentences with the same model; and it seeds langdetect with 0 on both sides (the reference leaves it
unseeded, which makes its verdicts on short texts vary from run to run).

Reported: IFEval agreement with the reference per instruction id, strict and loose, raw and after the documented
deviations (ringctl.rewards.ifeval.DEVIATIONS: a case marked with one counts as agreeing when ringctl gives
the case's intended verdict there); math agreement with the labels per answer kind, for ringctl and for
math-verify called directly, wrong answers accepted, and ringctl vs math-verify. ``--update-corpus`` stores the
reference's verdicts in the corpus (the unit test compares ringctl with them, with no reference installed);
``--stored`` uses those stored verdicts instead of running the reference.

The JSON line: {"bench": "verifier_agreement", "metric": "agreement", "ringctl": <agreement over every IFEval
instruction verdict and every math case>, "reference": <the same for the references>, "ratio": ...,
"ifeval": {...}, "math": {...}, "deviations": {...}}.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CORPUS_DIR = REPO / "tests" / "data" / "verifier_corpus"
DEFAULT_VENV = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ringctl" / "verifier-reference"
REFERENCE_PACKAGES = ["langdetect==1.0.9", "nltk>=3.9.1", "immutabledict", "packaging",
                      "math-verify[antlr4_13_2]==0.9.0"]
LM_EVAL = "lm-eval==0.4.13"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- the reference


def reference_python(venv_dir: Path) -> Path:
    """The reference environment's interpreter, created and filled on first use."""
    python = venv_dir / "bin" / "python"
    stamp = venv_dir / ".ringctl-reference-ready"
    wanted = json.dumps([LM_EVAL, *REFERENCE_PACKAGES])
    if stamp.exists() and stamp.read_text() == wanted:
        return python
    log(f"creating the reference environment in {venv_dir} (lm-eval, math-verify with antlr 4.13) ...")
    venv.EnvBuilder(with_pip=True, clear=True).create(venv_dir)
    pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", LM_EVAL], check=True)
    subprocess.run([*pip, *REFERENCE_PACKAGES], check=True)
    stamp.write_text(wanted)
    return python


def write_punkt_tab(nltk_data: Path) -> None:
    """ringctl's shipped Punkt tables as the punkt_tab/english directory NLTK reads."""
    from ringctl.rewards.text_split import PUNKT_TABLES

    with gzip.open(PUNKT_TABLES, "rt", encoding="utf-8") as f:
        tables = json.load(f)
    d = nltk_data / "tokenizers" / "punkt_tab" / "english"
    d.mkdir(parents=True, exist_ok=True)
    (d / "abbrev_types.txt").write_text("".join(f"{x}\n" for x in tables["abbrev_types"]), encoding="utf-8")
    (d / "sent_starters.txt").write_text("".join(f"{x}\n" for x in tables["sent_starters"]), encoding="utf-8")
    (d / "collocations.tab").write_text("".join(f"{a}\t{b}\n" for a, b in tables["collocations"]), encoding="utf-8")
    (d / "ortho_context.tab").write_text("".join(f"{k}\t{v}\n" for k, v in tables["ortho_context"].items()),
                                         encoding="utf-8")


def run_reference(venv_dir: Path, ifeval: list[dict], math: list[dict]) -> dict:
    python = reference_python(venv_dir)
    nltk_data = venv_dir / "nltk_data"
    write_punkt_tab(nltk_data)
    ifeval_dir = subprocess.run(
        [str(python), "-c", "import importlib.util, pathlib; "
         "print(pathlib.Path(importlib.util.find_spec('lm_eval').origin).parent / 'tasks' / 'ifeval')"],
        check=True, capture_output=True, text=True).stdout.strip()
    payload = {"ifeval": [{k: c[k] for k in ("id", "instruction_id_list", "kwargs", "prompt", "response")}
                          for c in ifeval],
               "math": [{k: c[k] for k in ("id", "reference", "response")} for c in math]}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False, encoding="utf-8") as f:
        json.dump(payload, f)
        cases_path = f.name
    try:
        env = {**os.environ, "NLTK_DATA": str(nltk_data), "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
        proc = subprocess.run([str(python), str(REPO / "bench" / "_verifier_reference.py"), cases_path, ifeval_dir],
                              capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    finally:
        os.unlink(cases_path)
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


# ---------------------------------------------------------------------------------------------- ringctl


def ringctl_ifeval(case: dict) -> dict:
    from ringctl.rewards.ifeval import BadKwargs, check_instruction

    out = {}
    for mode in ("strict", "loose"):
        verdicts = []
        for iid, kw in zip(case["instruction_id_list"], case["kwargs"], strict=True):
            try:
                verdicts.append(bool(check_instruction(iid, kw, case["response"], mode)))
            except BadKwargs:
                verdicts.append(False)
        out[mode] = verdicts
    return out


def ringctl_math(case: dict) -> bool:
    from ringctl.rewards import score_detailed

    return score_detailed("math", case["response"], case["reference"]).score == 1.0


# ---------------------------------------------------------------------------------------------- compare


def _rate(hits: int, n: int) -> float | None:
    return round(hits / n, 4) if n else None


def is_documented(case: dict, instruction_id: str, mode: str, verdict: bool) -> bool:
    """Is a disagreement on this instruction explained by the deviation the case is marked with? Only for an
    instruction that deviation concerns, and in strict mode only when ringctl gives the verdict the case's
    author intended (hand-written cases; random cases have none)."""
    from ringctl.rewards.ifeval import DEVIATIONS

    deviation = DEVIATIONS.get(case.get("deviation") or "")
    if deviation is None or instruction_id not in deviation["instructions"]:
        return False
    return case.get("intended") is None or mode == "loose" or verdict == case["intended"]


def compare_ifeval(cases: list[dict], ours: dict[str, dict]) -> dict:
    """Instruction-level agreement with the reference verdicts stored in the cases."""
    per_id: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    prompt = collections.Counter()
    disagreements = []
    for case in cases:
        mine = ours[case["id"]]
        for mode in ("strict", "loose"):
            ref = case.get(f"reference_{mode}")
            prompt_agree = True
            for k, iid in enumerate(case["instruction_id_list"]):
                r = ref[k] if ref is not None else None
                m = mine[mode][k]
                c = per_id[iid]
                c[f"{mode}_n"] += 1
                raw = r is not None and m == r
                c[f"{mode}_raw"] += raw
                documented = is_documented(case, iid, mode, m)
                agree = raw or documented
                c[f"{mode}_agree"] += agree
                if not agree:
                    prompt_agree = False
                    disagreements.append({"id": case["id"], "mode": mode, "instruction": iid, "ringctl": m,
                                          "reference": r, "response": case["response"][:120]})
            prompt[f"{mode}_n"] += 1
            prompt[f"{mode}_agree"] += prompt_agree
    ids = {iid: {"n": c["strict_n"], "strict": _rate(c["strict_agree"], c["strict_n"]),
                 "loose": _rate(c["loose_agree"], c["loose_n"]),
                 "strict_raw": _rate(c["strict_raw"], c["strict_n"]), "loose_raw": _rate(c["loose_raw"], c["loose_n"])}
           for iid, c in sorted(per_id.items())}
    n = sum(c["strict_n"] + c["loose_n"] for c in per_id.values())
    agree = sum(c["strict_agree"] + c["loose_agree"] for c in per_id.values())
    raw = sum(c["strict_raw"] + c["loose_raw"] for c in per_id.values())
    return {"cases": len(cases), "instruction_verdicts": n, "agreement": _rate(agree, n), "agreement_raw": _rate(raw, n),
            "prompt_level_strict": _rate(prompt["strict_agree"], prompt["strict_n"]),
            "prompt_level_loose": _rate(prompt["loose_agree"], prompt["loose_n"]),
            "instruction_ids_covered": len(per_id), "per_instruction": ids, "disagreements": disagreements}


def compare_math(cases: list[dict], ours: dict[str, bool]) -> dict:
    kinds: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    mismatches = []
    for case in cases:
        c = kinds[case["kind"]]
        mine, label, ref = ours[case["id"]], case["label"], case.get("reference_correct")
        c["n"] += 1
        c["ringctl"] += mine == label
        c["reference_n"] += ref is not None
        c["reference"] += ref is not None and ref == label
        c["ringctl_vs_reference"] += ref is not None and ref == mine
        c["ringctl_wrong_accepted"] += mine and not label
        c["reference_wrong_accepted"] += bool(ref) and not label
        if mine != label:
            mismatches.append({"id": case["id"], "kind": case["kind"], "reference": case["reference"],
                               "answer": case["answer"], "label": label, "ringctl": mine})
    tot = collections.Counter()
    for c in kinds.values():
        tot.update(c)
    per_kind = {k: {"n": c["n"], "ringctl": _rate(c["ringctl"], c["n"]),
                    "math_verify": _rate(c["reference"], c["reference_n"]),
                    "ringctl_vs_math_verify": _rate(c["ringctl_vs_reference"], c["reference_n"])}
                for k, c in sorted(kinds.items())}
    return {"cases": len(cases), "wrong_answers": sum(1 for c in cases if not c["label"]),
            "agreement_with_labels": _rate(tot["ringctl"], tot["n"]),
            "math_verify_agreement_with_labels": _rate(tot["reference"], tot["reference_n"]),
            "ringctl_vs_math_verify": _rate(tot["ringctl_vs_reference"], tot["reference_n"]),
            "ringctl_wrong_accepted": tot["ringctl_wrong_accepted"],
            "math_verify_wrong_accepted": tot["reference_wrong_accepted"],
            "per_kind": per_kind, "mismatches": mismatches}


# ------------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="one JSON object as the last stdout line")
    ap.add_argument("--update-corpus", action="store_true", help="store the reference's verdicts in the corpus")
    ap.add_argument("--stored", action="store_true", help="use the verdicts stored in the corpus, run no reference")
    ap.add_argument("--reference-venv", type=Path, default=DEFAULT_VENV)
    ap.add_argument("--corpus", type=Path, default=CORPUS_DIR)
    args = ap.parse_args()

    from ringctl.rewards.ifeval import DEVIATIONS

    ifeval = read_jsonl(args.corpus / "ifeval.jsonl")
    math = read_jsonl(args.corpus / "math.jsonl")
    versions = {}
    changed = None
    if not args.stored:
        stored = {c["id"]: (c.get("reference_strict"), c.get("reference_loose")) for c in ifeval}
        stored.update({c["id"]: c.get("reference_correct") for c in math})
        t0 = time.perf_counter()
        ref = run_reference(args.reference_venv, ifeval, math)
        log(f"reference verdicts in {time.perf_counter() - t0:.0f}s")
        versions = ref["versions"]
        by_id = {v["id"]: v for v in ref["ifeval"]}
        for case in ifeval:
            v = by_id[case["id"]]
            case["reference_strict"], case["reference_loose"] = v["strict"], v["loose"]
            errors = [v.get(f"{m}_error") for m in ("strict", "loose") if v.get(f"{m}_error")]
            case.pop("reference_error", None)
            if errors:
                case["reference_error"] = errors[0]
        by_id = {v["id"]: v for v in ref["math"]}
        for case in math:
            case["reference_correct"] = by_id[case["id"]]["correct"]
            case.pop("reference_error", None)
            if by_id[case["id"]].get("error"):
                case["reference_error"] = by_id[case["id"]]["error"]
        fresh = {c["id"]: (c.get("reference_strict"), c.get("reference_loose")) for c in ifeval}
        fresh.update({c["id"]: c.get("reference_correct") for c in math})
        changed = sorted(k for k in fresh if stored.get(k) != fresh[k])
        if args.update_corpus:
            from bench.verifier_corpus import write_jsonl

            write_jsonl(args.corpus / "ifeval.jsonl", ifeval)
            write_jsonl(args.corpus / "math.jsonl", math)
            log(f"stored the reference verdicts in {args.corpus}")

    t0 = time.perf_counter()
    ours_ifeval = {c["id"]: ringctl_ifeval(c) for c in ifeval}
    t_ifeval = time.perf_counter() - t0
    t0 = time.perf_counter()
    ours_math = {c["id"]: ringctl_math(c) for c in math}
    t_math = time.perf_counter() - t0

    ifeval_report = compare_ifeval(ifeval, ours_ifeval)
    math_report = compare_math(math, ours_math)
    n_if, n_m = ifeval_report["instruction_verdicts"], math_report["cases"]
    overall = (ifeval_report["agreement"] * n_if + math_report["agreement_with_labels"] * n_m) / (n_if + n_m)
    ref_overall = None
    if math_report["math_verify_agreement_with_labels"] is not None and ifeval_report["agreement_raw"] is not None:
        # the reference agrees with itself on IFEval by definition; its math score is math-verify's vs the labels
        ref_overall = (1.0 * n_if + math_report["math_verify_agreement_with_labels"] * n_m) / (n_if + n_m)
    result = {
        "bench": "verifier_agreement", "metric": "agreement",
        "ringctl": round(overall, 4),
        "reference": round(ref_overall, 4) if ref_overall is not None else None,
        "ratio": round(overall / ref_overall, 4) if ref_overall else None,
        "ifeval": {k: v for k, v in ifeval_report.items() if k != "disagreements"},
        "ifeval_disagreements": ifeval_report["disagreements"][:50],
        "math": {k: v for k, v in math_report.items() if k != "mismatches"},
        "math_mismatches": math_report["mismatches"][:50],
        "deviations": {k: {"instructions": v["instructions"], "example": v["example"]} for k, v in DEVIATIONS.items()},
        "reference_versions": versions, "source": "stored verdicts" if args.stored else "reference run",
        # cases whose fresh reference verdict differs from the one stored in the corpus (None: not run)
        "stored_verdicts_changed": changed,
        "ringctl_seconds": {"ifeval": round(t_ifeval, 1), "math": round(t_math, 1)},
    }
    if not args.json:
        log(f"IFEval: {ifeval_report['agreement']:.2%} of {n_if} instruction verdicts agree with the reference after "
            f"{len(DEVIATIONS)} documented deviations ({ifeval_report['agreement_raw']:.2%} raw), "
            f"{ifeval_report['instruction_ids_covered']} instruction ids")
        log(f"math: ringctl {math_report['agreement_with_labels']:.2%} of {n_m} cases agree with the labels, "
            f"{math_report['ringctl_wrong_accepted']} wrong answers accepted; math-verify alone "
            f"{math_report['math_verify_agreement_with_labels']}, "
            f"{math_report['math_verify_wrong_accepted']} wrong answers accepted")
        for d in ifeval_report["disagreements"][:20]:
            log(f"  ifeval {d}")
        for m in math_report["mismatches"][:30]:
            log(f"  math {m}")
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
