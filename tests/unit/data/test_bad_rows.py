"""Bad data rows: every kind is located at file:line; `on_bad_rows: error` stops there, `skip` drops and counts."""

from __future__ import annotations

import gzip
import importlib
import json

import pytest

from ringctl.data.readers import BadRowError, BadRows, FileSource, read_source
from ringctl.pipeline.context import StageContext

GOOD = json.dumps({"question": "What is 2 + 3?", "final": 5}) + "\n"
MAPPING = {"prompt": "question", "answer": "final"}
# kind -> (bad line, the message at file:2)
KINDS = {
    "not_utf8": (b'{"question": "caf\xe9?", "final": 1}\n', "not UTF-8 (byte 0xe9 at column 18)"),
    "malformed_json": (b'{"question": "What is 1 + 1?", "final": 2\n', "not valid JSON"),
    "not_an_object": (b'["What is 1 + 1?", 2]\n', "a row must be a JSON object, got a list"),
    "missing_field": (b'{"final": 2}\n', "mapped columns missing: prompt <- 'question'"),
    "wrong_type": (b'{"question": {"text": "hi"}, "final": 2}\n',
                   "field 'prompt' (column 'question') must be text, got an object"),
}


def _file(tmp_path, bad_line: bytes, gz: bool = False):
    path = tmp_path / ("data.jsonl.gz" if gz else "data.jsonl")
    data = GOOD.encode() + bad_line + GOOD.encode()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("gz", [False, True])
def test_each_kind_is_an_error_at_file_line(tmp_path, kind, gz):
    line, message = KINDS[kind]
    path = _file(tmp_path, line, gz)
    with pytest.raises(BadRowError) as err:
        list(read_source(FileSource(path=str(path), fields=MAPPING)))
    assert str(err.value).startswith(f"{path}:2: {message}"), str(err.value)
    assert "on_bad_rows: skip" in str(err.value)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_is_skipped_and_counted(tmp_path, kind):
    line, message = KINDS[kind]
    path = _file(tmp_path, line)
    bad = BadRows("skip")
    records = list(read_source(FileSource(path=str(path), fields=MAPPING), bad))
    assert [r["prompt"] for r in records] == ["What is 2 + 3?"] * 2
    assert bad.total == 1 and bad.by_file == {str(path): 1}
    assert bad.examples[0].startswith(f"{path}:2: {message}")


def test_parquet_rows_are_located_by_row_number(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": "ok?", "final": 1}, {"question": None, "final": 2},
                                         {"question": "fine?", "final": 3}]), path)
    assert len(list(read_source(FileSource(path=str(path), fields=MAPPING)))) == 3  # null: the steps decide
    pq.write_table(pa.Table.from_pylist([{"question": 7, "final": 1}, {"question": 8, "final": 2}]), path)
    with pytest.raises(BadRowError, match=r"d\.parquet:row 1: field 'prompt' \(column 'question'\) must be text"):
        list(read_source(FileSource(path=str(path), fields=MAPPING)))


def test_a_source_of_only_bad_rows_is_an_error_even_when_skipping(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"q": 1}\n{"q": 2}\n')
    with pytest.raises(BadRowError, match="every row is bad"):
        list(read_source(FileSource(path=str(path), fields=MAPPING), BadRows("skip")))


def test_truncated_gzip_is_an_error_at_its_line(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(gzip.compress((GOOD * 200).encode())[:-30])
    with pytest.raises(BadRowError, match=r"data\.jsonl\.gz:\d+: cannot read the file any further"):
        list(read_source(FileSource(path=str(path), fields=MAPPING), BadRows("skip")))


def _run_filter(tmp_path, on_bad_rows: str, data, bench):
    data_filter = importlib.import_module("stages.data_filter")
    cfg = data_filter.Config(kind="data_filter", on_bad_rows=on_bad_rows, print_table=False,
                             sources=[{"path": str(data), "fields": MAPPING, "domain": "math"}],
                             steps=[{"type": "decontaminate", "benchmarks": [str(bench)], "n": 3}])
    ctx = StageContext.for_test(tmp_path / "stage", stage_name="filter")
    return data_filter.run(cfg, ctx)


def test_data_filter_stage_error_and_skip_with_report(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_bytes(GOOD.encode() + KINDS["malformed_json"][0] + KINDS["not_utf8"][0]
                     + json.dumps({"question": "What is 4 + 4 today?", "final": 8}).encode() + b"\n")
    bench = tmp_path / "bench.jsonl"
    bench.write_bytes(b'{"problem": "What is 4 + 4 today?"}\n{"problem": 17}\n{"problem": "x\n')
    # every step is built before a record is read: the benchmark's bad row stops it first
    with pytest.raises(BadRowError, match=r"bench\.jsonl:2: text field 'problem' must be text, got int"):
        _run_filter(tmp_path / "a", "error", data, bench)
    good_bench = tmp_path / "good-bench.jsonl"
    good_bench.write_text('{"problem": "What is 4 + 4 today?"}\n')
    with pytest.raises(BadRowError, match=r"data\.jsonl:2: not valid JSON"):
        _run_filter(tmp_path / "a2", "error", data, good_bench)
    out = _run_filter(tmp_path / "b", "skip", data, bench)
    report = json.loads(out["report"].path.read_text())
    assert report["read"] == 2 and report["kept"] == 1  # the 4 + 4 record is contaminated
    bad = report["bad_rows"]
    assert bad["skipped"] == 4 and bad["by_file"] == {str(data): 2, str(bench): 2}
    assert any(e.startswith(f"{data}:3: not UTF-8") for e in bad["examples"])
    assert any(e.startswith(f"{bench}:2: text field 'problem' must be text") for e in bad["examples"])
