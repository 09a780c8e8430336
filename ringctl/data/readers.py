"""Readers: JSONL (optionally gzipped), Parquet and local Hugging Face `datasets` dirs -> normalised records.

Each source names its columns through a field mapping (or a preset for well-known benchmarks):

    - path: data/math500.jsonl
      preset: math500                # problem / answer / solution / unique_id
    - path: data/my.parquet
      fields: {prompt: question, answer: final, metadata: [difficulty]}
      domain: math

Rows are read lazily (line by line, Parquet record batches, Arrow-backed datasets), so a source of any size
streams through the filter steps. pyarrow and datasets are imported only when such a source is read.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ringctl.data.records import Record, make_record
from ringctl.errors import BadInput
from ringctl.recipe.base import Strict

Format = Literal["jsonl", "parquet", "hf_disk"]
OnBadRows = Literal["error", "skip"]
PARQUET_BATCH_ROWS = 4096
BAD_ROW_EXAMPLES = 20


class BadRowError(BadInput, ValueError):
    """A malformed row (`file:line: what is wrong`) read under `on_bad_rows: error`."""


@dataclass
class BadRows:
    """What to do with a malformed row (not UTF-8, not JSON, not an object, a mapped column missing, a field of
    the wrong type): `error` stops with file:line, `skip` drops it and counts it here (the filter report)."""

    policy: str = "error"
    by_file: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def found(self, file: Path | str, where: str, message: str) -> None:
        text = f"{file}:{where}: {message}"
        if self.policy != "skip":
            raise BadRowError(f"{text} (`on_bad_rows: skip` on the data_filter stage drops such rows and counts "
                              f"them in the report)")
        self.by_file[str(file)] += 1
        if len(self.examples) < BAD_ROW_EXAMPLES:
            self.examples.append(text)

    @property
    def total(self) -> int:
        return sum(self.by_file.values())

    def merge(self, other: BadRows | None) -> None:
        if other is None:
            return
        self.by_file.update(other.by_file)
        self.examples.extend(other.examples[:max(0, BAD_ROW_EXAMPLES - len(self.examples))])

    def to_dict(self) -> dict:
        return {"skipped": self.total, "by_file": dict(self.by_file), "examples": list(self.examples)}


class FieldMap(Strict):
    """Column names for each record field. A column named here explicitly must exist in the data; the
    defaults (the normalised schema's own names) are used only where present."""

    prompt: str = "prompt"
    answer: str | dict[str, str] | None = Field(
        "answer", description="column of the reference answer, or {key: column} to build a dict reference")
    answer_split: str | None = Field(
        None, description="the reference is the text after the last occurrence of this marker (GSM8K: '####'); "
                          "the text before it becomes the solution when no solution column is mapped")
    solution: str | None = "solution"
    id: str | None = "id"
    domain: str | None = "domain"
    source: str | None = "source"
    metadata: list[str] = Field(default_factory=list, description="columns copied into metadata")


# Field mappings of well-known datasets (the benchmark files shipped in ringctl/data/benchmarks have these
# columns).
PRESETS: dict[str, dict[str, Any]] = {
    "records": {"fields": {}, "domain": None},  # already in the normalised schema (a data_filter output)
    "math500": {"fields": {"prompt": "problem", "answer": "answer", "solution": "solution", "id": "unique_id",
                           "metadata": ["subject", "level"]}, "domain": "math"},
    "gsm8k": {"fields": {"prompt": "question", "answer": "answer", "answer_split": "####", "solution": None,
                         "id": None}, "domain": "math"},
    "humaneval": {"fields": {"prompt": "prompt", "answer": {"test": "test", "entry_point": "entry_point"},
                             "solution": "canonical_solution", "id": "task_id"}, "domain": "code"},
    "aime": {"fields": {"prompt": "problem", "answer": "answer", "solution": "solution", "id": "id"},
             "domain": "math"},
    "amc": {"fields": {"prompt": "problem", "answer": "answer", "id": "id"}, "domain": "math"},
    "aime25": {"fields": {"prompt": "problem", "answer": "answer", "id": "id"}, "domain": "math"},
}


class FileSource(Strict):
    """Records read from a file or a `save_to_disk` directory."""

    type: Literal["file"] = "file"
    path: str
    format: Format | None = Field(None, description="default: from the suffix (.jsonl[.gz], .parquet) or dir")
    preset: Literal["records", "math500", "gsm8k", "humaneval", "aime", "amc", "aime25"] | None = None
    fields: dict[str, Any] = Field(default_factory=dict, description="FieldMap entries, over the preset's")
    domain: str | None = Field(None, description="domain of every record (overrides a domain column)")
    source: str | None = Field(None, description="source name of every record; default: column, preset, file stem")
    split: str | None = Field(None, description="split of a saved DatasetDict (hf_disk)")
    limit: int | None = Field(None, ge=1, description="read at most this many rows")

    @model_validator(mode="after")
    def _valid_fields(self) -> FileSource:
        self.field_map()  # unknown mapping keys are config errors, caught by `ringctl validate`
        return self

    def field_map(self) -> tuple[FieldMap, set[str]]:
        """The effective mapping and the names of the fields set explicitly (preset or recipe)."""
        explicit = dict(PRESETS[self.preset]["fields"]) if self.preset else {}
        explicit.update(self.fields)
        return FieldMap(**explicit), set(explicit)

    @property
    def label(self) -> str:
        return self.source or self.preset or Path(self.path).name.split(".")[0]


def infer_format(path: Path) -> str:
    path = Path(path)
    if path.is_dir():
        return "hf_disk"
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz", ".ndjson")):
        return "jsonl"
    if name.endswith((".parquet", ".pq")):
        return "parquet"
    raise ValueError(f"cannot tell the format of {path} from its name; set `format: jsonl|parquet|hf_disk`")


def iter_rows(path: Path, fmt: str, split: str | None = None, bad: BadRows | None = None) -> Iterator[dict]:
    """Raw rows (dicts) of a file, lazily."""
    for _, row in iter_numbered_rows(path, fmt, split, bad):
        yield row


def iter_numbered_rows(path: Path, fmt: str, split: str | None = None,
                       bad: BadRows | None = None) -> Iterator[tuple[str, dict]]:
    """(location, row) for every row of a file, lazily; the location is the line number in a JSONL file, `row N`
    (1-based) in Parquet and datasets. Malformed rows go to `bad` (default: an error naming file:line)."""
    path = Path(path)
    bad = bad if bad is not None else BadRows()
    if not path.exists():
        raise FileNotFoundError(f"data source {path} not found (absolute: {path.absolute()})")
    if fmt == "jsonl":
        yield from _jsonl_rows(path, bad)
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        n = 0
        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for row in batch.to_pylist():
                n += 1
                yield f"row {n}", row
    elif fmt == "hf_disk":
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split is None:
                if len(ds) != 1:
                    raise ValueError(f"{path} is a DatasetDict with splits {list(ds)}; set `split:`")
                split = next(iter(ds))
            if split not in ds:
                raise ValueError(f"{path} has no split {split!r}; it has {list(ds)}")
            ds = ds[split]
        n = 0
        for batch in ds.iter(batch_size=PARQUET_BATCH_ROWS):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys), strict=True):
                n += 1
                yield f"row {n}", dict(zip(keys, values, strict=True))
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _jsonl_rows(path: Path, bad: BadRows) -> Iterator[tuple[str, dict]]:
    """Lines are decoded one by one, so that a byte that is not UTF-8 is located at its line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    bad.found(path, str(line_no), f"not UTF-8 (byte 0x{raw[e.start]:02x} at column {e.start + 1})")
                    continue
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    bad.found(path, str(line_no), f"not valid JSON ({e.msg} at column {e.colno})")
                    continue
                if not isinstance(row, dict):
                    bad.found(path, str(line_no), f"a row must be a JSON object, got {_kind(row)}")
                    continue
                yield str(line_no), row
    except (OSError, EOFError) as e:  # a truncated or corrupt .gz: nothing after this point can be read
        if isinstance(e, FileNotFoundError):
            raise
        raise BadRowError(f"{path}:{line_no + 1}: cannot read the file any further ({e})") from e


def _kind(value: Any) -> str:
    names = {str: "text", bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _scalar_text(value: Any) -> Any:
    """Numbers become text (27.0 -> '27'); strings, dicts and lists stay as they are."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return value


