"""Does the tiny default learn? recipes/tiny.yaml end to end for several seeds: held-out accuracy before and after
reasoning RL, each with its standard error over prompts, and the gain in standard errors; and the evaluate stage's
held-out rows: is the pipeline's last checkpoint the best, and by how many standard errors over the next best
(`final_margin_in_stderr`; `final_over_sft_in_stderr` against the best SFT row: every `sft.*` checkpoint the table
lists, each SFT epoch in the tiny recipe). The claim is read on `heldout_mean` (the tiny recipe's mean over its
held-out reasoning and instruction-following benchmarks) where the table has it, else on `heldout`; every held-out
row's margins are under `evaluations`.

    python bench/tiny_learning.py [--seeds 1234,7,99] [--recipe recipes/tiny.yaml] [--json] [OVERRIDES ...]

Each seed is one `ringctl run RECIPE seed=S` in a temporary working directory (sqlite MLflow store there), so the
seed changes the synthetic data, the model's initialisation and every sampling draw. "Before" is the RL stage's
held-out evaluation at step 0 (the selected SFT checkpoint), "after" the one at its last step: pass@1 over the
recipe's `eval_samples` samples per held-out prompt, at the RL sampling temperature. The gain's standard error is
sqrt(se_before^2 + se_after^2) (the two evaluations are treated as independent, which overstates the noise of a
paired comparison on the same prompts). "ratio" is mean accuracy after RL / before RL over the seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELDOUT_ROWS = ("heldout_mean", "heldout", "heldout_if")  # the first one the evaluation has carries the claim


def heldout_curve(stage_dir: Path) -> list[dict]:
    """[{step, reward, stderr}] of a finished RL stage's held-out evaluations, in step order."""
    rows = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    return [{"step": r["step"], "reward": r["eval/reward"], "stderr": r.get("eval/reward_stderr", float("nan"))}
            for r in rows if "eval/reward" in r]


def final_against_the_rest(stages: dict, benchmark: str = "heldout") -> dict:
    """The evaluate stage's table on `benchmark`: pass@1 ± SE of every checkpoint it lists, and how far the last one
    (the pipeline's product) is above the best of the others, in standard errors of the difference
    (sqrt(se_final^2 + se_other^2), the evaluations treated as independent), and above the best SFT checkpoint
    (rows labelled sft.*, e.g. sft.checkpoints/epoch-3; the first row when none is). {} when the recipe has no
    evaluate stage."""
    ev = next((s for s in stages.values() if s["kind"] == "evaluate" and s.get("outputs", {}).get("report")), None)
    if ev is None:
        return {}
    rows = [r for r in json.loads(Path(ev["outputs"]["report"]).read_text())["results"] if r["benchmark"] == benchmark]
    if len(rows) < 2:
        return {}
    table = {r["checkpoint"]: {"pass@1": round(r["pass@1"], 4), "stderr": round(r["stderr"], 4)} for r in rows}
    final, others = rows[-1], rows[:-1]
    margins = {r["checkpoint"]: (final["pass@1"] - r["pass@1"]) / (math.hypot(final["stderr"], r["stderr"]) or 1e-12)
               for r in others}
    closest = min(margins, key=margins.get)
    sft = [c for c in margins if c.split(".")[0] == "sft"] or [others[0]["checkpoint"]]
    closest_sft = min(sft, key=margins.get)
    return {"evaluation": table, "final_checkpoint": final["checkpoint"], "closest_other": closest,
            "final_margin_in_stderr": round(margins[closest], 2), "closest_sft": closest_sft,
            "final_over_sft_in_stderr": round(margins[closest_sft], 2)}


def held_out_claim(stages: dict) -> dict:
    """final_against_the_rest for every held-out row the evaluation has (`evaluations`), the claim's fields at the top
    level from the first of HELDOUT_ROWS present (`claim_benchmark`); {} without an evaluation."""
    evaluations = {b: m for b in HELDOUT_ROWS if (m := final_against_the_rest(stages, b))}
    claim = next((b for b in HELDOUT_ROWS if b in evaluations), None)
    return {"claim_benchmark": claim, **evaluations[claim], "evaluations": evaluations} if claim else {}


