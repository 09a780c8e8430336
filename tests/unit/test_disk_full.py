"""A full device while a checkpoint or an output is written (on a real small tmpfs): one DiskFull naming the path,
the space needed and the space free; the partial temporary file or directory removed; what was written before
intact and readable. Also: which exceptions mean a full device (torch.save's has no errno)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import torch

from ringctl import artifacts
from ringctl.errors import EXIT_STAGE_FAILED, DiskFull
from ringctl.pipeline.context import StageContext
from tests.tmpfs import tmpfs

MIB = 1 << 20


@pytest.fixture
def small_disk(tmp_path):
    with tmpfs(tmp_path / "disk", 4 * MIB) as path:
        yield path


def _fill(path: Path, leave: int) -> None:
    """Fill the device of `path` until `leave` bytes are free."""
    (path / "filler").write_bytes(b"\0" * max(artifacts.free_bytes(path) - leave, 0))


def _chain(outer: BaseException, inner: BaseException) -> BaseException:
    try:
        try:
            raise inner
        except BaseException:
            raise outer  # noqa: B904 (the implicit __context__ is the point)
    except BaseException as e:
        return e


def test_which_exceptions_mean_a_full_device(tmp_path, small_disk):
    assert artifacts.is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert artifacts.is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert artifacts.is_disk_full(RuntimeError("Error while serializing: I/O error: No space left on device (os "
                                               "error 28)"))  # safetensors
    assert artifacts.is_disk_full(_chain(RuntimeError("wrapped"), OSError(errno.ENOSPC, "full")))
    assert not artifacts.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not artifacts.is_disk_full(ValueError("bad"))
    # torch.save to a path: no errno, only its stream's failure; told apart by the device's free space
    _fill(small_disk, 64 * 1024)
    with pytest.raises(RuntimeError) as err:
        torch.save({"w": torch.zeros(MIB)}, small_disk / "a.pt")
    assert artifacts.is_disk_full(err.value, small_disk)
    assert not artifacts.is_disk_full(err.value, tmp_path)  # the same message on a device with room: not "full"


def test_a_state_that_does_not_fit_leaves_the_previous_one_and_no_partial_directory(small_disk):
    ctx = StageContext.for_test(small_disk, "sft")
    with ctx.save_state("step-0000001") as d:
        torch.save({"w": torch.ones(3 * MIB // 8)}, d / "engine.pt")  # 1.5 MiB
    first = ctx.resume_state()
    _fill(small_disk, 1 * MIB)
    with pytest.raises(DiskFull) as err:
        with ctx.save_state("step-0000002") as d:
            torch.save({"w": torch.ones(MIB // 2)}, d / "engine.pt")  # 2 MiB: does not fit
    message = str(err.value)
    assert err.value.exit_code == EXIT_STAGE_FAILED
    lines = message.splitlines()
    assert lines[0] == f"no space left on the device while writing {ctx.state_dir / 'step-0000002'}"
    assert lines[1].startswith("it needs about 1.5 MiB") and "(the size of step-0000001) and " in lines[1]
    assert lines[1].endswith(" are free there")
    assert lines[2].startswith("The partial .tmp-step-0000002-") and "; step-0000001, written before, is intact. " \
        in lines[2] and lines[2].endswith("`ringctl resume` the run.")
    assert sorted(p.name for p in ctx.state_dir.iterdir()) == ["step-0000001"]  # the partial directory is gone
    assert ctx.resume_state() == first
    assert torch.equal(torch.load(first / "engine.pt")["w"], torch.ones(3 * MIB // 8))


def test_a_shared_state_write_that_fills_the_device(small_disk):
    """save_state_shared (the one SFT and RL use): torch.save straight to a path, whose failure carries no errno."""
    ctx = StageContext.for_test(small_disk, "rl")
    with ctx.save_state_shared("step-000001", barrier=lambda: None) as d:
        torch.save({"w": torch.ones(1024)}, d / "rl_state.pt")
    _fill(small_disk, 256 * 1024)
    free = artifacts.free_bytes(small_disk)
    with pytest.raises(DiskFull, match=r"while writing .*/rl/state/step-000002\nit needs about"):
        with ctx.save_state_shared("step-000002", barrier=lambda: None) as d:
            torch.save({"w": torch.ones(MIB)}, d / "rl_state.pt")
    assert sorted(p.name for p in ctx.state_dir.iterdir()) == ["step-000001"]
    # the space is back at once (torch's failed writer held the removed file open), so the error can be written
    assert artifacts.free_bytes(small_disk) >= free - 8192
    assert ctx.resume_state().name == "step-000001"


def test_an_atomic_file_write_keeps_the_old_file(small_disk):
    target = small_disk / "out" / "report.json"
    artifacts.atomic_write_json(target, {"v": 1})
    _fill(small_disk, 64 * 1024)
    with pytest.raises(DiskFull, match=r"report.json\nit needs about 1\.0 MiB \(the size of what was being written\)"):
        artifacts.atomic_write_bytes(target, b"x" * MIB)
    assert json.loads(target.read_text()) == {"v": 1}
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


def test_a_hugging_face_checkpoint_that_does_not_fit(tmp_path):
    """safetensors' own error (it quotes os error 28); sized by the previous checkpoint beside it."""
    from ringctl.train.checkpoint import save_hf_checkpoint
    from ringctl.train.config import ModelConfig, TinyModelConfig
    from ringctl.train.engine import OptimSpec, build_engine
    from ringctl.train.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(ModelConfig(tiny=TinyModelConfig(num_hidden_layers=1)))
    engine = build_engine(model, OptimSpec(lr=1e-3))
    probe = save_hf_checkpoint(engine, tok, tmp_path / "probe" / "step-1", True, lambda: None)
    size = artifacts.tree_size(probe)
    with tmpfs(tmp_path / "disk", int(size * 1.6)) as disk:
        first = save_hf_checkpoint(engine, tok, disk / "checkpoints" / "step-1", True, lambda: None)
        with pytest.raises(DiskFull) as err:
            save_hf_checkpoint(engine, tok, disk / "checkpoints" / "step-2", True, lambda: None)
        assert f"while writing {disk / 'checkpoints' / 'step-2'}\nit needs about {artifacts.human_bytes(size)} " \
            f"(the size of step-1)" in str(err.value)
        assert [p.name for p in (disk / "checkpoints").iterdir()] == ["step-1"]
        from transformers import AutoModelForCausalLM

        AutoModelForCausalLM.from_pretrained(first)  # the previous checkpoint still loads


def test_the_stage_error_names_the_file_of_an_unguarded_write(tmp_path):
    from ringctl.artifacts import ERROR_FILE
    from ringctl.pipeline.stage_main import write_error

    (tmp_path / "run" / "filter").mkdir(parents=True)
    e = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "filter" / "outputs" / "x.jsonl"))
    write_error(e, [str(tmp_path / "run"), "filter"])
    message = (tmp_path / "run" / "filter" / ERROR_FILE).read_text()
    assert message.startswith(f"no space left on the device while writing {e.filename}\n")
