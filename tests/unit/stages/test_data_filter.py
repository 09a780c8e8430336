"""The data_filter stage through StageContext.for_test, chained like recipes/filter-demo.yaml."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from ringctl.data.records import iter_jsonl
from ringctl.pipeline.context import StageContext
from ringctl.recipe.base import iter_refs

data_filter = importlib.import_module("stages.data_filter")
Config = data_filter.Config
REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "filter-demo.yaml"


def run_stage(tmp_path, name: str, cfg: dict, inputs: dict | None = None):
    ctx = StageContext.for_test(tmp_path, stage_name=name, inputs=inputs or {})
    return ctx, data_filter.run(Config(**cfg), ctx)


def test_contract():
    assert data_filter.KIND == "data_filter"
    assert data_filter.OUTPUTS[:4] == ("all", "sft", "rl_reasoning", "rl_general")
    cfg = Config(kind="data_filter", sources=[{"input": "clean.all"}, {"path": "x.jsonl", "preset": "math500"},
                                              {"type": "demo", "n": 10}])
    assert [type(s).__name__ for s in cfg.sources] == ["StageSource", "FileSource", "DemoSource"]
    assert [str(ref) for _, ref in iter_refs(cfg)] == ["clean.all"]


@pytest.mark.parametrize("bad, match", [
    ({"sources": [{"input": "clean"}]}, "stage reference"),
    ({"sources": [{"url": "x"}]}, "needs `path:`"),
    ({"sources": [{"type": "demo"}], "splits": {"train": {}}}, "unknown split"),
    ({"sources": [{"type": "demo"}], "steps": [{"type": "exact_dedup"}, {"type": "exact_dedup"}]}, "unique"),
    ({"sources": [{"type": "demo"}], "stepz": []}, "stepz"),
    ({"sources": []}, "at least 1"),
])
def test_config_errors(bad, match):
    with pytest.raises(ValidationError, match=match):
        Config(kind="data_filter", **bad)


def test_whole_stage_chain(tmp_path, benchmarks):
    math500 = str(benchmarks / "math500.jsonl")
    raw_ctx, raw = run_stage(tmp_path, "raw", {"sources": [{"type": "demo", "n": 300, "contaminated": 8,
                                                            "contaminate_from": math500}]})
    raw_records = list(iter_jsonl(raw["all"].path))
    assert raw["all"].meta["records"] == len(raw_records) > 300
    for split in ("sft", "rl_reasoning", "rl_general"):  # not configured: written empty
        assert raw[split].path.exists() and raw[split].path.read_text() == ""

    clean_cfg = {"sources": [{"input": "raw.all"}, {"path": math500, "preset": "math500", "limit": 5}],
                 "steps": [{"type": "characters"}, {"type": "length", "max_chars": 2000}, {"type": "exact_dedup"},
                           {"type": "near_dedup", "threshold": 0.7}, {"type": "guessable_formats"},
                           {"type": "decontaminate", "benchmarks": [math500], "n": 8, "name": "decontam_math"}],
                 "splits": {"sft": {"has_solution": True}, "rl_reasoning": {"domains": ["math", "code", "science"]}},
                 "default_split": "rl_general"}
    ctx, out = run_stage(tmp_path, "clean", clean_cfg, {"raw.all": raw["all"]})
    report = json.loads(out["report"].path.read_text())
    assert report["sources"] == {"raw.all": len(raw_records), "math500": 5}
    assert report["read"] == len(raw_records) + 5
    steps = {s["name"]: s for s in report["steps"]}
    assert steps["decontam_math"]["dropped"] >= 5 + 5  # the 5 MATH-500 rows themselves and most reworded ones
    assert report["read"] - sum(s["dropped"] for s in report["steps"]) == report["kept"]
    kept = list(iter_jsonl(out["all"].path))
    assert len(kept) == report["kept"] == out["all"].meta["records"]
    assert {r["metadata"]["demo_kind"] for r in kept} <= {"clean", "near_duplicate"}
    assert sum(r["metadata"]["demo_kind"] == "clean" for r in kept) >= 0.97 * 300
    # first match: every kept record in exactly one split (rl_general is the default)
    split_ids = {s: [r["id"] for r in iter_jsonl(out[s].path)] for s in ("sft", "rl_reasoning", "rl_general")}
    assert sum(map(len, split_ids.values())) == len(kept) == sum(report["splits"].values())
    assert all(r["solution"] for r in iter_jsonl(out["sft"].path))
    assert {r["domain"] for r in iter_jsonl(out["rl_general"].path)} == {"general"}
    # tracking: metrics per step and the markdown report
    metrics = ctx.tracker.history()[0]
    assert metrics["filter/exact_dedup/dropped"] == steps["exact_dedup"]["dropped"] > 0
    assert metrics["filter/decontam_math/kept"] == report["kept"]
    assert "| near_dedup | near_dedup |" in (ctx.stage_dir / "filter_report.md").read_text()

    # downstream stage reads `clean.all`
    _, split = run_stage(tmp_path, "split", {"sources": [{"input": "clean.all"}], "assign": "all_matches",
                                             "splits": {"sft": {"has_solution": True},
                                                        "rl_reasoning": {"domains": ["math"]}}},
                         {"clean.all": out["all"]})
    assert split["all"].path.read_text() == out["all"].path.read_text()
    sft = {r["id"] for r in iter_jsonl(split["sft"].path)}
    rl = {r["id"] for r in iter_jsonl(split["rl_reasoning"].path)}
    assert sft & rl  # all_matches: math items with a solution go to both
    report = json.loads(split["report"].path.read_text())
    assert report["unmatched_dropped"] == len(kept) - len(sft | rl) > 0  # code/science/general: no split


def test_missing_benchmark_file_fails_before_writing(tmp_path):
    cfg = {"sources": [{"type": "demo", "n": 5}],
           "steps": [{"type": "decontaminate", "benchmarks": [str(tmp_path / "missing" / "math500.jsonl")]}]}
    ctx = StageContext.for_test(tmp_path, stage_name="decontam")
    with pytest.raises(ValueError, match="benchmark file .*missing/math500.jsonl.* not found"):
        data_filter.run(Config(**cfg), ctx)
    assert not (ctx.outputs_dir / "all.jsonl").exists()


def test_stop_request_writes_nothing(tmp_path):
    ctx = StageContext.for_test(tmp_path, stage_name="raw")
    ctx.request_stop()
    assert data_filter.run(Config(sources=[{"type": "demo", "n": 1500}]), ctx) == {}
    assert not (ctx.outputs_dir / "all.jsonl").exists()


def test_filter_demo_recipe_loads_and_validates(monkeypatch):
    from omegaconf import OmegaConf

    from ringctl.data.benchmark_files import shipped_benchmarks_dir

    data = yaml.safe_load(RECIPE.read_text())
    assert data["name"] == "filter-demo"
    monkeypatch.delenv("RINGCTL_BENCHMARKS_DIR", raising=False)
    resolved = OmegaConf.to_container(OmegaConf.create(data), resolve=True)
    configs = {name: Config(**stage) for name, stage in resolved["stages"].items()}
    assert list(configs) == ["raw", "clean", "decontam", "split"]
    refs = {name: [str(r) for _, r in iter_refs(cfg)] for name, cfg in configs.items()}
    assert refs == {"raw": [], "clean": ["raw.all"], "decontam": ["clean.all"], "split": ["decontam.all"]}
    # the recipe names presets; they resolve to the copies shipped with ringctl
    assert [b.path for b in configs["decontam"].steps[0].benchmark_files()] == [
        "math500", "gsm8k", "aime24", "amc23", "humaneval"]
    shipped = shipped_benchmarks_dir()
    assert configs["decontam"].external_files() == [str(shipped / f) for f in (
        "math500.jsonl", "gsm8k.jsonl", "aime24.jsonl", "amc23.jsonl", "humaneval.jsonl.gz")]
    assert all(Path(f).is_file() for f in configs["decontam"].external_files())
    assert configs["raw"].sources[0].contaminate_from == "math500"
    assert configs["raw"].external_files() == [str(shipped / "math500.jsonl")]
    assert set(configs["split"].splits) == {"sft", "rl_reasoning", "rl_general"}
