"""Benchmarks: named presets over the benchmark files shipped with ringctl (ringctl/data/benchmarks, found by
ringctl.data.benchmark_files; a directory in $RINGCTL_BENCHMARKS_DIR replaces them), any JSONL/Parquet file through a
field mapping, or records written by another stage; loaded and checked completely before any generation.

    math500   MATH-500 (problem / answer)              answer benchmark, math verifier (Math-Verify)
    aime24    AIME 2024 (problem / answer)             answer benchmark
    aime25    AIME 2025 I and II (problem / answer)    answer benchmark
    amc23     AMC 2023 (problem / answer)              answer benchmark
    gsm8k     GSM8K test (question / answer after ####) answer benchmark
    humaneval HumanEval (prompt / test + entry_point)  code benchmark, run in the code sandbox
    ifeval    IFEval's 541 prompts (key / prompt / instruction_id_list / kwargs), the IFEval verifier: prompt- and
              instruction-level accuracy, strict and loose

Every benchmark is scored by the same verifiers RL uses (ringctl.rewards, by domain). The data_filter's
decontaminate step and the demo source name the same presets (benchmark_file). Pydantic only at import time:
`ringctl validate` imports this module through the evaluate stage's Config.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from ringctl.data.benchmark_files import PRESET_FILES, benchmark_file, missing_preset_hint
from ringctl.errors import BadInput
from ringctl.errors import did_you_mean as errors_did_you_mean
from ringctl.recipe.base import StageRef, Strict

BOXED_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
CODE_SUFFIX = ("\nComplete the function above. Reply with the whole function (signature included) in one "
               "```python code block.")

Kind = Literal["answer", "code", "ifeval"]


@dataclass(frozen=True)
class Preset:
    file: str  # file name inside the benchmarks directory (ringctl.data.benchmark_files.PRESET_FILES)
    fields: dict[str, Any]  # FieldMap entries (ringctl.data.readers)
    domain: str  # verifier domain
    kind: Kind
    prompt_suffix: str = ""


def _reader_fields(name: str) -> dict[str, Any]:
    from ringctl.data.readers import PRESETS as READER_PRESETS

    return dict(READER_PRESETS[name]["fields"])


def _preset(name: str, fields: dict[str, Any], domain: str, kind: Kind, prompt_suffix: str = "") -> Preset:
    return Preset(PRESET_FILES[name], fields, domain, kind, prompt_suffix)


PRESETS: dict[str, Preset] = {
    "math500": _preset("math500", _reader_fields("math500"), "math", "answer", BOXED_SUFFIX),
    "aime24": _preset("aime24", _reader_fields("aime"), "math", "answer", BOXED_SUFFIX),
    "aime25": _preset("aime25", _reader_fields("aime25"), "math", "answer", BOXED_SUFFIX),
    "amc23": _preset("amc23", _reader_fields("amc"), "math", "answer", BOXED_SUFFIX),
    "gsm8k": _preset("gsm8k", _reader_fields("gsm8k"), "math", "answer", BOXED_SUFFIX),
    "humaneval": _preset("humaneval", _reader_fields("humaneval"), "code", "code", CODE_SUFFIX),
    "ifeval": _preset("ifeval", {"prompt": "prompt", "id": "key", "solution": None,
                                 "answer": {"instruction_id_list": "instruction_id_list", "kwargs": "kwargs"}},
                      "ifeval", "ifeval"),
}


class BenchmarkError(BadInput):
    """A benchmark that cannot be evaluated (unknown name, missing file, a mapped field the file lacks): exit 2,
    raised before any model is loaded."""


def did_you_mean(word: str, candidates) -> str:
    """ringctl.errors.did_you_mean, a little more lenient (benchmark and column names are short)."""
    return errors_did_you_mean(word, candidates, cutoff=0.5)


def unknown_benchmark_message(name: str) -> str:
    return (f"unknown benchmark {name!r}{did_you_mean(name, PRESETS)}; named benchmarks: {', '.join(PRESETS)} "
            f"(any other JSONL/Parquet file works with a path and a field mapping)")


def kind_of(domain: str) -> Kind:
    return "code" if domain == "code" else "ifeval" if domain == "ifeval" else "answer"


class BenchmarkSpec(Strict):
    """One benchmark of an evaluation: what to read, how to prompt, how to sample."""

    path: str | None = Field(None, description="JSONL/Parquet file; default: the named preset's file (shipped "
                                               "with ringctl, or in $RINGCTL_BENCHMARKS_DIR)")
    data: StageRef | None = Field(None, description="records of another stage instead of a file, e.g. "
                                                    "heldout.rl_reasoning (normalised record schema)")
    name: str = Field(..., description="a preset (math500, aime24, aime25, amc23, gsm8k, humaneval, ifeval) or, "
                                       "with path/data, the name this benchmark has in the tables")
    fields: dict[str, Any] = Field(default_factory=dict, description="field mapping over the preset's: prompt, "
                                   "answer, id, answer_split, ... (ringctl.data.readers.FieldMap)")
    domain: str | None = Field(None, description="verifier domain (math, code, ifeval, arithmetic, ...); default: "
                                                 "the preset's, else each record's `domain`")
    domains: list[str] | None = Field(None, min_length=1, description="only the problems of these domains (a mixed "
                                      "set such as heldout.rl_general: its ifeval prompts, not its chat ones); "
                                      "`limit` counts the problems kept")
    n: int = Field(1, ge=1, description="samples per problem (pass@1 is the mean of c/n)")
    k: list[int] | None = Field(None, description="pass@k for these k (each <= n); default: powers of two up to n")
    temperature: float = Field(1.0, ge=0, description="0: greedy")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(1024, ge=1)
    max_prompt_tokens: int | None = Field(None, ge=1, description="keep the last N prompt tokens (default: all)")
    limit: int | None = Field(None, ge=1, description="the first N problems only")
    prompt_suffix: str | None = Field(None, description="appended to every prompt; default: the preset's (math: "
                                                        "the \\boxed{} instruction; none for other files)")
    chat_template: bool = Field(True, description="wrap the prompt in the tokenizer's chat template")
    seed: int | None = Field(None, description="sampling seed; default: from the run seed and the name")
    check_overlap: bool = Field(True, description="report overlap with the run's training data (evaluate stage's "
                                "training_data); off for sets built apart from it another way")

    @field_validator("name")
    @classmethod
    def _known(cls, v: str, info: ValidationInfo) -> str:
        if not v.strip():
            raise ValueError("a benchmark needs a name")
        if v not in PRESETS and not info.data.get("path") and not info.data.get("data"):
            raise ValueError(unknown_benchmark_message(v))
        return v

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str | None) -> str | None:
        if v is not None:
            _check_domain(v)
        return v

    @field_validator("domains")
    @classmethod
    def _domains(cls, v: list[str] | None) -> list[str] | None:
        for d in v or []:
            _check_domain(d)
        return v

    @field_validator("k")
    @classmethod
    def _k_within_n(cls, v: list[int] | None, info: ValidationInfo) -> list[int] | None:
        if v is None:
            return v
        n = info.data.get("n", 1)
        if any(k < 1 for k in v):
            raise ValueError(f"every k must be >= 1, got {v}")
        too_big = [k for k in v if k > n]
        if too_big:
            raise ValueError(f"k={too_big[0]} is larger than n={n}: pass@k needs at least k samples per problem "
                             f"(raise n or drop k)")
        return sorted(set(v))

    @property
    def preset(self) -> Preset | None:
        return PRESETS.get(self.name) if self.path is None and self.data is None else None

    def file_path(self, benchmarks_dir: str | Path | None = None) -> Path | None:
        """The file this benchmark reads (None for stage data)."""
        if self.data is not None:
            return None
        return Path(self.path) if self.path is not None else benchmark_file(self.name, benchmarks_dir)

    def ks(self) -> list[int]:
        from ringctl.eval.metrics import default_ks

        return list(self.k) if self.k is not None else default_ks(self.n)

    def sampling_seed(self, run_seed: int) -> int:
        """One seed per benchmark: sample s of problem i is row i*n+s of that seed's draws (ringctl.rollout.hf)."""
        if self.seed is not None:
            return self.seed
        return (run_seed * 1_000_003 + zlib.crc32(self.name.encode())) % (2**31 - 1)


