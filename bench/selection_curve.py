"""Which SFT epoch is the best place to start RL? The Ring-lite paper's Fig. 9 in miniature, on the tiny default:
reasoning RL from EVERY SFT epoch checkpoint, held-out pass@1 against SFT tokens for each RL budget, and where the
checkpoint that the recipe's `select` stage chose ends among them.

    python bench/selection_curve.py [--seeds 1234,7] [--epochs 6] [--rl-steps 120] [--eval-every 40]
                                    [--out DIR] [--workdir DIR] [--json] [OVERRIDES ...]

For each seed, through the real `ringctl run` (all runs of the bench share one workdir and MLflow store, so the
stages that do not change are taken from ringctl's cache):
  1. the recipe up to its select_sft stage (`seed=S`, `stages.<sft>.epochs=E`, every stage that the selection does
     not need removed with `~stages.<name>`): the epoch checkpoints, each with its cumulative SFT tokens, and the
     selection report (entropy, probe accuracy, probe gain, probe RL tokens, token efficiency; the chosen epoch);
  2. for each epoch N: the same recipe with the reasoning-RL stage (the rl stage whose init is
     `<select>.checkpoint`) kept, `--rl-steps` / `--eval-every` applied, and the select stage made to hand over
     epoch N with the options it has: `metric: entropy` picks the candidate whose entropy is closest to the centre
     of `entropy_band`, and the band is set to [entropy of N, entropy of N] as step 1 measured it (`probe_steps: 0`:
     the entropy is measured the same way, on the same seeded prompts and samples). An rl stage's `init` takes only
     a stage reference, so this is how a recipe starts RL from a chosen epoch without new CLI features; the bench
     checks that the stage did choose epoch N and stops otherwise.
The RL stage logs held-out pass@1 (`eval/reward`, its standard error over prompts `eval/reward_stderr`) at step 0
(the SFT checkpoint itself), every `eval_every` steps and at the end, and `train/tokens` (tokens in the loss) every
step; the bench sums the latter into the RL tokens trained so far. Token efficiency = RL tokens / SFT tokens.
A stage's fingerprint includes its code: run the bench on a tree that nobody edits meanwhile (else the SFT stage is
trained again for every epoch, possibly by other code than the one the selection measured).

Output (`--out DIR`, default a new temporary folder; `--json` also prints it as the last line): selection_curve.json
and one plot per seed, selection_curve_seed<S>.png: pass@1 against SFT tokens, one line per RL evaluation step (the
RL budget), each point labelled with its token efficiency, the epoch that `select` chose marked. "best epoch" is the
epoch whose RL ends highest; the chosen epoch is "within 1 SE" when its end is at most the best end's standard error
below it. "ringctl" is the chosen epoch's end (mean over seeds), the anchor "best_epoch_end" the best's, "ratio"
their quotient.
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
sys.path.insert(0, str(REPO))

from bench.tiny_learning import heldout_curve  # noqa: E402


# ----------------------------------------------------------------------------------------------------------------
# pure parts: which stages, which overrides, what the metrics say
# ----------------------------------------------------------------------------------------------------------------
def stage_roles(stages: dict) -> dict:
    """{"select", "sft", "rl", "drop_select", "drop_rl"} for a recipe's stage configs (name -> config with `kind`
    and its stage references): the select_sft stage, the SFT stage whose checkpoints it ranks, the rl stage that
    starts from its checkpoint, and the stages that neither the selection (drop_select) nor that RL (drop_rl)
    needs, to be removed from the runs."""
    from ringctl.recipe.dag import dependencies

    selects = [n for n, c in stages.items() if c.kind == "select_sft"]
    if len(selects) != 1:
        raise ValueError(f"the recipe needs exactly one select_sft stage, it has {len(selects)}: {selects}")
    select = selects[0]
    rls = [n for n, c in stages.items() if c.kind == "rl" and str(c.init) == f"{select}.checkpoint"]
    if not rls:
        raise ValueError(f"no rl stage starts from {select}.checkpoint (init: {select}.checkpoint)")

    def needed(names: list[str]) -> set[str]:
        seen, todo = set(), list(names)
        while todo:
            name = todo.pop()
            if name not in seen:
                seen.add(name)
                todo += dependencies(stages[name])
        return seen

    keep_select, keep_rl = needed([select]), needed([select, rls[0]])
    return {"select": select, "sft": str(stages[select].checkpoints.stage), "rl": rls[0],
            "drop_select": [n for n in stages if n not in keep_select],
            "drop_rl": [n for n in stages if n not in keep_rl]}


def selection_overrides(roles: dict, seed: int, epochs: int | None) -> list[str]:
    """Step 1's overrides: the seed, the SFT epochs, the stages the selection does not need removed."""
    out = [f"seed={seed}"] + ([f"stages.{roles['sft']}.epochs={epochs}"] if epochs else [])
    return out + [f"~stages.{name}" for name in roles["drop_select"]]


