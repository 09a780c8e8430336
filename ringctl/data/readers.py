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
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ringctl.data.records import Record, make_record
from ringctl.recipe.base import Strict

Format = Literal["jsonl", "parquet", "hf_disk"]
PARQUET_BATCH_ROWS = 4096


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


# Field mappings of well-known datasets (the files in the shared benchmarks dir have these columns).
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
}


class FileSource(Strict):
    """Records read from a file or a `save_to_disk` directory."""

    type: Literal["file"] = "file"
    path: str
    format: Format | None = Field(None, description="default: from the suffix (.jsonl[.gz], .parquet) or dir")
    preset: Literal["records", "math500", "gsm8k", "humaneval", "aime", "amc"] | None = None
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


def iter_rows(path: Path, fmt: str, split: str | None = None) -> Iterator[dict]:
    """Raw rows (dicts) of a file, lazily."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"data source {path} not found (absolute: {path.absolute()})")
    if fmt == "jsonl":
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{line_no}: not valid JSON ({e.msg})") from e
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(path).iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield from batch.to_pylist()
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
        for batch in ds.iter(batch_size=PARQUET_BATCH_ROWS):
            keys = list(batch)
            for values in zip(*(batch[k] for k in keys), strict=True):
                yield dict(zip(keys, values, strict=True))
    else:
        raise ValueError(f"unknown format {fmt!r}")


def _scalar_text(value: Any) -> Any:
    """Numbers become text (27.0 -> '27'); strings, dicts and lists stay as they are."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    return value


class RowMapper:
    """Turns raw rows into records according to a FileSource's mapping."""

    def __init__(self, src: FileSource):
        self.src = src
        self.fields, self.explicit = src.field_map()
        self.preset_domain = PRESETS[src.preset]["domain"] if src.preset else None
        self.checked = False

    def _check_columns(self, row: dict) -> None:
        f = self.fields
        wanted: dict[str, Any] = {"prompt": f.prompt}
        for name in ("answer", "solution", "id", "domain", "source"):
            if name in self.explicit and getattr(f, name) is not None:
                wanted[name] = getattr(f, name)
        wanted.update({f"metadata.{c}": c for c in f.metadata})
        missing = []
        for target, col in wanted.items():
            cols = col.values() if isinstance(col, dict) else [col]
            missing += [f"{target} <- {c!r}" for c in cols if c not in row]
        if missing:
            raise ValueError(f"source {self.src.path}: mapped columns missing: {', '.join(missing)}; "
                             f"the data has columns {sorted(row)}")
        self.checked = True

    def __call__(self, row: dict, index: int) -> Record:
        if not self.checked:
            self._check_columns(row)
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


def read_source(src: FileSource) -> Iterator[Record]:
    """Normalised records of a file source, lazily."""
    path = Path(src.path)
    fmt = src.format or infer_format(path)
    mapper = RowMapper(src)
    for i, row in enumerate(iter_rows(path, fmt, src.split)):
        if src.limit is not None and i >= src.limit:
            break
        yield mapper(row, i)


def read_records(path: Path) -> Iterator[Record]:
    """Records of a normalised JSONL file (a data_filter output), lazily."""
    return read_source(FileSource(path=str(path), format="jsonl", preset="records"))