def _check_domain(domain: str) -> None:
    from ringctl.rewards import known_domains

    if domain not in known_domains():
        raise ValueError(f"unknown verifier domain {domain!r}{did_you_mean(domain, known_domains())}; "
                         f"domains: {', '.join(known_domains())}")


@dataclass
class Benchmark:
    """A loaded benchmark: problems with their prompt (suffix included), reference and verifier domain."""

    spec: BenchmarkSpec
    source: str  # file path or stage reference
    problems: list[dict] = field(default_factory=list)  # {id, prompt, question, reference, domain, meta}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> Kind:
        domains = {p["domain"] for p in self.problems}
        return kind_of(domains.pop()) if len(domains) == 1 else "answer"


def _mapped_columns(fields: dict[str, Any]) -> list[tuple[str, str]]:
    """(record field, column) for every column a mapping names explicitly."""
    out = []
    for target in ("prompt", "answer", "solution", "id", "domain", "source"):
        col = fields.get(target)
        if isinstance(col, dict):
            out += [(f"{target}.{key}", c) for key, c in col.items()]
        elif isinstance(col, str):
            out.append((target, col))
    out += [(f"metadata.{c}", c) for c in fields.get("metadata") or []]
    return out


def check_mapping(path: Path, fields: dict[str, Any], name: str, limit: int | None = None,
                  flags: dict[str, str] | None = None) -> None:
    """Every column the mapping names exists in every row read; else one error at the first row without it."""
    from ringctl.data.readers import BadRowError, infer_format, iter_numbered_rows

    wanted = _mapped_columns(fields)
    try:
        for i, (where, row) in enumerate(iter_numbered_rows(path, infer_format(path))):
            if limit is not None and i >= limit:
                break
            missing = [(target, col) for target, col in wanted if col not in row]
            if missing:
                target, col = missing[0]
                how = (flags or {}).get(target.split(".")[0], f"fields.{target}")
                raise BenchmarkError(f"{path}:{where}: benchmark {name!r}: {how} names the field {col!r}, which this "
                                     f"row does not have{did_you_mean(col, row)}; the row's fields: "
                                     f"{', '.join(sorted(row)[:20])}")
    except BadRowError as e:
        raise BenchmarkError(str(e).split(" (`on_bad_rows")[0]) from e


