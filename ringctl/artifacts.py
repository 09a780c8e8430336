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
import errno
import hashlib
import json
import os
import shutil
import tempfile
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ringctl import chaos
from ringctl.errors import DiskFull

MANIFEST = "manifest.json"
STATE_DIR = "state"
OUTPUTS_DIR = "outputs"
ERROR_FILE = "error.txt"  # the failed stage's error message (the terminal shows it; the traceback is in the log)


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


# --- running out of space ---------------------------------------------------------------------------------------
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
_FULL_MESSAGES = ("No space left on device", "os error 28", "Disk quota exceeded", "os error 122")
# torch.save to a path reports a failed write without its errno ("[enforce fail at inline_container.cc:...]
# unexpected pos ..." after "basic_ios::clear: iostream error"): a full device is then told by its free space
_TORCH_WRITE_FAILURES = ("inline_container", "PytorchStreamWriter", "file write failed", "iostream error")
_NEARLY_FULL = 1 << 20


def is_disk_full(e: BaseException, path: Path | None = None) -> bool:
    """Whether `e` (or an exception it was raised from) is the device running out of space: an OSError ENOSPC or
    EDQUOT, a library's wrapper that quotes it (safetensors: "No space left on device (os error 28)"), or torch.save's
    errno-less stream failure while `path`'s file system has (almost) no space left."""
    seen: set[int] = set()
    torch_write = False
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL_ERRNOS:
            return True
        text = str(e)
        if any(m in text for m in _FULL_MESSAGES):
            return True
        torch_write = torch_write or any(m in text for m in _TORCH_WRITE_FAILURES)
        e = e.__cause__ or e.__context__
    return torch_write and path is not None and free_bytes(path) < _NEARLY_FULL


def free_bytes(path: Path) -> int:
    """Free space (for an unprivileged user) on the file system of `path` or of its nearest existing parent."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def tree_size(path: Path | None) -> int:
    """Bytes in the files under `path` (or of the file `path`); 0 when it does not exist."""
    if path is None:
        return 0
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    total = 0
    for dirpath, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def disk_full_message(target: Path, *, needed: int = 0, basis: str = "", removed: Path | None = None,
                      previous: Path | None = None) -> str:
    """Three short lines: the path; the space needed and free; what was cleaned up, what is intact, what to do."""
    free = human_bytes(free_bytes(target))
    lines = [f"no space left on the device while writing {target}",
             f"it needs about {human_bytes(needed)} ({basis}) and {free} are free there" if needed
             else f"{free} are free there"]
    last = ""
    if removed is not None:
        last = f"The partial {Path(removed).name} was removed"
        last += f"; {Path(previous).name}, written before, is intact. " if previous is not None else ". "
    lines.append(last + "Free space on that device and `ringctl resume` the run.")
    return "\n".join(lines)


def _release_frames(e: BaseException | None) -> None:
    """Drop the locals of the finished frames that raised `e` (and what it was raised from): a writer that failed
    (torch.save's zip stream) still holds its file open there, and a removed file's space returns only once closed."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        traceback.clear_frames(e.__traceback__)
        e = e.__cause__ or e.__context__


@contextlib.contextmanager
def disk_full_guard(target: Path, tmp: Path | None = None, previous: Path | None = None,
                    size: int | None = None) -> Iterator[None]:
    """Turn the device filling up inside the block, while `target` is written through `tmp`, into one DiskFull:
    `tmp` (the partial write) is removed first, which also returns its space, and the message names `target`, the
    space needed and the space free. The space needed is an estimate: `size` when the caller knows it, else the
    larger of what was written before the failure and `previous` (the last complete checkpoint of the kind, which
    stays intact). Other exceptions pass through untouched; guards nest, and the outermost names its target."""
    try:
        yield
    except BaseException as e:
        if not is_disk_full(e, tmp if tmp is not None else target):
            raise
        _release_frames(e)
        written = tree_size(tmp)
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True) if Path(tmp).is_dir() else Path(tmp).unlink(missing_ok=True)
        prev = tree_size(previous)
        if size:
            needed, basis = max(size, written), "the size of what was being written"
        elif prev >= written and prev:
            needed, basis = prev, f"the size of {Path(previous).name}"
        else:
            needed, basis = written, "at least what was written before the device filled"
        raise DiskFull(disk_full_message(target, needed=needed, basis=basis, removed=tmp,
                                         previous=previous if prev else None)) from e


# --- atomic writes ------------------------------------------------------------------------------------------------
def atomic_write_bytes(path: Path, data: bytes, kill_point: str | None = None) -> None:
    """Write to a temp file beside `path`, fsync, then rename: readers see the old or the new file.
    `kill_point` names this write for the chaos harness (`ringctl.chaos`). A full device: DiskFull, `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with disk_full_guard(path, Path(tmp), size=len(data)), os.fdopen(fd, "wb") as f:
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
def atomic_dir(target: Path, kill_point: str = "outputs-write", previous: Path | None = None) -> Iterator[Path]:
    """Yield a temporary directory; on success it is renamed to `target` (replacing an older one).

    A crash inside the block leaves `target` untouched and only a `.tmp-*` directory behind,
    which `clean_partial` removes. A full device: the temporary directory is removed and DiskFull raised
    (`disk_full_guard`; `previous`, default the `target` being replaced, sizes the estimate of the space needed).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent))
    try:
        with disk_full_guard(target, tmp, previous if previous is not None else
                             (target if target.exists() else None)):
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