def start_from_epoch_overrides(roles: dict, seed: int, epochs: int | None, entropy: float, rl_steps: int | None,
                               eval_every: int | None) -> list[str]:
    """Step 2's overrides for one epoch: select hands over the candidate whose entropy is `entropy` (metric
    entropy, a band of that one value, no probe), the RL stage is kept with the bench's steps."""
    sel, rl = f"stages.{roles['select']}", f"stages.{roles['rl']}"
    out = [f"seed={seed}"] + ([f"stages.{roles['sft']}.epochs={epochs}"] if epochs else [])
    out += [f"~stages.{name}" for name in roles["drop_rl"]]
    out += [f"{sel}.metric=entropy", f"{sel}.entropy_band=[{entropy!r},{entropy!r}]", f"{sel}.probe_steps=0"]
    out += [f"{rl}.steps={rl_steps}"] if rl_steps else []
    return out + ([f"{rl}.eval_every={eval_every}"] if eval_every else [])


def rl_points(curve: list[dict], rows: list[dict], sft_tokens: int) -> list[dict]:
    """The RL stage's held-out evaluations (`curve`: bench/tiny_learning.py's heldout_curve, [{step, reward,
    stderr}]) with the RL tokens trained up to each (the sum of `train/tokens` over the metrics `rows` up to that
    step): [{step, rl_tokens, pass1, stderr, token_efficiency}]."""
    tokens_at, total = {}, 0
    for row in sorted((r for r in rows if "train/tokens" in r), key=lambda r: r["step"]):
        total += int(row["train/tokens"])
        tokens_at[row["step"]] = total
    points = []
    for ev in curve:
        rl_tokens = tokens_at.get(ev["step"], 0)
        points.append({"step": ev["step"], "rl_tokens": rl_tokens, "pass1": round(ev["reward"], 4),
                       "stderr": round(ev["stderr"], 4), "token_efficiency": round(rl_tokens / sft_tokens, 4)})
    return points


def verdict(epochs: list[dict], chosen_epoch: int) -> dict:
    """The best epoch after RL (highest held-out pass@1 at the RL stage's last evaluation) and whether the chosen
    epoch ends within the best end's standard error of it. `epochs`: [{"epoch", "rl": [points]}]."""
    ends = {e["epoch"]: e["rl"][-1] for e in epochs}
    best = max(ends, key=lambda n: ends[n]["pass1"])
    chosen, top = ends[chosen_epoch], ends[best]
    gap = top["pass1"] - chosen["pass1"]
    both = math.hypot(top["stderr"], chosen["stderr"])
    return {"chosen_epoch": chosen_epoch, "chosen_end": chosen["pass1"], "chosen_end_stderr": chosen["stderr"],
            "best_epoch": best, "best_end": top["pass1"], "best_end_stderr": top["stderr"],
            "gap": round(gap, 4), "gap_in_combined_se": round(gap / both, 2) if both else None,
            "chosen_within_1se": gap <= top["stderr"]}


