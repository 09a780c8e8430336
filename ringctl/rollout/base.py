"""The rollout engine interface shared by the Hugging Face and vLLM implementations.

An engine samples `n` responses per prompt (token ids in, token ids out) and returns, for every sampled token,
its log-prob under the sampling policy: log_softmax(logits / temperature)[token], before top-p truncation.
That is what the trainer recomputes as log π_θold at the same temperature, so the first PPO ratio is 1 (exactly
for HF on CPU, up to kernel differences on GPU). With top_p < 1 the tokens come from the truncated distribution
but the HF engine's log-probs stay those of the untruncated one; vLLM's are of the truncated one, so the vLLM
engine refuses top_p < 1 when log-probs are asked for (SamplingParams.logprobs). RL recipes use top_p = 1 (the
paper: temperature 1.0); sampling that needs no log-probs (evaluation, selection) asks for none.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0  # 0 means greedy (argmax)
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int = 0
    stop_token_ids: tuple[int, ...] | None = None  # default: the model's EOS token id(s)
    # data parallel: this call's rows are rows row_offset.. of a global batch of total_rows (prompt-major,
    # n per prompt), so that a rank's samples are the ones one process would draw for the same rows
    row_offset: int = 0
    total_rows: int | None = None
    logprobs: bool = True  # False: no per-token log-probs wanted (Rollout.logprobs may stay empty)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.row_offset < 0:
            raise ValueError(f"row_offset must be >= 0, got {self.row_offset}")


@dataclass
class Rollout:
    """One sampled response. Rollouts come back ordered by (prompt_index, sample_index)."""

    prompt_index: int  # index into the `prompts` list passed to generate()
    sample_index: int  # 0..n-1 within the prompt's group
    prompt_ids: list[int]
    response_ids: list[int]  # includes the stop token when finished
    logprobs: list[float] = field(default_factory=list)  # one per response token
    finished: bool = False  # True: ended with a stop token; False: cut at max_new_tokens

    @property
    def length(self) -> int:
        return len(self.response_ids)


@runtime_checkable
class RolloutEngine(Protocol):
    def generate(self, prompts: Sequence[Sequence[int]], n: int, params: SamplingParams) -> list[Rollout]:
        """n samples for each prompt, returned as prompt 0's n samples, then prompt 1's, ..."""
        ...

    def update_weights(self, source: Any | Mapping[str, Any]) -> None:
        """Load the training model's current weights (an nn.Module or a state dict of HF parameter names)."""
        ...

    def sleep(self) -> None:
        """Release accelerator memory between rollouts (no-op where there is nothing to release)."""
        ...

    def wake(self) -> None:
        """Undo sleep() before the next generate()."""
        ...
