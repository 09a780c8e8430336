"""Readers: jsonl / parquet / hf_disk with field mappings, presets on the real benchmark files."""

from __future__ import annotations

import gzip
import json

import pytest

from ringctl.data.readers import FileSource, infer_format, read_records, read_source
from ringctl.data.records import make_record, write_jsonl

ROWS = [
    {"question": "What is 2 + 3?", "final": 5, "steps": "2 + 3 = 5", "lvl": 1, "topic": "arith"},
    {"question": "What is 10 / 4?", "final": 2.5, "steps": "10 / 4 = 2.5", "lvl": 2, "topic": "arith"},
]
MAPPING = {"prompt": "question", "answer": "final", "solution": "steps", "metadata": ["lvl"]}


def _check_mapped(records: list[dict], source: str) -> None:
    assert [r["prompt"] for r in records] == ["What is 2 + 3?", "What is 10 / 4?"]
    assert [r["answer"] for r in records] == ["5", "2.5"]  # numbers become text, 5.0 would too
    assert records[0]["solution"] == "2 + 3 = 5"
    assert records[0]["metadata"] == {"lvl": 1}
    assert records[0]["domain"] == "math" and records[0]["source"] == source
    assert [r["id"] for r in records] == [f"{source}/0", f"{source}/1"]


def test_jsonl_with_field_mapping(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    records = list(read_source(FileSource(path=str(path), fields=MAPPING, domain="math")))
    _check_mapped(records, "mine")


def test_gzipped_jsonl_and_limit(tmp_path):
    path = tmp_path / "mine.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in ROWS)
    records = list(read_source(FileSource(path=str(path), fields=MAPPING, domain="math", limit=1)))
    assert len(records) == 1 and records[0]["answer"] == "5"


def test_parquet_with_field_mapping(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "mine.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert infer_format(path) == "parquet"
    records = list(read_source(FileSource(path=str(path), fields=MAPPING, domain="math", source="mine")))
    _check_mapped(records, "mine")


def test_hf_disk_dataset_and_datasetdict(tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert infer_format(tmp_path / "ds") == "hf_disk"
    _check_mapped(list(read_source(FileSource(path=str(tmp_path / "ds"), fields=MAPPING, domain="math",
                                              source="mine"))), "mine")
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS), "test": datasets.Dataset.from_list(ROWS[:1])})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match="set `split:`"):
        list(read_source(FileSource(path=str(tmp_path / "dd"), fields=MAPPING)))
    test = list(read_source(FileSource(path=str(tmp_path / "dd"), fields=MAPPING, split="test")))
    assert len(test) == 1 and test[0]["prompt"] == "What is 2 + 3?"


def test_explicitly_mapped_column_must_exist(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n")
    with pytest.raises(ValueError, match=r"answer <- 'answer_text'.*columns \['final'"):
        list(read_source(FileSource(path=str(path), fields={**MAPPING, "answer": "answer_text"})))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(read_source(FileSource(path=str(tmp_path / "nope.jsonl"))))


def test_normalised_records_round_trip(tmp_path):
    recs = [make_record(id="a/1", prompt="p", answer={"x": 1}, domain="code", source="a", metadata={"k": 2})]
    write_jsonl(tmp_path / "r.jsonl", recs)
    assert list(read_records(tmp_path / "r.jsonl")) == recs


def test_math500_preset(benchmarks):
    records = list(read_source(FileSource(path=str(benchmarks / "math500.jsonl"), preset="math500")))
    assert len(records) == 500
    first = records[0]
    assert first["prompt"].startswith("Convert the point $(0,3)$")
    assert first["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert "\\boxed" in first["solution"]
    assert first["domain"] == "math" and first["source"] == "math500"
    assert first["metadata"] == {"subject": "Precalculus", "level": 2}
    assert len({r["id"] for r in records}) == 500


def test_gsm8k_preset_splits_final_answer(benchmarks):
    records = list(read_source(FileSource(path=str(benchmarks / "gsm8k.jsonl"), preset="gsm8k")))
    assert len(records) == 1319
    first = records[0]
    assert first["prompt"].startswith("Janet\u2019s ducks lay 16 eggs")
    assert first["answer"] == "18"
    assert "####" not in first["solution"] and "9 duck eggs" in first["solution"]
    assert all("####" not in r["answer"] and "," not in r["answer"] for r in records)


def test_humaneval_preset_builds_dict_reference(benchmarks):
    records = list(read_source(FileSource(path=str(benchmarks / "humaneval.jsonl.gz"), preset="humaneval")))
    assert len(records) == 164
    first = records[0]
    assert first["domain"] == "code" and first["id"] == "humaneval/HumanEval/0"
    assert first["answer"]["entry_point"] == "has_close_elements"
    assert "def check(candidate)" in first["answer"]["test"]
    assert first["solution"].lstrip().startswith("for idx, elem")


def test_unknown_mapping_key_is_a_config_error():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="promt"):
        FileSource(path="x.jsonl", fields={"promt": "question"})
