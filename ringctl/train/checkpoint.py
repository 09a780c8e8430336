"""Epoch checkpoints (the selection candidates): Hugging Face safetensors + tokenizer + epoch_info.json."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ringctl import chaos

EPOCH_INFO = "epoch_info.json"


def epoch_dir(root: Path, epoch: int) -> Path:
    return Path(root) / f"epoch-{epoch}"


def save_epoch_checkpoint(engine, tokenizer, root: Path, epoch: int, info: dict, is_main: bool, barrier) -> Path:
    """All ranks call this (ZeRO shards are gathered); rank 0 renames the finished directory into place."""
    target = epoch_dir(root, epoch)
    tmp = Path(root) / f".tmp-epoch-{epoch}"
    if is_main:
        shutil.rmtree(tmp, ignore_errors=True)
    barrier()
    engine.save_hf(tmp, tokenizer)
    if is_main:
        (tmp / EPOCH_INFO).write_text(json.dumps({"epoch": epoch, **info}, indent=2))
        if target.exists():
            shutil.rmtree(target)
        chaos.point("outputs-write")
        os.replace(tmp, target)
    barrier()
    return target


def read_epoch_info(ckpt: Path) -> dict:
    p = Path(ckpt) / EPOCH_INFO
    if not p.exists():
        raise FileNotFoundError(f"{ckpt} has no {EPOCH_INFO}: not an SFT epoch checkpoint")
    return json.loads(p.read_text())
