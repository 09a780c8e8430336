"""Hugging Face checkpoints written whole or not at all, and SFT's epoch checkpoints (the selection candidates:
safetensors + tokenizer + epoch_info.json)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ringctl import chaos
from ringctl.artifacts import disk_full_guard

EPOCH_INFO = "epoch_info.json"


def epoch_dir(root: Path, epoch: int) -> Path:
    return Path(root) / f"epoch-{epoch}"


def save_hf_checkpoint(engine, tokenizer, target: Path, is_main: bool, barrier, files: dict[str, str] | None = None,
                       kill_point: str | None = None) -> Path:
    """All ranks call this (ZeRO shards are gathered): the consolidated model, the tokenizer and `files` (name ->
    text) go into `.tmp-<name>` beside `target`, which rank 0 renames into place when complete. A full device: the
    partial directory is removed and DiskFull names `target` and the space needed (the previous checkpoint beside
    it, which stays intact, sizes the estimate). `kill_point` names the rename for the chaos harness."""
    target = Path(target)
    tmp = target.parent / f".tmp-{target.name}"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
    barrier()
    with disk_full_guard(target, tmp, _previous(target)):
        engine.save_hf(tmp, tokenizer)
        if is_main:
            for name, text in (files or {}).items():
                (tmp / name).write_text(text)
    if is_main:
        if target.exists():
            shutil.rmtree(target)
        if kill_point:
            chaos.point(kill_point)
        os.replace(tmp, target)
    barrier()
    return target


def _previous(target: Path) -> Path | None:
    """The checkpoint written last beside `target` (or `target` itself, being replaced): the size estimate's basis."""
    siblings = [p for p in target.parent.iterdir() if p.is_dir() and not p.name.startswith(".")] \
        if target.parent.is_dir() else []
    return max(siblings, key=lambda p: p.stat().st_mtime_ns, default=None)


def read_epoch_info(ckpt: Path) -> dict:
    p = Path(ckpt) / EPOCH_INFO
    if not p.exists():
        raise FileNotFoundError(f"{ckpt} has no {EPOCH_INFO}: not an SFT epoch checkpoint")
    return json.loads(p.read_text())
