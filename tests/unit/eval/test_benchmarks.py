"""Benchmark specs and loading: presets over the shared files, field mappings, and the input errors that must
stop `ringctl eval` and the evaluate stage before any generation."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from ringctl.eval.benchmarks import BenchmarkError, BenchmarkSpec, load_benchmark, training_overlap


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_presets_read_the_shared_files(benchmarks):
    gsm = load_benchmark(BenchmarkSpec(name="gsm8k", limit=5), benchmarks)
    assert len(gsm.problems) == 5 and gsm.kind == "answer"
    first = gsm.problems[0]
    assert first["reference"] == "18" and first["domain"] == "math"  # the number after ####
    assert first["prompt"].startswith("Janet") and first["prompt"].endswith("within \\boxed{}.")
    assert first["question"] == first["prompt"].split("\nPlease reason")[0]
    math500 = load_benchmark(BenchmarkSpec(name="math500"), benchmarks)
    assert len(math500.problems) == 500 and len({p["id"] for p in math500.problems}) == 500
    for name, count in (("aime24", 30), ("amc23", 40)):
        assert len(load_benchmark(BenchmarkSpec(name=name), benchmarks).problems) == count
    he = load_benchmark(BenchmarkSpec(name="humaneval", limit=2), benchmarks)
    assert he.kind == "code" and set(he.problems[0]["reference"]) == {"test", "entry_point"}


def test_unknown_benchmark_says_did_you_mean():
    with pytest.raises(ValidationError, match=r"unknown benchmark 'gsm8' \(did you mean 'gsm8k'\?\)") as e:
        BenchmarkSpec(name="gsm8")
    assert e.value.errors()[0]["loc"] == ("name",)
    with pytest.raises(ValidationError, match="named benchmarks: math500, aime24"):
        BenchmarkSpec(name="mmlu")
    # with a path or stage data any name is the table's label
    assert BenchmarkSpec(name="mine", path="x.jsonl").name == "mine"


def test_k_larger_than_n_is_refused():
    with pytest.raises(ValidationError, match="k=8 is larger than n=4") as e:
        BenchmarkSpec(name="gsm8k", n=4, k=[1, 8])
    assert e.value.errors()[0]["loc"] == ("k",)
    assert BenchmarkSpec(name="gsm8k", n=4, k=[4, 2, 2]).ks() == [2, 4]
    assert BenchmarkSpec(name="gsm8k", n=8).ks() == [1, 2, 4, 8]


def test_unknown_domain_is_refused():
    with pytest.raises(ValidationError, match="unknown verifier domain 'maths'.*did you mean 'math'"):
        BenchmarkSpec(name="x", path="x.jsonl", domain="maths")


def test_missing_preset_file_names_the_directory(tmp_path):
    with pytest.raises(BenchmarkError, match=r"benchmark 'aime24': file .*aime24.jsonl not found; set "
                                             r"RINGCTL_BENCHMARKS_DIR"):
        load_benchmark(BenchmarkSpec(name="aime24"), tmp_path)


def test_field_mapping_reads_other_field_names(tmp_path):
    path = _jsonl(tmp_path / "mine.jsonl", [{"q": "what is 2+2?", "gold": 4, "key": "p1"},
                                            {"q": "what is 3+3?", "gold": "6", "key": "p2"}])
    bench = load_benchmark(BenchmarkSpec(name="mine", path=str(path), fields={"prompt": "q", "answer": "gold",
                                                                              "id": "key"}, domain="math"))
    assert [p["id"] for p in bench.problems] == ["mine/p1", "mine/p2"]
    assert [p["reference"] for p in bench.problems] == ["4", "6"] and bench.problems[0]["prompt"] == "what is 2+2?"


def test_field_mapping_naming_a_missing_field_gives_the_first_such_line(tmp_path):
    rows = [{"q": "a", "gold": "1"}, {"q": "b", "gold": "2"}, {"question": "c", "gold": "3"}]
    path = _jsonl(tmp_path / "mine.jsonl", rows)
    spec = BenchmarkSpec(name="mine", path=str(path), fields={"prompt": "q", "answer": "gold"}, domain="math")
    with pytest.raises(BenchmarkError, match=rf"{path}:3: benchmark 'mine': fields.prompt names the field 'q', which "
                                             r"this row does not have"):
        load_benchmark(spec)
    # the CLI's wording names its flag
    with pytest.raises(BenchmarkError, match=r"mine.jsonl:1: .*--answer-field names the field 'gld'.*did you mean "
                                             r"'gold'"):
        load_benchmark(BenchmarkSpec(name="mine", path=str(path), fields={"prompt": "q", "answer": "gld"},
                                     domain="math"), flags={"prompt": "--prompt-field", "answer": "--answer-field"})


def test_a_file_without_a_domain_is_refused(tmp_path):
    path = _jsonl(tmp_path / "mine.jsonl", [{"q": "a", "gold": "1"}])
    with pytest.raises(BenchmarkError, match="has no verifier domain"):
        load_benchmark(BenchmarkSpec(name="mine", path=str(path), fields={"prompt": "q", "answer": "gold"}))


def test_stage_data_keeps_each_records_domain(tmp_path):
    from ringctl.data import synth
    from ringctl.data.records import write_jsonl

    path = tmp_path / "heldout.jsonl"
    write_jsonl(path, synth.generate_rl(6, seed=3, domains=["arithmetic", "countdown"]))
    bench = load_benchmark(BenchmarkSpec(name="heldout", data="heldout.rl_reasoning", limit=4), data_path=path)
    assert [p["domain"] for p in bench.problems] == ["arithmetic", "countdown"] * 2
    assert bench.problems[0]["prompt"] == bench.problems[0]["question"]  # no suffix for non-preset data


def test_sampling_seed_depends_on_the_run_seed_and_the_name():
    a, b = BenchmarkSpec(name="gsm8k"), BenchmarkSpec(name="math500")
    assert a.sampling_seed(1) == BenchmarkSpec(name="gsm8k").sampling_seed(1)
    assert len({a.sampling_seed(1), a.sampling_seed(2), b.sampling_seed(1)}) == 3
    assert BenchmarkSpec(name="gsm8k", seed=5).sampling_seed(1) == 5


def test_training_overlap_uses_the_decontaminators_measure(benchmarks):
    gsm = load_benchmark(BenchmarkSpec(name="gsm8k", limit=10), benchmarks)
    amc = load_benchmark(BenchmarkSpec(name="amc23", limit=5), benchmarks)
    leaked = gsm.problems[3]["question"]
    texts = [("t0", "what is 3+4?"), ("t1", "Solve this. " + leaked + " Show your work."), ("t2", "unrelated"),
             ("t3", amc.problems[0]["question"])]
    found = training_overlap([gsm, amc], iter(texts))  # one lazy pass for every benchmark
    assert found["gsm8k"]["problems"] == 1 and found["gsm8k"]["of"] == 10
    assert found["gsm8k"]["examples"] == [{"problem_id": gsm.problems[3]["id"], "score": 1.0, "training_id": "t1"}]
    assert found["amc23"]["problems"] == 1 and found["amc23"]["examples"][0]["training_id"] == "t3"
    assert training_overlap([gsm], texts[:1])["gsm8k"]["problems"] == 0


def test_domains_keep_the_problems_of_those_domains_and_limit_counts_them(tmp_path):
    from ringctl.data import synth
    from ringctl.data.records import write_jsonl

    path = tmp_path / "rl_general.jsonl"
    records = synth.generate_general(40, seed=5)
    write_jsonl(path, records)
    assert {r["domain"] for r in records} == {"chat", "ifeval"}  # the chat ones have no verifier
    bench = load_benchmark(BenchmarkSpec(name="heldout_if", data="heldout.rl_general", domains=["ifeval"], limit=5),
                           data_path=path)
    assert [p["id"] for p in bench.problems] == [r["id"] for r in records if r["domain"] == "ifeval"][:5]
    assert {p["domain"] for p in bench.problems} == {"ifeval"} and bench.kind == "ifeval"
    with pytest.raises(BenchmarkError, match=r"has no problems of the domains \['code'\]"):
        load_benchmark(BenchmarkSpec(name="x", data="heldout.rl_general", domains=["code"]), data_path=path)
    with pytest.raises(ValidationError, match="unknown verifier domain 'ifevl'.*did you mean 'ifeval'"):
        BenchmarkSpec(name="x", data="heldout.rl_general", domains=["ifevl"])