# ----------------------------------------------------------------------------------------------------------------
# running ringctl
# ----------------------------------------------------------------------------------------------------------------
def ringctl_run(recipe: Path, overrides: list[str], work: Path, what: str) -> dict:
    """One `ringctl run --json` in `work` (runs/ and mlflow.db there): its JSON document, stages by name."""
    proc = subprocess.run([sys.executable, "-m", "ringctl", "run", str(recipe), *overrides, "--json",
                           "--workdir", str(work / "runs"), "--tracking-uri", f"sqlite:///{work}/mlflow.db"],
                          cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{what}: ringctl run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    doc = json.loads(proc.stdout)
    doc["by_name"] = {s["name"]: s for s in doc["stages"]}
    return doc


def read_rows(stage_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def run_seed(args, roles: dict, seed: int, work: Path) -> dict:
    t0 = time.perf_counter()
    doc = ringctl_run(args.recipe, selection_overrides(roles, seed, args.epochs) + args.overrides, work,
                      f"seed {seed}, SFT + selection")
    report = json.loads(Path(doc["by_name"][roles["select"]]["outputs"]["report"]).read_text())
    chosen = next(c["epoch"] for c in report["candidates"] if c["checkpoint"] == report["selected"])
    _say(f"seed {seed}: SFT + selection in {time.perf_counter() - t0:.0f} s; {report['metric']} chose "
               f"epoch {chosen} of {len(report['candidates'])}")
    epochs = []
    for cand in report["candidates"]:
        t1 = time.perf_counter()
        run = ringctl_run(args.recipe, start_from_epoch_overrides(roles, seed, args.epochs, cand["entropy"],
                                                                  args.rl_steps, args.eval_every) + args.overrides,
                          work, f"seed {seed}, RL from epoch {cand['epoch']}")
        picked = json.loads(Path(run["by_name"][roles["select"]]["outputs"]["report"]).read_text())["selected"]
        if Path(picked).name != Path(cand["checkpoint"]).name:
            sys.exit(f"seed {seed}: the select stage set to entropy {cand['entropy']!r} handed over {picked}, not "
                     f"epoch {cand['epoch']}: the entropy measurement did not repeat; no RL curve for this epoch")
        rl_dir = Path(run["by_name"][roles["rl"]]["outputs"]["checkpoints"]).parents[1]
        points = rl_points(heldout_curve(rl_dir), read_rows(rl_dir), cand["sft_tokens"])
        epochs.append({"epoch": cand["epoch"], "sft_tokens": cand["sft_tokens"], "entropy": round(cand["entropy"], 5),
                       "probe_accuracy": round(cand["accuracy"], 4), "probe_reward_gain": cand["reward_gain"],
                       "probe_rl_tokens": cand["rl_tokens"], "probe_token_efficiency": cand["token_efficiency"],
                       "rl_run_id": run["run_id"], "rl_wall_s": round(time.perf_counter() - t1, 1), "rl": points})
        _say(f"seed {seed} epoch {cand['epoch']}: pass@1 " + ", ".join(
            f"{p['pass1']:.3f}±{p['stderr']:.3f}@{p['rl_tokens']}" for p in points)
            + f" in {time.perf_counter() - t1:.0f} s")
    row = {"seed": seed, "selection_run_id": doc["run_id"], "metric": report["metric"],
           "entropy_band": report.get("entropy_band"), "epochs": epochs, **verdict(epochs, chosen)}
    row["wall_s"] = round(time.perf_counter() - t0, 1)
    row["plot"] = str(plot(row, args.out / f"selection_curve_seed{seed}.png"))
    return row


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# the figure
# ----------------------------------------------------------------------------------------------------------------
def plot(row: dict, path: Path) -> Path:
    """Held-out pass@1 against SFT tokens, one line per RL evaluation step, points labelled with token efficiency,
    the chosen epoch circled."""
    from ringctl.plotting import axes, save

    fig, ax = axes((7.5, 4.8))
    epochs = row["epochs"]
    xs = [e["sft_tokens"] for e in epochs]
    for i, step in enumerate(sorted({p["step"] for e in epochs for p in e["rl"]})):
        pts = [next((p for p in e["rl"] if p["step"] == step), None) for e in epochs]
        if any(p is None for p in pts):
            continue
        mean_tokens = statistics.fmean(p["rl_tokens"] for p in pts)
        label = "SFT only (RL step 0)" if step == 0 else f"RL step {step} (~{mean_tokens / 1e3:.0f}k RL tokens)"
        ax.errorbar(xs, [p["pass1"] for p in pts], yerr=[p["stderr"] for p in pts], fmt="o-" if step else "o--",
                    capsize=3, label=label, color=f"C{i}")
        for x, p in zip(xs, pts):
            if step:
                ax.annotate(f"{p['token_efficiency']:.2f}", (x, p["pass1"]), textcoords="offset points",
                            xytext=(4, 4), fontsize=7, color=f"C{i}")
    chosen = next(e for e in epochs if e["epoch"] == row["chosen_epoch"])
    ax.axvline(chosen["sft_tokens"], color="red", ls=":", lw=1)
    end = chosen["rl"][-1]
    ax.scatter([chosen["sft_tokens"]], [end["pass1"]], s=220, facecolors="none", edgecolors="red",
               label=f"select-sft chose epoch {row['chosen_epoch']} ({row['metric']})", zorder=5)
    for x, e in zip(xs, epochs):
        ax.annotate(f"ep{e['epoch']}", (x, 0), xycoords=("data", "axes fraction"), textcoords="offset points",
                    xytext=(0, 3), fontsize=7, ha="center", color="gray")
    ax.set_xlabel("SFT training tokens")
    ax.set_ylabel("held-out pass@1 (± SE)")
    ax.set_title(f"RL from every SFT epoch, seed {row['seed']} (labels: token efficiency = RL / SFT tokens)",
                 fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save(fig, path)


# ----------------------------------------------------------------------------------------------------------------
def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--recipe", type=Path, default=REPO / "recipes" / "tiny.yaml")
    ap.add_argument("--seeds", default="1234", help="comma-separated recipe seeds")
    ap.add_argument("--epochs", type=int, help="SFT epochs (default: the recipe's)")
    ap.add_argument("--rl-steps", type=int, help="RL steps from every epoch (default: the recipe's)")
    ap.add_argument("--eval-every", type=int, help="held-out evaluation every N RL steps (default: the recipe's)")
    ap.add_argument("--out", type=Path, help="where selection_curve.json and the plots go (default: a new temp dir)")
    ap.add_argument("--workdir", type=Path, help="ringctl's runs and MLflow store, kept (default: a temporary "
                    "folder, removed at the end)")
    ap.add_argument("--json", action="store_true", help="print the JSON document as the last line")
    ap.add_argument("overrides", nargs="*", help="recipe overrides passed to every run (key=value)")
    args = ap.parse_args(argv)
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        ap.error(f"--seeds must be comma-separated integers, got {args.seeds!r}")
    for name in ("epochs", "rl_steps", "eval_every"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if not args.seeds:
        ap.error("--seeds names no seed")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from ringctl.recipe.loader import RecipeError, load_recipe

    try:
        roles = stage_roles(load_recipe(args.recipe, args.overrides).recipe.stages)
    except (RecipeError, ValueError) as e:
        print(f"{args.recipe}: {e}", file=sys.stderr)
        sys.exit(2)
    args.out = (args.out or Path(tempfile.mkdtemp(prefix="ringctl-selection-curve-"))).resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ringctl-selection-curve-work-") as tmp:
        work = (args.workdir or Path(tmp)).resolve()
        work.mkdir(parents=True, exist_ok=True)
        rows = [run_seed(args, roles, seed, work) for seed in args.seeds]
    chosen = statistics.fmean(r["chosen_end"] for r in rows)
    best = statistics.fmean(r["best_end"] for r in rows)
    result = {"bench": "selection_curve", "metric": "heldout_pass1_after_rl_from_selected_epoch",
              "ringctl": round(chosen, 4), "best_epoch_end": round(best, 4),
              "ratio": round(chosen / best, 3) if best else None,
              "chosen_within_1se_all_seeds": all(r["chosen_within_1se"] for r in rows),
              "wall_s": round(time.perf_counter() - t0, 1), "recipe": str(args.recipe), "roles": roles,
              "epochs": args.epochs, "rl_steps": args.rl_steps, "eval_every": args.eval_every,
              "overrides": args.overrides, "seeds": rows}
    (args.out / "selection_curve.json").write_text(json.dumps(result, indent=2) + "\n")
    _say(f"wrote {args.out / 'selection_curve.json'} and {len(rows)} plot(s) in {result['wall_s']:.0f} s")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