def run_seed(recipe: Path, seed: int, overrides: list[str], workdir: Path) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ringctl", "run", str(recipe), f"seed={seed}", *overrides,
                           "--json", "--workdir", str(workdir / "runs"),
                           "--tracking-uri", f"sqlite:///{workdir}/mlflow.db"],
                          cwd=workdir, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"seed {seed}: ringctl run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    stages = {s["name"]: s for s in doc["stages"]}
    rl = [s for s in doc["stages"] if s["kind"] == "rl"][0]
    curve = heldout_curve(workdir / "runs" / doc["run_id"] / rl["name"])
    before, after = curve[0], curve[-1]
    gain = after["reward"] - before["reward"]
    se = math.hypot(before["stderr"], after["stderr"])
    return {"seed": seed, "run_id": doc["run_id"], "wall_s": round(wall, 1), "rl_stage": rl["name"],
            **held_out_claim(stages),
            "before": round(before["reward"], 4), "before_stderr": round(before["stderr"], 4),
            "after": round(after["reward"], 4), "after_stderr": round(after["stderr"], 4),
            "gain": round(gain, 4), "gain_stderr": round(se, 4), "gain_in_stderr": round(gain / se, 2) if se else None,
            "curve": curve, "stages": {n: s["status"] for n, s in stages.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", default=str(REPO / "recipes" / "tiny.yaml"))
    ap.add_argument("--seeds", default="1234,7,99", help="comma-separated recipe seeds")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("overrides", nargs="*", help="recipe overrides passed to every run (key=value)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    rows = []
    for seed in [int(s) for s in args.seeds.split(",") if s]:
        with tempfile.TemporaryDirectory(prefix="ringctl-tiny-learning-") as tmp:
            row = run_seed(Path(args.recipe), seed, args.overrides, Path(tmp))
        rows.append(row)
        if not args.json:
            print(f"seed {seed}: held-out {row['before']:.3f} ± {row['before_stderr']:.3f} -> {row['after']:.3f} ± "
                  f"{row['after_stderr']:.3f} (gain {row['gain']:+.3f}, {row['gain_in_stderr']} SE) in "
                  f"{row['wall_s']:.0f} s", file=sys.stderr, flush=True)
            for bench, ev in row.get("evaluations", {}).items():
                cells = ", ".join(f"{c} {v['pass@1']:.3f} ± {v['stderr']:.3f}" for c, v in ev["evaluation"].items())
                print(f"  evaluate ({bench} pass@1): {cells}; {ev['final_checkpoint']} above the best other "
                      f"({ev['closest_other']}) by {ev['final_margin_in_stderr']} SE, above the best SFT checkpoint "
                      f"({ev['closest_sft']}) by {ev['final_over_sft_in_stderr']} SE", file=sys.stderr, flush=True)
    before = statistics.fmean(r["before"] for r in rows)
    after = statistics.fmean(r["after"] for r in rows)
    result = {"bench": "tiny_learning", "metric": "heldout_accuracy_after_rl", "ringctl": round(after, 4),
              "before_rl": round(before, 4), "ratio": round(after / before, 2) if before else None,
              "min_gain": min(r["gain"] for r in rows), "min_gain_in_stderr": min(r["gain_in_stderr"] or 0 for r in rows),
              "min_final_margin_in_stderr": min((r["final_margin_in_stderr"] for r in rows
                                                 if "final_margin_in_stderr" in r), default=None),
              "min_final_over_sft_in_stderr": min((r["final_over_sft_in_stderr"] for r in rows
                                                   if "final_over_sft_in_stderr" in r), default=None),
              "seeds": rows, "recipe": str(args.recipe), "overrides": args.overrides}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
