"""From sample rows to the figures: report.json rows, the benchmarks x checkpoints table (terminal and markdown)
and a plot. Every figure is computed from the sample rows only, so samples.jsonl recomputes all of them."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ringctl.eval.metrics import ifeval_levels, majority_correct, summarise

REPORT = "report.json"
SAMPLES = "samples.jsonl"
TABLE_MD = "results.md"
PLOT = "results.png"


def result_row(checkpoint: str, checkpoint_path: str, bench_info: dict, samples: list[dict],
               samples_path: str) -> dict:
    """One report row for (checkpoint, benchmark) from that pair's sample rows."""
    n, kind = bench_info["n"], bench_info["kind"]
    by_problem: dict[str, list[dict]] = defaultdict(list)
    for s in samples:
        by_problem[s["problem_id"]].append(s)
    for rows in by_problem.values():
        rows.sort(key=lambda s: s["sample"])
    scores = {pid: [float(s["score"]) for s in rows] for pid, rows in by_problem.items()}
    row: dict[str, Any] = {"checkpoint": checkpoint, "benchmark": bench_info["name"], "n": n,
                           **summarise(scores, n, bench_info["ks"]), "samples": samples_path,
                           "checkpoint_path": checkpoint_path, "domain": bench_info["domain"]}
    if kind == "answer":
        row[f"maj@{n}"] = sum(majority_correct([s["extracted"] for s in rows], [s["score"] for s in rows])
                              for rows in by_problem.values()) / len(by_problem)
    if kind == "ifeval":
        strict = ifeval_levels([s["instructions"] for s in samples], [s["score"] for s in samples])
        loose = ifeval_levels([s["instructions_loose"] for s in samples], [s["loose_score"] for s in samples])
        row["ifeval"] = {"prompt_level_strict": strict[0], "inst_level_strict": strict[1],
                         "prompt_level_loose": loose[0], "inst_level_loose": loose[1]}
    row["mean_response_tokens"] = sum(s["response_tokens"] for s in samples) / len(samples)
    row["truncated"] = sum(not s["finished"] for s in samples) / len(samples)  # cut at max_new_tokens
    row["sampling"] = dict(bench_info["sampling"])
    if samples and "max_new_tokens" in samples[0]:  # capped to the model's context window where needed
        row["sampling"]["max_new_tokens"] = samples[0]["max_new_tokens"]
    return row


def bench_info(bench) -> dict:
    spec = bench.spec
    return {"name": bench.name, "n": spec.n, "ks": spec.ks(), "kind": bench.kind,
            "domain": ",".join(sorted({p["domain"] for p in bench.problems})),
            "sampling": {"temperature": spec.temperature, "top_p": spec.top_p, "max_new_tokens": spec.max_new_tokens,
                         "seed": None}}


def build_rows(samples: list[dict], checkpoints: list[tuple[str, str]], infos: list[dict], samples_path: str,
               seeds: dict[str, int]) -> list[dict]:
    """Report rows, checkpoint by checkpoint in the given order, benchmarks in the given order."""
    grouped: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for s in samples:
        grouped[(s["checkpoint"], s["benchmark"])].append(s)
    rows = []
    for label, path in checkpoints:
        for info in infos:
            info = {**info, "sampling": {**info["sampling"], "seed": seeds[info["name"]]}}
            rows.append(result_row(label, path, info, grouped[(label, info["name"])], samples_path))
    return rows


def average_rows(rows: list[dict], averages: dict[str, list[str]]) -> list[dict]:
    """For each checkpoint of `rows` and each average {name: [benchmark, ...]}: a row with the mean pass@1 of those
    benchmarks (each benchmark counts once, whatever its size, as papers average theirs) and the standard error of
    that mean, sqrt(sum se_b^2) / count (the benchmarks' problems are independent). Marked by `average_of`."""
    cell = {(r["checkpoint"], r["benchmark"]): r for r in rows}
    out = []
    for checkpoint in dict.fromkeys(r["checkpoint"] for r in rows):
        for name, parts in averages.items():
            got = [cell.get((checkpoint, b)) for b in parts]
            if any(r is None for r in got):
                continue
            out.append({"checkpoint": checkpoint, "benchmark": name, "average_of": list(parts),
                        "pass@1": sum(r["pass@1"] for r in got) / len(got),
                        "stderr": math.sqrt(sum(r["stderr"] ** 2 for r in got)) / len(got),
                        "num_problems": sum(r["num_problems"] for r in got)})
    return out


# ----------------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------------

def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    return f"{100 * row['pass@1']:.1f} ± {100 * row['stderr']:.1f}"


def _grid(results: list[dict]) -> tuple[list[str], list[str], dict[tuple[str, str], dict]]:
    checkpoints = list(dict.fromkeys(r["checkpoint"] for r in results))
    benchmarks = list(dict.fromkeys(r["benchmark"] for r in results))
    return checkpoints, benchmarks, {(r["benchmark"], r["checkpoint"]): r for r in results}


def _bench_label(rows: list[dict]) -> str:
    r = rows[0]
    if "average_of" in r:
        return f"{r['benchmark']} (mean of {len(r['average_of'])})"
    return f"{r['benchmark']} (n={r['n']}, {r['num_problems']})"


