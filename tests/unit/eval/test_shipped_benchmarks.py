"""The benchmark files shipped with ringctl (ringctl/data/benchmarks): the README there describes them
exactly, every preset reads them when nothing else is named, and $RINGCTL_BENCHMARKS_DIR, benchmarks_dir or a path
still override them."""

from __future__ import annotations

import gzip
import hashlib
import json
import re

import pytest

from ringctl.data.benchmark_files import benchmark_file, default_benchmarks_dir, shipped_benchmarks_dir
from ringctl.data.demo import DemoSource, generate_demo_records
from ringctl.data.readers import FileSource, read_source
from ringctl.eval.benchmarks import PRESETS, BenchmarkError, BenchmarkSpec, load_benchmark

ROWS = {"math500": 500, "aime24": 30, "aime25": 30, "amc23": 40, "gsm8k": 1319, "humaneval": 164, "ifeval": 541}


@pytest.fixture
def no_env(monkeypatch):
    monkeypatch.delenv("RINGCTL_BENCHMARKS_DIR", raising=False)


def _rows(path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_readme_gives_each_files_rows_fields_and_sha256():
    shipped = shipped_benchmarks_dir()
    readme = (shipped / "README.md").read_text()
    presets = {m[0]: m[1:] for m in re.findall(r"^\| `(\w+)` \| (\S+) \|.*\| (\d+) \| ([^|]+) \|$", readme, re.M)}
    sums = {m[0]: (int(m[1]), m[2]) for m in re.findall(r"^\| (\S+) \| (\d+) \| ([0-9a-f]{64}) \|$", readme, re.M)}
    assert set(presets) == set(PRESETS) == set(ROWS)
    files = sorted(p.name for p in shipped.iterdir() if p.name != "README.md")
    assert sorted(sums) == files == sorted(p.file for p in PRESETS.values())
    for name, (file, rows, fields) in presets.items():
        path = shipped / file
        assert file == PRESETS[name].file and int(rows) == ROWS[name] == len(_rows(path)), name
        data = path.read_bytes()
        assert sums[file] == (len(data), hashlib.sha256(data).hexdigest()), file
        columns = {c for r in _rows(path) for c in r}
        named = {f.split()[0] for f in re.sub(r"\([^)]*\)", "", fields).split(",")}  # "answer (text), idx"
        assert columns == named, (name, columns, fields)


def test_every_preset_reads_the_shipped_copy(no_env):
    assert default_benchmarks_dir() == shipped_benchmarks_dir()
    for name, count in ROWS.items():
        bench = load_benchmark(BenchmarkSpec(name=name))
        assert bench.source == str(shipped_benchmarks_dir() / PRESETS[name].file)
        assert len(bench.problems) == count and len({p["id"] for p in bench.problems}) == count, name
        assert {p["domain"] for p in bench.problems} == {PRESETS[name].domain}
    aime25 = load_benchmark(BenchmarkSpec(name="aime25", limit=2))
    assert aime25.kind == "answer" and [p["reference"] for p in aime25.problems] == ["70", "588"]
    assert aime25.problems[0]["question"].startswith("Find the sum of all integer bases $b>9$")
    assert aime25.problems[0]["prompt"].endswith("within \\boxed{}.")
    ifeval = load_benchmark(BenchmarkSpec(name="ifeval", limit=3))
    assert ifeval.kind == "ifeval" and [p["id"] for p in ifeval.problems] == ["ifeval/1000", "ifeval/1001",
                                                                               "ifeval/1005"]
    first = ifeval.problems[0]
    assert first["reference"]["instruction_id_list"][0] == "punctuation:no_comma"
    assert len(first["reference"]["kwargs"]) == len(first["reference"]["instruction_id_list"])
    assert first["prompt"] == first["question"]  # IFEval's prompt as written, nothing appended


def test_env_dir_benchmarks_dir_and_path_override_the_shipped_copies(no_env, monkeypatch, tmp_path):
    mine = tmp_path / "env"
    mine.mkdir()
    (mine / "gsm8k.jsonl").write_text(json.dumps({"question": "What is 2 + 2?", "answer": "2 + 2 = 4\n#### 4"}) + "\n")
    monkeypatch.setenv("RINGCTL_BENCHMARKS_DIR", str(mine))
    assert benchmark_file("gsm8k") == mine / "gsm8k.jsonl" and benchmark_file("my/file.jsonl").name == "file.jsonl"
    (problem,) = load_benchmark(BenchmarkSpec(name="gsm8k")).problems
    assert problem["question"] == "What is 2 + 2?" and problem["reference"] == "4"
    with pytest.raises(BenchmarkError, match=r"benchmark 'math500': file .*env/math500.jsonl not found; set "
                                             r"RINGCTL_BENCHMARKS_DIR to a directory that holds math500.jsonl, or "
                                             r"unset it \(and benchmarks_dir\) for the copies shipped with ringctl"):
        load_benchmark(BenchmarkSpec(name="math500"))
    # an explicit directory (the evaluate stage's benchmarks_dir) or path wins over the variable
    assert len(load_benchmark(BenchmarkSpec(name="gsm8k", limit=7), shipped_benchmarks_dir()).problems) == 7
    spec = BenchmarkSpec(name="mine", path=str(shipped_benchmarks_dir() / "gsm8k.jsonl"), limit=3, domain="math",
                         fields={"prompt": "question", "answer": "answer", "answer_split": "####"})
    assert load_benchmark(spec).problems[0]["question"].startswith("Janet")


def test_readers_aime25_preset_and_demo_contamination_by_preset(no_env):
    records = list(read_source(FileSource(path=str(benchmark_file("aime25")), preset="aime25")))
    assert len(records) == 30 and records[29]["answer"] and records[0]["domain"] == "math"
    math500 = _rows(shipped_benchmarks_dir() / "math500.jsonl")
    demo = [r for r in generate_demo_records(DemoSource(n=200, contaminated=5, contaminate_from="math500"))
            if r["metadata"].get("demo_kind") == "contaminated"]
    assert len(demo) == 5
    for r in demo:  # the shipped MATH-500 problem, reworded: a prefix and one changed word
        row = math500[r["metadata"]["math500_row"]]
        reworded = row["problem"].replace("What is", "Determine", 1).replace("Find", "Compute", 1)
        assert r["prompt"] == "Solve the following. " + reworded and r["answer"] == row["answer"]
