"""The reference verifiers, run inside their own virtual environment by bench/verifier_agreement.py.

    <reference venv>/bin/python bench/_verifier_reference.py CASES.json LM_EVAL_IFEVAL_DIR > VERDICTS.json

IFEval: lm-evaluation-harness's ``lm_eval/tasks/ifeval`` (Google's code), called through its own
``test_instruction_following_strict`` / ``_loose``. The package ``lm_eval.tasks`` is not imported (its
``__init__`` pulls in the task manager, datasets and torch); the ifeval folder is loaded as a package of its
own name, so the modules run unchanged. NLTK finds the Punkt tables in NLTK_DATA (the bench writes them there:
``punkt_tab`` cannot be downloaded here). langdetect is seeded with 0, as ringctl seeds it, so that both sides
see the same detection for the same text.

Math: math-verify called directly, the way its README shows: ``verify(parse(gold), parse(response))`` with
the gold answer in ``$...$`` and the whole response, both with math-verify's default extraction, in an
environment with antlr4-python3-runtime 4.13 (``math-verify[antlr4_13_2]``).

Only the standard library and the reference packages are imported here; nothing from ringctl.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
import types
from pathlib import Path


def _load_ifeval(ifeval_dir: Path):
    import lm_eval  # noqa: F401  (light: only reads its version)

    tasks = types.ModuleType("lm_eval.tasks")
    tasks.__path__ = [str(ifeval_dir.parent)]
    sys.modules["lm_eval.tasks"] = tasks
    return importlib.import_module("lm_eval.tasks.ifeval.utils")


def run_ifeval(cases: list[dict], ifeval_dir: Path) -> list[dict]:
    from langdetect import DetectorFactory

    DetectorFactory.seed = 0
    logging.disable(logging.CRITICAL)  # the reference logs every langdetect failure
    utils = _load_ifeval(ifeval_dir)
    out = []
    for case in cases:
        inp = utils.InputExample(key=0, instruction_id_list=case["instruction_id_list"], prompt=case.get("prompt", ""),
                                 kwargs=case["kwargs"])
        verdict: dict = {"id": case["id"]}
        for mode, fn in (("strict", utils.test_instruction_following_strict),
                         ("loose", utils.test_instruction_following_loose)):
            try:
                result = fn(inp, case["response"])
                verdict[mode] = [bool(x) for x in result.follow_instruction_list]
            except Exception as e:  # the reference raising is a verdict of its own (e.g. re.error)
                verdict[mode] = None
                verdict[f"{mode}_error"] = f"{type(e).__name__}: {e}"[:200]
        out.append(verdict)
    return out


def run_math(cases: list[dict]) -> list[dict]:
    from math_verify import parse, verify

    logging.disable(logging.CRITICAL)
    out = []
    for case in cases:
        verdict: dict = {"id": case["id"]}
        try:
            gold = parse(f"${case['reference']}$")
            pred = parse(case["response"])
            verdict["correct"] = bool(verify(gold, pred))
        except Exception as e:
            verdict["correct"] = False
            verdict["error"] = f"{type(e).__name__}: {e}"[:200]
        out.append(verdict)
    return out


def main() -> None:
    cases = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    ifeval_dir = Path(sys.argv[2])
    result = {"ifeval": run_ifeval(cases.get("ifeval", []), ifeval_dir), "math": run_math(cases.get("math", [])),
              "versions": {}}
    from importlib.metadata import version

    for pkg in ("lm_eval", "math-verify", "latex2sympy2_extended", "antlr4-python3-runtime", "nltk", "langdetect"):
        try:
            result["versions"][pkg] = version(pkg)
        except Exception:
            result["versions"][pkg] = None
    json.dump(result, sys.stdout)


if __name__ == "__main__":
    main()
