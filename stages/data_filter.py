"""data_filter: read sources -> ordered filter steps -> output splits, with a report of every drop.

    ringctl run recipes/filter-demo.yaml

Config (see recipes/filter-demo.yaml):
    sources:  files ({path, format, preset, fields}), upstream outputs ({input: clean.all}), {type: demo}, or
              the synthetic task suite ({type: synthetic, task: sft|rl|ifeval, n, seed, domains, difficulty})
    steps:    ordered list discriminated by `type` (exact_dedup, near_dedup, decontaminate, guessable_formats,
              length, characters, require_fields, verify_answers)
    splits:   ordered mapping split -> {domains, sources, has_solution}; unmatched records go to
              `default_split`, or are dropped and counted

Outputs (JSONL under outputs/): all (everything the steps kept), sft, rl_reasoning, rl_general, preferences (a split that is
not configured is written empty), and report (report.json). Records stream through the steps; dedup keeps
hashes only. Output files appear atomically (the whole outputs dir is renamed into place at the end).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import Discriminator, Field, Tag, model_validator

from ringctl.data.demo import DemoSource
from ringctl.data.filters import StepConfig
from ringctl.data.filters.splits import SplitRule
from ringctl.data.readers import FileSource
from ringctl.recipe.base import StageConfig, StageRef, Strict

KIND = "data_filter"
SPLITS = ("sft", "rl_reasoning", "rl_general", "preferences")
OUTPUTS = ("all", *SPLITS, "report")
REPORT_JSON = "report.json"
REPORT_MD = "filter_report.md"
STOP_CHECK_EVERY = 1000  # records between should_stop() checks


class StageSource(Strict):
    """The records of an upstream data_filter output, e.g. `{input: clean.all}`."""

    type: Literal["stage"] = "stage"
    input: StageRef


class SyntheticSource(Strict):
    """The synthetic verifiable task suite (ringctl/data/synth.py), deterministic for a seed."""

    type: Literal["synthetic"] = "synthetic"
    task: Literal["sft", "rl", "ifeval", "general", "preferences"] = Field(
        ..., description="sft: long-CoT samples; rl: prompts + references; ifeval: IFEval-style prompts; general: "
        "short instruction-following (domain ifeval) and open-ended (domain chat) prompts with answers, for SFT and "
        "general RL; preferences: chosen/rejected pairs for a reward model (domain chat)")
    n: int = Field(..., ge=1)
    seed: int = 0
    domains: list[str] | None = None
    difficulty: int = Field(1, ge=1)
    guess_fraction: float = Field(0.0, ge=0, le=1, description=(
        "sft only: this fraction of the samples answer with a hasty guess instead of reasoning (an empty think "
        "block; the guess is right 1 time in 4), like a distillation corpus that mixes reasoning and "
        "non-reasoning answers; RL has to learn to reason before answering"))
    slip_fraction: float = Field(0.0, ge=0, le=1, description=(
        "sft only: this fraction of the samples reason as usual but slip at the end (the trace's last result and "
        "the boxed answer wrong by one digit), an imperfect teacher: SFT imitates the slips when it samples, RL "
        "with a verifier can remove them"))
    follow_fraction: float = Field(1.0, ge=0, le=1, description=(
        "general only: the fraction of the records whose solution does what the prompt asks (the rest ignore the "
        "instruction or answer unhelpfully), so that a model trained on them has something for general RL to raise"))
    source: str | None = Field(None, description="source name of the records (default synthetic-<task>), so that "
                               "splits can route another synthetic set apart, e.g. held-out evaluation prompts")

    @property
    def label(self) -> str:
        return self.source or f"synthetic:{self.task}"

    @property
    def record_domains(self) -> list[str]:
        """The domains of the records this source generates."""
        from ringctl.data.synth import TINY_DEFAULT_DOMAINS

        task_domains = {"ifeval": ["ifeval"], "general": ["ifeval", "chat"], "preferences": ["chat"]}
        return task_domains.get(self.task, self.domains or TINY_DEFAULT_DOMAINS)


def _source_type(value: Any) -> str | None:
    """`type` may be omitted: `input:` means an upstream output, `path:` a file."""
    if isinstance(value, dict):
        if "type" in value:
            return value["type"]
        return "stage" if "input" in value else "file" if "path" in value else None
    return getattr(value, "type", None)


SourceConfig = Annotated[
    Union[Annotated[FileSource, Tag("file")], Annotated[StageSource, Tag("stage")],  # noqa: UP007
          Annotated[DemoSource, Tag("demo")], Annotated[SyntheticSource, Tag("synthetic")]],
    Discriminator(_source_type, custom_error_type="source_type",
                  custom_error_message="a source needs `path:` (file), `input:` (stage output) or `type: demo`"),
]


class Config(StageConfig):
    kind: Literal["data_filter"] = "data_filter"
    sources: list[SourceConfig] = Field(..., min_length=1, description="read in order, one stream")
    steps: list[StepConfig] = Field(default_factory=list, description="filter steps, applied in order")
    splits: dict[str, SplitRule] = Field(default_factory=dict, description=f"ordered rules; names from {SPLITS}")
    default_split: Literal["sft", "rl_reasoning", "rl_general", "preferences"] | None = Field(
        None, description="split for records that match no rule; None: drop them (counted in the report)")
    assign: Literal["first_match", "all_matches"] = Field(
        "first_match", description="first_match: a record goes to the first matching split only")
    print_table: bool = Field(True, description="print the report table (rich) on stderr")
    on_bad_rows: Literal["error", "skip"] = Field(
        "error", description="a malformed row in a data or benchmark file (not UTF-8, not JSON, a mapped column "
                             "missing, a field of the wrong type): error stops with file:line; skip drops it and "
                             "counts it in the report")

    @model_validator(mode="after")
    def _names(self) -> Config:
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}: this stage writes the splits {list(SPLITS)}")
        names = [s.step_name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"step names must be unique (set `name:` on repeated steps): {dupes}")
        return self

    def external_files(self) -> list[str]:
        return [file for file, _ in self._external_files()]

    def external_file_location(self, file: str) -> tuple | None:
        """Where the recipe names an external file (a benchmark preset's file is named by the preset)."""
        return next((where for f, where in self._external_files() if f == file), None)

    def _external_files(self) -> list[tuple[str, tuple]]:
        from ringctl.data.benchmark_files import benchmark_file

        files = [(src.path, ("sources", i, "path")) for i, src in enumerate(self.sources) if isinstance(src, FileSource)]
        files += [(str(benchmark_file(src.contaminate_from)), ("sources", i, "contaminate_from"))
                  for i, src in enumerate(self.sources) if isinstance(src, DemoSource) and src.contaminate_from]
        for i, step in enumerate(self.steps):
            for j, b in enumerate(step.benchmark_files()):
                where = ("steps", i, "benchmarks", j) + (() if isinstance(step.benchmarks[j], str) else ("path",))
                files.append((str(b.file()), where))
        return files

    def may_read_domain(self, domain: str) -> bool:
        """Whether a file, demo or synthetic source may hold records of `domain` (upstream outputs: their stage
        answers)."""
        from ringctl.data.readers import PRESETS

        for src in self.sources:
            if isinstance(src, DemoSource):
                found = True  # the demo data mixes domains (math, code, science, general)
            elif isinstance(src, FileSource):
                if src.domain is not None:
                    found = src.domain == domain
                elif src.preset in (None, "records"):
                    found = True  # the domain comes from the data
                else:
                    found = PRESETS[src.preset]["domain"] == domain
            elif isinstance(src, SyntheticSource):
                found = domain in (src.domains or []) or domain in src.record_domains
            else:
                found = False
            if found:
                return True
        return False

    def declared_records(self, output: str, recipe: Any) -> set[tuple[str, str]] | None:
        """(domain, source) of the output's records when every source is synthetic (or an upstream output the
        recipe determines); None when a source is a file or demo data (known only once read)."""
        from ringctl.data.filters.splits import assign_splits

        kept: set[tuple[str, str]] = set()  # (domain, source) of the records the sources produce
        for src in self.sources:
            if isinstance(src, SyntheticSource):
                label = src.source or f"synthetic-{src.task}"
                kept |= {(d, label) for d in src.record_domains}
            elif isinstance(src, StageSource):
                upstream = recipe.stages.get(src.input.stage)
                found = upstream.declared_records(src.input.output, recipe) if upstream is not None else None
                if found is None:
                    return None
                kept |= found
            else:
                return None
        for step in self.steps:  # verify_answers drops every record of a domain that has no verifier
            if step.type == "verify_answers":
                from ringctl.rewards import known_domains

                verifiable, checked = set(known_domains()), set(step.domains) if step.domains else None
                kept = {(d, s) for d, s in kept if d in verifiable or (checked is not None and d not in checked)}
        if output in ("all", "report"):
            return kept
        return {(d, s) for d, s in kept
                if output in assign_splits({"domain": d, "source": s, "solution": "x"}, self.splits,
                                           self.default_split, self.assign == "all_matches")}

    def scored_domains(self) -> list[str] | None:
        """A difficulty step scores samples of every domain with the verifiers; other steps score nothing."""
        return None if any(step.type == "difficulty" for step in self.steps) else []

    def validate_for(self, recipe: Any, world_size: int) -> list[str]:
        problems = []
        launch = self.launch
        if (launch.nproc_per_node or 1) > 1 or (launch.nnodes or 1) > 1:
            problems.append("data_filter runs in one process: set launch.nproc_per_node and launch.nnodes to 1")
        stages = getattr(recipe, "stages", None) or {}
        for i, src in enumerate(self.sources):
            if isinstance(src, StageSource) and src.input.output == "report":
                problems.append(f"sources[{i}]: {src.input} is the JSON report, not records (use .all or a split)")
            elif isinstance(src, StageSource) and src.input.stage in stages:
                kind = stages[src.input.stage].kind
                if kind != KIND:
                    problems.append(f"sources[{i}]: {src.input} is a {kind} output, not data_filter records")
        return problems


class _Stopped(Exception):
    pass


def _read_sources(cfg: Config, ctx, run) -> Iterator[dict]:
    from ringctl.data.demo import generate_demo_records
    from ringctl.data.readers import read_records, read_source

    for src in cfg.sources:
        if isinstance(src, StageSource):
            label, records = str(src.input), read_records(ctx.input(src.input))
        elif isinstance(src, SyntheticSource):
            label, records = src.label, _synthetic(src)
        elif isinstance(src, DemoSource):
            label, records = src.label, generate_demo_records(src)
        else:
            label, records = src.label, read_source(src, run.bad_rows)
        run.sources[label] += 0
        for record in records:
            run.sources[label] += 1
            yield record


def _synthetic(src: SyntheticSource) -> list[dict]:
    from ringctl.data import synth

    if src.task == "ifeval":
        return [{**r, "source": src.source or "synthetic-ifeval"} for r in synth.generate_ifeval(src.n, src.seed)]
    if src.task == "general":
        return [{**r, "source": src.source or "synthetic-general"}
                for r in synth.generate_general(src.n, src.seed, follow_fraction=src.follow_fraction)]
    if src.task == "preferences":
        return [{**r, "source": src.source or "synthetic-preferences"}
                for r in synth.generate_chat_preferences(src.n, src.seed)]
    if src.follow_fraction != 1.0:
        raise ValueError("follow_fraction applies to task: general only")
    if src.task == "sft":
        records = synth.generate_sft(src.n, src.seed, domains=src.domains, difficulty=src.difficulty,
                                     guess_fraction=src.guess_fraction, slip_fraction=src.slip_fraction)
    elif src.guess_fraction or src.slip_fraction:
        raise ValueError("guess_fraction and slip_fraction apply to task: sft only")
    else:
        records = synth.generate_rl(src.n, src.seed, domains=src.domains, difficulty=src.difficulty)
    # the task is part of the source name, so that splits can route SFT samples and RL prompts apart
    return [{**r, "source": src.source or f"synthetic-{src.task}"} for r in records]


def run(cfg: Config, ctx) -> dict:
    import json

    from ringctl import artifacts
    from ringctl.data.filters import FilterRun, apply_steps, assign_splits
    from ringctl.pipeline.context import Artifact

    if not ctx.is_main:
        return {}
    # steps that read another stage's checkpoint (difficulty) get its resolved path
    steps = [s.model_copy(update={"checkpoint_path": str(ctx.input(s.checkpoint))})
             if getattr(s, "checkpoint", None) is not None else s for s in cfg.steps]
    # steps that run a model (difficulty) follow resources.device unless they name a device of their own
    steps = [s.model_copy(update={"device": ctx.recipe.resources.device})
             if "device" in type(s).model_fields and s.device == "auto" else s for s in steps]
    steps = [s.model_copy(update={"engine": ctx.recipe.backends.rollout})  # and backends.rollout
             if "engine" in type(s).model_fields and s.engine == "auto" else s for s in steps]
    # steps that read files of their own (decontamination's benchmarks) treat bad rows as the sources do
    steps = [s.model_copy(update={"on_bad_rows": cfg.on_bad_rows})
             if "on_bad_rows" in type(s).model_fields and s.on_bad_rows is None else s for s in steps]
    filter_run = FilterRun(splits_configured=bool(cfg.splits or cfg.default_split))
    filter_run.bad_rows.policy = cfg.on_bad_rows
    kept = apply_steps(_read_sources(cfg, ctx, filter_run), steps, filter_run)  # builds every step first
    splits = {name: 0 for name in SPLITS}
    all_matches = cfg.assign == "all_matches"
    try:
        with artifacts.atomic_dir(ctx.outputs_dir) as tmp:
            files = {name: open(tmp / f"{name}.jsonl", "w", encoding="utf-8") for name in ("all", *SPLITS)}
            try:
                for n, record in enumerate(kept, start=1):
                    line = json.dumps(record, ensure_ascii=False) + "\n"
                    files["all"].write(line)
                    filter_run.written_all += 1
                    targets = assign_splits(record, cfg.splits, cfg.default_split, all_matches)
                    for name in targets:
                        files[name].write(line)
                        splits[name] += 1
                    if not targets:
                        filter_run.unmatched_dropped += 1
                    if n % STOP_CHECK_EVERY == 0 and ctx.should_stop():
                        raise _Stopped
            finally:
                for f in files.values():
                    f.close()
            filter_run.splits = splits
            filter_run.finish()
            problems = filter_run.check()
            if problems:  # a step that loses or invents records is a bug, never a result
                raise RuntimeError("data_filter counts do not add up: " + "; ".join(problems))
            (tmp / REPORT_JSON).write_text(filter_run.to_json(), encoding="utf-8")
    except _Stopped:
        return {}  # nothing written; the stage reruns from the start (filtering has no partial state)

    _report(cfg, ctx, filter_run)
    out = ctx.outputs_dir
    result = {name: Artifact(out / f"{name}.jsonl", {"records": filter_run.written_all if name == "all"
                                                     else splits[name]}) for name in ("all", *SPLITS)}
    result["report"] = Artifact(out / REPORT_JSON, {"read": filter_run.read, "kept": filter_run.kept})
    return result


def _report(cfg: Config, ctx, filter_run) -> None:
    ctx.tracker.log_metrics(0, **filter_run.metrics())
    ctx.tracker.log_text(filter_run.to_markdown(f"data_filter report: {ctx.stage_name}"), REPORT_MD)
    ctx.tracker.log_artifact(ctx.outputs_dir / REPORT_JSON)
    if cfg.print_table:
        from ringctl.display import out_console

        out_console(stderr=True).print(filter_run.rich_table(ctx.stage_name))


__all__ = ["KIND", "OUTPUTS", "Config", "run", "StageSource", "SourceConfig"]
