"""difficulty: model-aware solve rate (paper §2, step 5). Sample n responses per prompt with a checkpoint, score
them with the domain verifiers, keep the prompts whose pass rate lies in [lo, hi]: drop the ones the model
always solves and the ones it never solves. The pass-rate histogram goes into the report.

    - {type: difficulty, checkpoint: sft.final, samples: 8, lo: 0.1, hi: 0.9}   # or checkpoint_path: /ckpt
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Literal

from pydantic import Field, model_validator

from ringctl.data.filters.base import Filter, StepBase, StepStats
from ringctl.recipe.base import StageRef


class Difficulty(StepBase):
    type: Literal["difficulty"] = "difficulty"
    checkpoint: StageRef | None = Field(None, description="a stage output holding an HF checkpoint, e.g. sft.final")
    checkpoint_path: str | None = Field(None, description="or a checkpoint directory")
    samples: int = Field(8, ge=1, description="responses sampled per prompt")
    lo: float = Field(0.0, ge=0, le=1, description="keep pass rates >= lo (with lo=0, > 0: never-solved dropped)")
    hi: float = Field(1.0, ge=0, le=1, description="keep pass rates <= hi (with hi=1, < 1: always-solved dropped)")
    max_new_tokens: int = Field(256, ge=1)
    temperature: float = Field(1.0, gt=0)
    batch_prompts: int = Field(32, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: as resources.device (whose auto "
                                                    "is cuda:LOCAL_RANK when CUDA is present, else cpu)")
    engine: Literal["auto", "hf", "vllm"] = Field("auto", description="the generation engine; auto: as "
                                                  "backends.rollout (the one set-up RL, selection and evaluation use)")

    @model_validator(mode="after")
    def _one_checkpoint(self) -> Difficulty:
        if (self.checkpoint is None) == (self.checkpoint_path is None):
            raise ValueError("give exactly one of checkpoint (a stage output) or checkpoint_path")
        if self.lo > self.hi:
            raise ValueError(f"lo ({self.lo}) must not exceed hi ({self.hi})")
        return self

    def build(self) -> Filter:
        if self.checkpoint_path is None:
            raise ValueError("the difficulty step's checkpoint was not resolved (run it inside data_filter)")
        return _DifficultyFilter(self)


class _DifficultyFilter(Filter):
    def __init__(self, cfg: Difficulty):
        self.cfg = cfg
        self.histogram: Counter = Counter()

    def _keep(self, rate: float) -> str | None:
        lo, hi = self.cfg.lo, self.cfg.hi
        if rate == 1.0 and hi >= 1.0 or rate > hi:
            return "too easy (always solved)" if rate == 1.0 else f"too easy (pass rate > {hi})"
        if rate == 0.0 and lo <= 0.0 or rate < lo:
            return "too hard (never solved)" if rate == 0.0 else f"too hard (pass rate < {lo})"
        return None

    def process(self, records: Iterable[dict], stats: StepStats) -> Iterator[dict]:
        from ringctl.rollout.generation import Decoding, EngineSettings, Generator, sample_and_score
        from ringctl.train.config import ModelConfig

        cfg = self.cfg
        gen = Generator.load(cfg.checkpoint_path, ModelConfig(name_or_path=cfg.checkpoint_path),
                             EngineSettings(backend="hf" if cfg.engine == "auto" else cfg.engine, device=cfg.device,
                                            max_model_len=None),
                             device_field="the difficulty step's device (auto: as resources.device)")
        decoding = Decoding(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens)
        stats.extra["pass_rate_histogram"] = self.histogram
        batch: list[dict] = []

        def flush() -> Iterator[dict]:
            _, rewards = sample_and_score(gen.model, gen.tok, gen.rollout_engine, batch, decoding, cfg.samples, cfg.seed,
                                          reward_workers=1)
            for i, record in enumerate(batch):
                rate = sum(rewards[i * cfg.samples:(i + 1) * cfg.samples]) / cfg.samples
                self.histogram[f"{rate:.2f}"] += 1
                reason = self._keep(rate)
                if reason is None:
                    stats.kept += 1
                    yield {**record, "metadata": {**(record.get("metadata") or {}), "pass_rate": rate}}
                else:
                    stats.drop(reason, record.get("id"))
            batch.clear()

        for record in records:
            batch.append(record)
            if len(batch) == cfg.batch_prompts:
                yield from flush()
        if batch:
            yield from flush()
