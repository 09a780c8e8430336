"""Every stage places its models by the one device rule (ringctl.train.device): with `resources.device: cuda`
and no CUDA, each stage stops with the rule's error instead of running on the CPU; `cpu` is honoured.
CUDA is hidden from torch here (monkeypatched), so these tests mean the same on a GPU machine."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ringctl.data.records import write_jsonl
from ringctl.data.synth import generate_rl
from ringctl.pipeline.context import Artifact, StageContext
from ringctl.recipe.schema import ResourcesConfig
from ringctl.train.config import BackendsConfig, ModelConfig
from ringctl.train.device import DeviceUnavailable

NO_CUDA = r"resources\.device is 'cuda' but torch sees no CUDA device"


@pytest.fixture(autouse=True)
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def _recipe(device: str = "cuda", **backends):
    return SimpleNamespace(model=ModelConfig(), backends=BackendsConfig(**backends),
                           resources=ResourcesConfig(device=device), seed=0, deterministic=True)


@pytest.fixture(scope="module")
def tiny_epoch(tmp_path_factory) -> Path:
    """A tiny checkpoint laid out as an SFT epoch checkpoint (select_sft reads its epoch_info.json)."""
    from ringctl.train.models import save_tiny

    root = tmp_path_factory.mktemp("ckpts")
    ckpt = save_tiny(ModelConfig(), root / "epoch-1", seed=0)
    (ckpt / "epoch_info.json").write_text(json.dumps({"epoch": 1, "sft_tokens": 100}))
    return ckpt


@pytest.fixture(scope="module")
def prompts(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("prompts") / "rl.jsonl"
    write_jsonl(path, [dict(r) for r in generate_rl(8, seed=0, domains=["arithmetic"])])
    return path


def _ctx(tmp_path, name, inputs, recipe):
    return StageContext.for_test(tmp_path, name, inputs=inputs, recipe=recipe)


def test_sft(tmp_path):
    import stages.sft as sft

    cfg = sft.Config(data="filter.sft", epochs=1, max_seq_len=64, batch_rows=2, eval_num_prompts=0)
    with pytest.raises(DeviceUnavailable, match=NO_CUDA):
        sft.run(cfg, _ctx(tmp_path, "sft", {"filter.sft": tmp_path / "unread.jsonl"}, _recipe()))


def test_sft_with_deepspeed_reads_the_setting_too(tmp_path):
    import stages.sft as sft

    cfg = sft.Config(data="filter.sft", epochs=1, max_seq_len=64, batch_rows=2, eval_num_prompts=0)
    with pytest.raises(DeviceUnavailable, match=NO_CUDA):
        sft.run(cfg, _ctx(tmp_path, "sft", {"filter.sft": tmp_path / "unread.jsonl"}, _recipe(train="deepspeed")))


def test_rl(tmp_path, tiny_epoch, prompts):
    import stages.rl as rl

    cfg = rl.Config(init="select.checkpoint", prompts="filter.rl", steps=1, prompts_per_step=2, samples_per_prompt=2,
                    token_budget=64, max_new_tokens=8, max_prompt_tokens=64, heldout_fraction=0.25,
                    eval_prompts_count=2, reward_workers=1)
    ctx = _ctx(tmp_path, "rl", {"select.checkpoint": tiny_epoch, "filter.rl": prompts}, _recipe())
    with pytest.raises(DeviceUnavailable, match=NO_CUDA):
        rl.run(cfg, ctx)


def test_reward_model_training(tmp_path):
    import stages.reward_model as rm

    cfg = rm.Config(pairs="prefs.preferences", epochs=1)
    with pytest.raises(DeviceUnavailable, match=NO_CUDA):
        rm.run(cfg, _ctx(tmp_path, "rm", {"prefs.preferences": tmp_path / "unread.jsonl"}, _recipe()))


def test_select_sft(tmp_path, tiny_epoch, prompts):
    import stages.select_sft as select_sft

    cfg = select_sft.Config(checkpoints="sft.checkpoints", prompts="filter.rl", num_prompts=2, samples_per_prompt=1,
                            max_new_tokens=4)
    ctx = _ctx(tmp_path, "select", {"sft.checkpoints": tiny_epoch.parent, "filter.rl": prompts}, _recipe())
    with pytest.raises(DeviceUnavailable, match=NO_CUDA):
        select_sft.run(cfg, ctx)


def test_evaluate(tmp_path, tiny_epoch, prompts):
    import stages.evaluate as evaluate

    cfg = evaluate.Config(checkpoints=["sft.final"], reward_workers=1,
                          benchmarks=[{"name": "heldout", "data": "filter.rl", "n": 1, "max_new_tokens": 4}])
    ctx = _ctx(tmp_path, "evaluate", {"sft.final": tiny_epoch, "filter.rl": prompts}, _recipe())
    with pytest.raises(DeviceUnavailable, match=NO_CUDA):
        evaluate.run(cfg, ctx)
    assert not (ctx.outputs_dir / "report.json").exists()


def test_evaluation_sampler_places_the_model_by_the_rule(tiny_epoch):
    """`ringctl eval` (auto) and the evaluate stage share Generator.load: cpu is cpu, cuda without CUDA fails."""
    from ringctl.rollout.generation import EngineSettings, Generator

    sampler = Generator.load(tiny_epoch, ModelConfig(), EngineSettings(device="cpu"))
    assert next(sampler.model.parameters()).device == torch.device("cpu")
    sampler.close()
    with pytest.raises(DeviceUnavailable, match=NO_CUDA):
        Generator.load(tiny_epoch, ModelConfig(), EngineSettings(device="cuda"))


def _filter_cfg(prompts, device: str | None):
    import stages.data_filter as data_filter

    step = {"type": "difficulty", "checkpoint": "sft.final", "samples": 1, "max_new_tokens": 4, "batch_prompts": 8}
    if device is not None:
        step["device"] = device
    return data_filter.Config(sources=[{"path": str(prompts), "preset": "records"}],
                              steps=[step], default_split="rl_reasoning", print_table=False)


def test_data_filter_difficulty_step_follows_resources_device(tmp_path, tiny_epoch, prompts):
    import stages.data_filter as data_filter

    ctx = _ctx(tmp_path, "filter", {"sft.final": Artifact(tiny_epoch)}, _recipe("cuda"))
    with pytest.raises(DeviceUnavailable, match=r"the difficulty step's device \(auto: as resources\.device\) is "
                                                 r"'cuda' but torch sees no CUDA device"):
        data_filter.run(_filter_cfg(prompts, None), ctx)


def test_data_filter_difficulty_step_device_of_its_own_wins(tmp_path, tiny_epoch, prompts):
    import stages.data_filter as data_filter

    ctx = _ctx(tmp_path, "filter", {"sft.final": Artifact(tiny_epoch)}, _recipe("cuda"))
    out = data_filter.run(_filter_cfg(prompts, "cpu"), ctx)  # an untrained model: every prompt too hard
    report = json.loads((ctx.outputs_dir / "report.json").read_text())
    assert out and report["steps"][0]["reasons"] == {"too hard (never solved)": 8}
