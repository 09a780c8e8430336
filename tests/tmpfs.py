"""A real small file system for full-disk tests: a tmpfs of a given size, mounted for the test (root, or
CAP_SYS_ADMIN), enlarged in place with `remount`, unmounted at the end; the test is skipped, saying why, where
mounting is not allowed."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _mount(*args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["mount", *args], capture_output=True, text=True, timeout=60)
    except FileNotFoundError as e:
        return subprocess.CompletedProcess(["mount"], 127, "", str(e))


@contextlib.contextmanager
def tmpfs(path: Path, size_bytes: int) -> Iterator[Path]:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    proc = _mount("-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path))
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a {size_bytes}-byte tmpfs at {path} (needs root or CAP_SYS_ADMIN): "
                    f"{(proc.stderr or proc.stdout).strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)


def remount(path: Path, size_bytes: int) -> None:
    """Resize the tmpfs at `path` in place (its files stay)."""
    proc = _mount("-o", f"remount,size={size_bytes}", str(path))
    assert proc.returncode == 0, proc.stderr