def load_benchmark(spec: BenchmarkSpec, benchmarks_dir: str | Path | None = None, data_path: Path | None = None,
                   flags: dict[str, str] | None = None) -> Benchmark:
    """Read and check one benchmark. Raises BenchmarkError (exit 2) for a missing file, a mapped column the file
    lacks (file:line of the first such row), a row of the wrong shape, or problems without a verifier domain."""
    from ringctl.data.readers import BadRowError, FileSource, read_source
    from ringctl.rewards import known_domains

    preset = spec.preset
    fields = dict(preset.fields) if preset else {}
    fields.update(spec.fields)
    if spec.data is not None:
        if data_path is None:
            raise BenchmarkError(f"benchmark {spec.name!r}: no path for the stage data {spec.data}")
        path, reader_preset, source = Path(data_path), "records", str(spec.data)
    else:
        path, reader_preset, source = spec.file_path(benchmarks_dir), None, None
        source = str(path)
    if not path.exists():
        hint = f"; {missing_preset_hint(path)}" if preset else ""
        raise BenchmarkError(f"benchmark {spec.name!r}: file {path} not found{hint}")
    if reader_preset is None:
        check_mapping(path, fields, spec.name, spec.limit, flags)
    try:
        src = FileSource(path=str(path), preset=reader_preset, fields=fields, domain=spec.domain
                         or (preset.domain if preset else None), source=spec.name,
                         limit=spec.limit if spec.domains is None else None)
        records = list(read_source(src))
        if spec.domains is not None:
            records = [r for r in records if r.get("domain") in spec.domains][:spec.limit]
    except BadRowError as e:
        raise BenchmarkError(str(e).split(" (`on_bad_rows")[0]) from e
    except (ValueError, TypeError) as e:  # an unknown mapping key, an unreadable format
        raise BenchmarkError(f"benchmark {spec.name!r} ({path}): {e}") from e
    if not records:
        which = f" of the domains {spec.domains}" if spec.domains is not None else ""
        raise BenchmarkError(f"benchmark {spec.name!r}: {path} has no problems{which}")
    suffix = spec.prompt_suffix if spec.prompt_suffix is not None else (preset.prompt_suffix if preset else "")
    problems, seen = [], set()
    for i, r in enumerate(records):
        domain = spec.domain or r.get("domain")
        if domain in (None, "", "unknown"):
            raise BenchmarkError(f"benchmark {spec.name!r}: problem {r['id']} of {path} has no verifier domain; "
                                 f"give the benchmark a domain (math, code, ifeval, ...)")
        if domain not in known_domains():
            raise BenchmarkError(f"benchmark {spec.name!r}: problem {r['id']} has domain {domain!r}, which no "
                                 f"verifier scores; domains: {', '.join(known_domains())}")
        pid = str(r["id"])
        if pid in seen:  # ids must identify problems in samples.jsonl
            pid = f"{pid}#{i}"
        seen.add(pid)
        problems.append({"id": pid, "prompt": r["prompt"] + suffix, "question": r["prompt"],
                         "reference": r["answer"], "domain": domain, "meta": r.get("metadata") or {}})
    return Benchmark(spec=spec, source=source, problems=problems)


def training_overlap(benchmarks: list[Benchmark], training_texts, n: int = 13, threshold: float = 0.5
                     ) -> dict[str, dict]:
    """Benchmark problems that this run's training data contains, measured as the data_filter's decontaminate step
    does (fraction of a problem's word n-grams found in one training text >= threshold). One lazy pass over
    `training_texts` ((id, text) pairs) for all benchmarks. Returns {benchmark: {"problems": count, "of": size,
    "examples": [{"problem_id", "score", "training_id"}, ...] (first 5)}}."""
    from ringctl.data.filters.decontam import BenchmarkIndex

    index = BenchmarkIndex(n)
    for b in benchmarks:
        for p in b.problems:
            index.add(p["question"], f"{b.name}\t{p['id']}")
    hit: dict[str, tuple[float, str]] = {}
    for training_id, text in training_texts:
        score, item = index.best_match(text)
        if item is not None and score >= threshold:
            key = index.item_names[item]
            if key not in hit or score > hit[key][0]:
                hit[key] = (score, training_id)
    out = {}
    for b in benchmarks:
        mine = [(key.split("\t", 1)[1], s, tid) for key, (s, tid) in hit.items() if key.split("\t", 1)[0] == b.name]
        out[b.name] = {"problems": len(mine), "of": len(b.problems),
                       "examples": [{"problem_id": pid, "score": round(s, 3), "training_id": tid}
                                    for pid, s, tid in mine[:5]]}
    return out
