"""Run-directory layout, atomic writes and sha256 manifests.

Layout::

    <workdir>/<run-id>/state.json              local state (works without the tracking server)
    <workdir>/<run-id>/recipe.resolved.yaml    the recipe exactly as run
    <workdir>/<run-id>/<stage>/                stage directory
        outputs/<name>...                      declared outputs
        state/<tag>/                           resumable training state (latest complete one wins)
        manifest.json                          written last: outputs with sha256; its presence = stage complete
        metrics.jsonl, stage.log
    <workdir>/.cache/<fingerprint>.json        index: fingerprint -> completed stage dir (cross-run cache)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ringctl import chaos

MANIFEST = "manifest.json"
STATE_DIR = "state"
OUTPUTS_DIR = "outputs"


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, kill_point: str | None = None) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see the old or the new file.
    `kill_point` names this write for the chaos harness (`ringctl.chaos`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if kill_point:
            chaos.point(kill_point)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str, kill_point: str | None = None) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), kill_point)


def atomic_write_json(path: Path, obj: Any, kill_point: str | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", kill_point)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


@contextlib.contextmanager
def atomic_dir(target: Path, kill_point: str = "outputs-write") -> Iterator[Path]:
    """Yield a temporary directory; on success it is renamed to `target` (replacing an older one).

    A crash inside the block leaves `target` untouched and only a `.tmp-*` directory behind,
    which `clean_partial` removes.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        yield tmp
        _fsync_tree(tmp)
        chaos.point(kill_point)
        if target.exists():
            old = target.parent / f".old-{target.name}-{os.getpid()}"
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _fsync_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def clean_partial(directory: Path) -> None:
    """Remove leftovers of interrupted atomic writes (`.tmp-*`, `.old-*` directories, `.<name>.*.tmp` files)."""
    directory = Path(directory)
    if not directory.exists():
        return
    for p in directory.iterdir():
        if p.name.startswith((".tmp-", ".old-")):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        elif p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
            p.unlink(missing_ok=True)


def file_entries(path: Path) -> list[dict]:
    """sha256 and size of every file under `path` (or of `path` itself), relative paths sorted."""
    path = Path(path)
    def entry(p: Path, rel: str) -> dict:
        st = p.stat()
        return {"path": rel, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256_file(p)}

    if path.is_file():
        return [entry(path, path.name)]
    return [entry(p, str(p.relative_to(path))) for p in sorted(path.rglob("*"))
            if p.is_file() and not any(part.startswith((".tmp-", ".old-")) for part in p.relative_to(path).parts)]


def write_manifest(stage_dir: Path, outputs: dict[str, dict], extra: dict | None = None) -> dict:
    """Write `manifest.json` last, atomically: its presence marks the stage complete.

    `outputs` maps output name -> {"path": str, "meta": {...}}; each gets its file list with sha256.
    """
    manifest = {"outputs": {}, **(extra or {})}
    for name, out in outputs.items():
        p = Path(out["path"])
        manifest["outputs"][name] = {
            "path": str(p.resolve()),
            "type": "file" if p.is_file() else "dir",
            "meta": out.get("meta", {}),
            "files": file_entries(p),
        }
    chaos.point("manifest-hashed")  # outputs hashed, manifest not yet written
    atomic_write_json(Path(stage_dir) / MANIFEST, manifest, kill_point="manifest-write")
    return manifest


def manifest_problems(manifest: dict, verify_hashes: bool | str = "changed") -> list[str]:
    """Why a manifest's outputs are not intact (missing files, size or sha256 mismatch); [] if intact.

    verify_hashes: True re-hashes every file; "changed" (the default) re-hashes the files whose modification time
    differs from the one recorded in the manifest (any write through the file system changes it, so a torn or
    edited file is hashed and caught, while intact multi-GB checkpoints are not re-read on every `plan`);
    False compares sizes only."""
    problems = []
    for name, out in manifest.get("outputs", {}).items():
        root = Path(out["path"])
        for entry in out.get("files", []):
            p = root if out.get("type") == "file" else root / entry["path"]
            if not p.exists():
                problems.append(f"{name}: {p} is missing")
                continue
            st = p.stat()
            if st.st_size != entry["size"]:
                problems.append(f"{name}: {p} changed size")
                continue
            rehash = verify_hashes is True or (verify_hashes == "changed" and st.st_mtime_ns != entry.get("mtime_ns"))
            if rehash and sha256_file(p) != entry["sha256"]:
                problems.append(f"{name}: {p} sha256 mismatch")
    return problems


def read_manifest(stage_dir: Path) -> dict | None:
    p = Path(stage_dir) / MANIFEST
    if not p.exists():
        return None
    try:
        return read_json(p)
    except (OSError, json.JSONDecodeError):
        return None


@contextlib.contextmanager
def sqlite_init_lock(uri: str):
    """Hold an exclusive lock (`<database>.lock`, beside it) while a `sqlite:///` tracking store is opened:
    MLflow creates and migrates the schema on first use, and two runs that start at once against a new store
    otherwise both do (one fails with `duplicate column name`) or both create the same experiment. Other URIs: no
    lock."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///"):])
    if not db.parent.is_dir():  # MLflow reports a store it cannot create; nothing to serialise
        yield
        return
    with open(db.with_name(db.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