def _headers(benchmarks: list[str], cell: dict) -> list[str]:
    return [_bench_label([r for (b, _), r in cell.items() if b == bench]) for bench in benchmarks]


def table(results: list[dict], title: str | None = None):
    """Checkpoints x benchmarks: a row per checkpoint (in the order evaluated), pass@1 in percent ± its standard
    error over problems (ringctl.display.TableDoc; every column folds in a narrow terminal). A row per checkpoint
    keeps the table narrow when a run lists every SFT epoch."""
    from ringctl.display import TableDoc

    checkpoints, benchmarks, cell = _grid(results)
    rows = [[c, *(_cell(cell.get((b, c))) for b in benchmarks)] for c in checkpoints]
    return TableDoc(title=title or "pass@1 (%) ± standard error over problems",
                    columns=[("checkpoint", "left"), *((h, "right") for h in _headers(benchmarks, cell))], rows=rows,
                    label_column=True)


def markdown(results: list[dict], overlap: dict | None = None, title: str = "Evaluation") -> str:
    checkpoints, benchmarks, cell = _grid(results)
    lines = [f"# {title}", "", "pass@1 (%) over n samples per problem, ± standard error over problems.", "",
             "| checkpoint | " + " | ".join(_headers(benchmarks, cell)) + " |",
             "|---|" + "---:|" * len(benchmarks)]
    for c in checkpoints:
        lines.append(f"| {c} | " + " | ".join(_cell(cell.get((b, c))) for b in benchmarks) + " |")
    lines += ["", "## All figures", "",
              "| checkpoint | benchmark | n | problems | pass@1 | stderr | pass@k | maj@n | other |",
              "|---|---|---:|---:|---:|---:|---|---:|---|"]
    for r in results:
        if "average_of" in r:
            lines.append(f"| {r['checkpoint']} | {r['benchmark']} (mean of {', '.join(r['average_of'])}) | - | "
                         f"{r['num_problems']} | {r['pass@1']:.3f} | {r['stderr']:.3f} | - | - | - |")
            continue
        passk = ", ".join(f"@{k} {v:.3f}" for k, v in r["pass@k"].items())
        maj = r.get(f"maj@{r['n']}")
        other = ", ".join(f"{k} {v:.3f}" for k, v in (r.get("ifeval") or {}).items())
        other = "; ".join(x for x in (other, f"truncated {r['truncated']:.2f}",
                                      f"mean tokens {r['mean_response_tokens']:.0f}") if x)
        lines.append(f"| {r['checkpoint']} | {r['benchmark']} | {r['n']} | {r['num_problems']} | {r['pass@1']:.3f} "
                     f"| {r['stderr']:.3f} | {passk} | {'-' if maj is None else f'{maj:.3f}'} | {other} |")
    if overlap:
        lines += ["", "## Overlap with this run's training data", ""]
        for name, o in overlap.items():
            lines.append(f"- {name}: {o['problems']} of {o['of']} problems overlap"
                         + (f" (e.g. {o['examples'][0]['problem_id']} ~ {o['examples'][0]['training_id']})"
                            if o["examples"] else ""))
    return "\n".join(lines) + "\n"


def plot(results: list[dict], path: Path) -> Path:
    """Grouped bars: pass@1 per benchmark, one bar per checkpoint, with standard-error whiskers."""
    from ringctl.plotting import axes, save

    checkpoints, benchmarks, cell = _grid(results)
    width = 0.8 / max(len(checkpoints), 1)
    fig, ax = axes((max(5.0, 1.4 * len(benchmarks) + 2), 4))
    for i, c in enumerate(checkpoints):
        xs = [j + (i - (len(checkpoints) - 1) / 2) * width for j in range(len(benchmarks))]
        ys = [100 * cell[(b, c)]["pass@1"] if (b, c) in cell else 0.0 for b in benchmarks]
        es = [100 * cell[(b, c)]["stderr"] if (b, c) in cell else 0.0 for b in benchmarks]
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=c)
    ax.set_xticks(range(len(benchmarks)))
    ax.set_xticklabels(benchmarks)
    ax.set_ylabel("pass@1 (%)")
    ax.set_ylim(0, 100)
    ax.set_title("pass@1 by checkpoint (± standard error)")
    ax.legend(fontsize=8)
    return save(fig, path)


def write_outputs(out_dir: Path, samples: list[dict], rows: list[dict], extra: dict[str, Any]) -> dict[str, Path]:
    """samples.jsonl, report.json ({"results": rows, ...extra}), results.md and results.png under out_dir."""
    from ringctl import artifacts

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    artifacts.atomic_write_text(out_dir / SAMPLES, "".join(json.dumps(s, ensure_ascii=False) + "\n"
                                                           for s in samples))
    artifacts.atomic_write_json(out_dir / REPORT, {"results": rows, **extra})
    artifacts.atomic_write_text(out_dir / TABLE_MD, markdown(rows, extra.get("overlap")))
    paths = {"samples": out_dir / SAMPLES, "report": out_dir / REPORT, "table": out_dir / TABLE_MD}
    paths["plot"] = plot(rows, out_dir / PLOT)
    return paths
