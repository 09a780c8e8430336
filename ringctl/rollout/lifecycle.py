"""One rollout sequence for every engine: the stage calls these around each generate().

    prepare_for_generate(engine, policy)   # make the engine sample from the current training weights
    rollouts = engine.generate(prompts, n, params)
    release_after_generate(engine)         # give the device memory back to the trainer

vLLM (`VLLMRolloutEngine`): wake_up(tags=["weights"]) -> stream the weights in (ZeRO-3 gathered block by block)
-> reset the prefix cache -> wake_up(tags=["kv_cache"]); afterwards sleep(level). An engine without these
methods (the Hugging Face engine, which samples from the training module itself) gets `update_weights(policy)`
(free when it is the same module) and nothing afterwards: putting it to sleep would move the training model.
Under ZeRO-3 every rank must call both (the weight stream is collective).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def prepare_for_generate(engine: Any, weights_source: Any | Mapping[str, Any] | None) -> None:
    """Before generate(): the engine's own `prepare_for_generate` if it has one, else `update_weights`."""
    if hasattr(engine, "prepare_for_generate"):
        engine.prepare_for_generate(weights_source)
    elif weights_source is not None:
        engine.update_weights(weights_source)


def release_after_generate(engine: Any) -> None:
    """After generate(): the engine's own `release_after_generate` if it has one, else nothing."""
    if hasattr(engine, "release_after_generate"):
        engine.release_after_generate()
