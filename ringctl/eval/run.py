"""The evaluation loop the evaluate stage and `ringctl eval` share: for each checkpoint, load it once, sample and
score every benchmark, then compute the figures from the sample rows and write them out."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ringctl.eval import report
from ringctl.eval.benchmarks import Benchmark
from ringctl.eval.sampling import sample_benchmark
from ringctl.rollout.generation import EngineSettings, Generator


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def evaluate_checkpoints(checkpoints: list[tuple[str, Path]], benchmarks: list[Benchmark], model_cfg: Any,
             settings: EngineSettings, run_seed: int, out_dir: Path, *, extra: dict | None = None,
             averages: dict[str, list[str]] | None = None,
             on_checkpoint: Callable[[int, str, list[dict]], None] | None = None,
             should_stop: Callable[[], bool] | None = None, log: Callable[[str], None] = _log
             ) -> tuple[list[dict], dict[str, Path]] | None:
    """Evaluate every (label, checkpoint directory) on every benchmark; returns (report rows, output paths), or
    None when should_stop() asked to stop (nothing is written then). Two labels naming the same directory (e.g.
    sft.final and select.checkpoint when the last epoch is selected) are sampled once and reported under both.
    Data parallel: every rank of the stage calls it, loads each checkpoint into its own engine and samples its share
    of every benchmark (sample_benchmark); rank 0 alone logs, reports and writes (other ranks get paths {}).
    `averages` ({name: [benchmark, ...]}) adds rows of mean pass@1 over benchmarks (report.average_rows)."""
    from ringctl.dist import all_gather_objects, rank_and_world

    main = rank_and_world()[0] == 0
    averages = averages or {}
    if not main:
        log, on_checkpoint = (lambda m: None), None
    samples: list[dict] = []
    infos = [report.bench_info(b) for b in benchmarks]
    seeds = {b.name: b.spec.sampling_seed(run_seed) for b in benchmarks}
    samples_path = str((Path(out_dir) / report.SAMPLES).absolute())
    done: dict[Path, list[dict]] = {}
    for i, (label, path) in enumerate(checkpoints):
        key = Path(path).resolve()
        if key not in done:
            t0 = time.perf_counter()
            gen = Generator.load(Path(path), model_cfg, settings)
            rows = []
            try:
                for bench in benchmarks:
                    if should_stop is not None and any(all_gather_objects(bool(should_stop()))):
                        return None  # all ranks at once (the next share is a collective)
                    t1 = time.perf_counter()
                    got = sample_benchmark(gen, bench, run_seed)
                    rows += got
                    solved = sum(s["score"] for s in got) / max(len(got), 1)
                    log(f"[eval] {label}: {bench.name} {len(bench.problems)} problems x {bench.spec.n}: "
                        f"pass@1 {solved:.3f} ({time.perf_counter() - t1:.1f}s)")
            finally:
                gen.close()
            done[key] = rows
            log(f"[eval] {label} ({path}) done in {time.perf_counter() - t0:.1f}s")
        else:
            log(f"[eval] {label}: same checkpoint as an earlier label ({path}); its samples are reused")
        mine = [{"checkpoint": label, **s} for s in done[key]]
        samples += mine
        if on_checkpoint is not None:
            rows_now = report.build_rows(mine, [(label, str(path))], infos, samples_path, seeds)
            on_checkpoint(i, label, rows_now + report.average_rows(rows_now, averages))
    rows = report.build_rows(samples, [(label, str(path)) for label, path in checkpoints], infos, samples_path,
                             seeds)
    rows += report.average_rows(rows, averages)
    paths = report.write_outputs(Path(out_dir), samples, rows, dict(extra or {})) if main else {}
    return rows, paths


def metric_key(name: str) -> str:
    """MLflow accepts only alphanumerics, _ - . space : / in metric names: pass@1 is logged as pass_at_1."""
    name = name.replace("@", "_at_")
    return re.sub(r"[^A-Za-z0-9_\-. :/]", "_", name)


def metrics_for_tracking(rows: list[dict]) -> dict[str, float]:
    """MLflow metrics of one checkpoint's rows: eval/<benchmark>/pass@1 (logged as pass_at_1), .../stderr,
    .../pass@k for k > 1, .../maj@n and the IFEval levels."""
    out: dict[str, float] = {}
    for r in rows:
        b = r["benchmark"]
        out[f"eval/{b}/pass@1"] = r["pass@1"]
        out[f"eval/{b}/stderr"] = r["stderr"]
        if "average_of" in r:
            continue
        for k, v in r["pass@k"].items():
            if k != "1":
                out[f"eval/{b}/pass@{k}"] = v
        if f"maj@{r['n']}" in r:
            out[f"eval/{b}/maj@{r['n']}"] = r[f"maj@{r['n']}"]
        for k, v in (r.get("ifeval") or {}).items():
            out[f"eval/{b}/{k}"] = v
    return {metric_key(k): v for k, v in out.items()}
