"""evaluate: every listed checkpoint on every benchmark, one table that shows what each stage bought.

    ringctl run recipes/tiny.yaml            # ... -> reasoning_rl -> evaluate
    ringctl eval --run <run-id>              # the table of a finished run again
    ringctl eval CKPT --benchmarks gsm8k     # the same evaluation from the command line (ringctl/eval/)

Setup: load and check every benchmark (presets over the shipped files, files with a field mapping, or
records of another stage) and report its overlap with this run's training data -> for each checkpoint: n samples
per problem (HF generate or vLLM, seeded per (problem, sample)), scored by the RL verifiers -> report.json rows
{checkpoint, benchmark, n, num_problems, pass@1, pass@k, stderr, samples}, samples.jsonl, results.md, results.png,
MLflow metrics eval/<benchmark>/pass_at_1 (one step per checkpoint, in the order listed) and the table on the
terminal (summary.json, and summary.txt as text).

Data parallel: launched over W ranks (launch.launcher torchrun / deepspeed), every rank loads each checkpoint into
its own engine (HF, or vLLM with tensor_parallel_size ranks to an engine) and samples and scores its contiguous
share of every benchmark's problems, seeded per (problem, sample); the rows are gathered and rank 0 writes the
report, which is the same for any W.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from ringctl.eval.benchmarks import BenchmarkSpec
from ringctl.recipe.base import StageConfig, StageRef

KIND = "evaluate"
OUTPUTS = ("report", "samples", "table")
MAX_SAMPLES_ARTIFACT_BYTES = 64 << 20  # larger samples.jsonl files are not uploaded to MLflow (tag with the path)


class Config(StageConfig):
    kind: Literal["evaluate"] = "evaluate"
    checkpoints: list[StageRef] = Field(..., min_length=1, description="checkpoints to compare, in table order, e.g. "
                                        "[sft.final, select.checkpoint, reasoning_rl.final]; a directory of "
                                        "checkpoints (sft.checkpoints) stands for each of them")
    benchmarks: list[BenchmarkSpec] = Field(..., min_length=1)
    benchmarks_dir: str | None = Field(None, description="where named benchmarks' files are; default: "
                                       "$RINGCTL_BENCHMARKS_DIR, else the copies shipped with ringctl")
    training_data: list[StageRef] = Field(default_factory=list, description="this run's training records (e.g. "
                                          "filter.sft, filter.rl_reasoning): benchmark problems they contain are "
                                          "reported, as the data_filter's decontaminate step measures overlap")
    averages: dict[str, list[str]] = Field(default_factory=dict, description="extra table rows, each the mean "
                                           "pass@1 of some benchmarks (as papers average theirs), e.g. {heldout_mean: "
                                           "[heldout, heldout_if]}; standard error sqrt(sum se^2) / count")
    overlap_ngram: int = Field(13, ge=1, le=64, description="n-gram length in words for the overlap check")
    overlap_threshold: float = Field(0.5, gt=0, le=1)
    reward_workers: int = Field(2, ge=1)
    reward_timeout_s: float = Field(10.0, gt=0)
    max_batch_rows: int = Field(256, ge=1, description="HF generate: rows (problem x sample) decoded together")

    @model_validator(mode="after")
    def _unique_names(self) -> Config:
        names = [b.name for b in self.benchmarks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"benchmark names must be unique (they label the table): {dupes}")
        return self

    @field_validator("averages")
    @classmethod
    def _averages_name_benchmarks(cls, v: dict[str, list[str]], info: ValidationInfo) -> dict[str, list[str]]:
        if "benchmarks" not in info.data:
            return v  # the benchmarks have their own error; one message, not a second one here
        names = [b.name for b in info.data["benchmarks"]]
        for name, parts in v.items():
            if name in names:
                raise ValueError(f"{name}: a benchmark has that name; give the average another one")
            if any(b not in names for b in parts) or len(set(parts)) < 2:
                raise ValueError(f"{name}: an average is over two or more of this stage's benchmarks "
                                 f"({', '.join(names)}), got {parts}")
        return v

    def external_files(self) -> list[str]:
        return [str(b.file_path(self.benchmarks_dir)) for b in self.benchmarks if b.data is None]

    def external_file_location(self, file: str) -> tuple | None:
        """Where the recipe names an external file (a preset's file is named by the benchmark's `name`)."""
        for i, b in enumerate(self.benchmarks):
            if b.data is None and str(b.file_path(self.benchmarks_dir)) == file:
                return ("benchmarks", i, "path" if b.path else "name")
        return None

    def scored_domains(self) -> list[str] | None:
        """Benchmarks (files, or records an upstream stage wrote, of any domain) are scored with the verifiers of
        their domains."""
        return None

    def scores_code(self) -> bool:
        """Does a benchmark run model-written code (code domain)? Then the sandbox must work here."""
        return any(b.domain == "code" or "code" in (b.domains or []) or (b.preset is not None and
                   b.preset.domain == "code") for b in self.benchmarks)

    def validate_for(self, recipe: Any, world_size: int) -> list:
        from ringctl.pipeline.launchers import launch_spec

        backends = getattr(recipe, "backends", None)
        if backends is None or backends.rollout != "vllm":
            return []
        world, tp = launch_spec(self, recipe.resources).world_size, backends.vllm.tensor_parallel_size
        if world % tp:
            return [(("launch",), f"evaluate runs on {world} ranks, which do not split into vLLM engines of "
                     f"backends.vllm.tensor_parallel_size {tp} ranks: launch a multiple of {tp} processes")]
        return []


def run(cfg: Config, ctx) -> dict:
    import json

    from ringctl.eval import report
    from ringctl.eval.benchmarks import load_benchmark
    from ringctl.eval.run import evaluate_checkpoints, metrics_for_tracking
    from ringctl.eval.sampling import checkpoint_dirs
    from ringctl.pipeline.context import Artifact
    from ringctl.rollout.generation import engine_settings
    from ringctl.train import determinism
    from ringctl.train.runtime import join_ranks

    join_ranks(ctx)  # every rank samples its share of each benchmark (ringctl/eval/sampling.py)
    # -- setup: every benchmark read and checked, every checkpoint found, before any model is loaded --------------
    determinism.seed_everything(ctx.seed, ctx.deterministic)
    benchmarks = [load_benchmark(spec, cfg.benchmarks_dir, ctx.input(spec.data) if spec.data else None)
                  for spec in cfg.benchmarks]
    checkpoints = []
    for ref in cfg.checkpoints:
        found = checkpoint_dirs(ctx.input(ref))
        if not found:
            raise RuntimeError(f"{ref} ({ctx.input(ref)}) is not a checkpoint directory nor a directory of them")
        checkpoints += [(str(ref), found[0])] if len(found) == 1 else [(f"{ref}/{p.name}", p) for p in found]

    overlap = _overlap(cfg, ctx, benchmarks) if ctx.is_main else {}
    for bench in benchmarks if ctx.is_main else []:
        print(f"[eval] {bench.name}: {len(bench.problems)} problems from {bench.source}, n={bench.spec.n}, "
              f"k={bench.spec.ks()}", flush=True)

    # -- sample and score, checkpoint by checkpoint (one MLflow step each, in the order listed) ----------------
    settings = engine_settings(ctx.recipe, max_batch_rows=cfg.max_batch_rows, reward_workers=cfg.reward_workers,
                               reward_timeout_s=cfg.reward_timeout_s)
    ctx.tracker.set_tag("ringctl.eval_checkpoints", json.dumps([label for label, _ in checkpoints]))
    done = evaluate_checkpoints(checkpoints, benchmarks, ctx.recipe.model, settings, ctx.seed, ctx.outputs_dir,
                    extra={"overlap": overlap, "checkpoints": {label: str(p) for label, p in checkpoints}},
                    averages=cfg.averages,
                    on_checkpoint=lambda i, label, rows: ctx.tracker.log_metrics(i, **metrics_for_tracking(rows)),
                    should_stop=ctx.should_stop, log=lambda m: print(m, flush=True))
    if done is None or not ctx.is_main:
        return {}  # stopped: nothing written, the stage evaluates again from the start (it keeps no partial state)
    rows, paths = done

    # -- the table: terminal (summary.json, summary.txt), MLflow artifacts ------------------------------------------
    from ringctl.display import write_summary

    print(write_summary(ctx.stage_dir, report.table(rows)), flush=True)
    for name, p in paths.items():
        if name == "samples" and p.stat().st_size > MAX_SAMPLES_ARTIFACT_BYTES:
            ctx.tracker.set_tag("ringctl.eval_samples", str(p))  # a full-scale run's samples stay in the run dir
            continue
        ctx.tracker.log_artifact(p)
    return {"report": Artifact(paths["report"], {"rows": len(rows)}), "samples": Artifact(paths["samples"]),
            "table": Artifact(paths["table"])}


def _overlap(cfg: Config, ctx, benchmarks: list) -> dict:
    """Overlap with this run's training data (as the data_filter's decontaminate step measures it): a warning."""
    from ringctl.data.records import iter_jsonl
    from ringctl.eval.benchmarks import training_overlap

    checked = [b for b in benchmarks if b.spec.check_overlap]
    if not (cfg.training_data and checked):
        return {}
    texts = ((r.get("id", "?"), str(r.get("prompt", ""))) for ref in cfg.training_data
             for r in iter_jsonl(ctx.input(ref)))
    overlap = training_overlap(checked, texts, cfg.overlap_ngram, cfg.overlap_threshold)
    for name, found in overlap.items():
        if found["problems"]:
            ex = found["examples"][0]
            print(f"[eval] warning: benchmark {name}: {found['problems']} of {found['of']} problems overlap "
                  f"this run's training data ({', '.join(cfg.training_data)}; {cfg.overlap_ngram}-gram overlap >= "
                  f"{cfg.overlap_threshold}), e.g. {ex['problem_id']} ~ {ex['training_id']}: its scores are not "
                  f"held-out scores", flush=True)
    return overlap