# the types a record field accepts from the data (None: the value is absent; the filter steps decide about it)
_TEXT = (str,)
_FIELD_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "prompt": (_TEXT, "text"),
    "answer": ((str, int, float, bool, dict, list), "text, a number, an object or a list"),
    "solution": (_TEXT, "text"),
    "id": ((str, int), "text or an integer"),
    "domain": (_TEXT, "text"),
    "source": (_TEXT, "text"),
}


class RowMapper:
    """Turns raw rows into records according to a FileSource's mapping. A row that lacks an explicitly mapped
    column, or holds a value of the wrong type, is a bad row (`bad`)."""

    def __init__(self, src: FileSource, bad: BadRows | None = None):
        self.src = src
        self.bad = bad if bad is not None else BadRows()
        self.fields, self.explicit = src.field_map()
        self.preset_domain = PRESETS[src.preset]["domain"] if src.preset else None
        f = self.fields
        wanted: dict[str, Any] = {"prompt": f.prompt}
        for name in ("answer", "solution", "id", "domain", "source"):
            if name in self.explicit and getattr(f, name) is not None:
                wanted[name] = getattr(f, name)
        wanted.update({f"metadata.{c}": c for c in f.metadata})
        self.wanted = [(target, c) for target, col in wanted.items()
                       for c in (col.values() if isinstance(col, dict) else [col])]

    def _problem(self, row: dict) -> str | None:
        missing = [f"{target} <- {c!r}" for target, c in self.wanted if c not in row]
        if missing:
            return f"mapped columns missing: {', '.join(missing)}; the row has columns {sorted(row)[:20]}"
        f = self.fields
        for name, (types, what) in _FIELD_TYPES.items():
            col = getattr(f, name)
            if not isinstance(col, str):
                continue
            value = row.get(col)
            if value is not None and (not isinstance(value, types) or isinstance(value, bool) and bool not in types):
                return f"field {name!r} (column {col!r}) must be {what}, got {_kind(value)}: {str(value)[:60]!r}"
        if self.src.preset == "records" and row.get("metadata") is not None and not isinstance(row["metadata"], dict):
            return f"field 'metadata' must be an object, got {_kind(row['metadata'])}"
        return None

    def __call__(self, row: dict, index: int, where: str = "?") -> Record | None:
        """The record, or None for a bad row under `on_bad_rows: skip`."""
        problem = self._problem(row)
        if problem is not None:
            self.bad.found(self.src.path, where, problem)
            return None
        f = self.fields
        answer: Any
        if isinstance(f.answer, dict):
            answer = {key: row.get(col) for key, col in f.answer.items()}
        else:
            answer = _scalar_text(row.get(f.answer)) if f.answer else None
        solution = row.get(f.solution) if f.solution else None
        if f.answer_split and isinstance(answer, str) and f.answer_split in answer:
            worked, _, final = answer.rpartition(f.answer_split)
            answer = final.strip().replace(",", "") if f.answer_split == "####" else final.strip()
            if not f.solution:
                solution = worked.strip() or None
        source = self.src.source or (row.get(f.source) if f.source else None) or self.src.label
        domain = self.src.domain or (row.get(f.domain) if f.domain else None) or self.preset_domain or "unknown"
        raw_id = row.get(f.id) if f.id else None
        if raw_id is None:
            rec_id = f"{source}/{index}"
        elif self.src.preset == "records":
            rec_id = str(raw_id)  # already unique across sources (written by a data_filter stage)
        else:
            rec_id = f"{source}/{raw_id}"  # ids of different files may collide (AIME 60, AMC 60)
        metadata = dict(row.get("metadata") or {}) if isinstance(row.get("metadata"), dict) else {}
        metadata.update({c: row.get(c) for c in f.metadata})
        prompt = row.get(f.prompt)
        return make_record(id=rec_id, prompt="" if prompt is None else str(prompt), answer=answer,
                           domain=str(domain), source=str(source), solution=solution, metadata=metadata)


def read_source(src: FileSource, bad: BadRows | None = None) -> Iterator[Record]:
    """Normalised records of a file source, lazily. Bad rows: an error at file:line, or skipped and counted in
    `bad` when its policy is `skip`. A source whose every row is bad is an error either way."""
    path = Path(src.path)
    fmt = src.format or infer_format(path)
    bad = bad if bad is not None else BadRows()
    mapper = RowMapper(src, bad)
    before, good = bad.by_file[str(src.path)], 0
    for i, (where, row) in enumerate(iter_numbered_rows(path, fmt, src.split, bad)):
        if src.limit is not None and i >= src.limit:
            break
        record = mapper(row, i, where)
        if record is not None:
            good += 1
            yield record
    skipped = bad.by_file[str(src.path)] - before
    if skipped and not good:
        first = next((e for e in bad.examples if e.startswith(f"{src.path}:")), "")
        raise BadRowError(f"{src.path}: every row is bad ({skipped} skipped), e.g. {first}; check the file and the "
                          f"source's field mapping")


def read_records(path: Path) -> Iterator[Record]:
    """Records of a normalised JSONL file (a data_filter output), lazily."""
    return read_source(FileSource(path=str(path), format="jsonl", preset="records"))
