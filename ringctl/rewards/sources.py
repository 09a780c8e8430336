"""Reward sources of an RL stage and how a record's reward is put together from them.

    rewards:
      - {type: verifier}                                   # the verifier registry, by the record's domain
      - {type: reward_model, model: rm.model, weight: 1.0} # a sequence classifier (its own tokenizer and template)
    aggregation: sum_then_normalize                         # or normalize_then_sum

Routing, per record domain: a `verifier` source covers the domains that have a verifier (or the ones it lists), a
`reward_model` source the domains that have none (or the ones it lists: listing a verifiable domain scores it with
both, weighted). A domain that no source covers is an error before anything runs (when the recipe says which
domains the prompts have) or before the first rollout (otherwise).

Aggregation (sources have different scales: a verifier gives 0/1, a reward model an unbounded logit):
  sum_then_normalize  reward = sum_s w_s r_s; the group advantage normalises that sum
  normalize_then_sum  each source's scores are normalised within the group of K responses of a prompt (z-score;
                      a constant group gives 0), then summed with the weights; the group advantage follows
Logged rewards are always the weighted sum of the raw scores, so `reward/mean` keeps its meaning.

Config classes are torch-free (validation imports them); scoring imports torch lazily.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Annotated, Literal, Union

from pydantic import Discriminator, Field, Tag

from ringctl.recipe.base import StageRef, Strict


class VerifierSource(Strict):
    """Rule verifiers (ringctl.rewards), by the record's domain: 0 or 1 (partial credit where a verifier gives it)."""

    type: Literal["verifier"] = "verifier"
    name: str = Field("verifier", description="metrics: reward/<name>/mean")
    weight: float = Field(1.0, gt=0)
    domains: list[str] | None = Field(None, description="domains this source scores (default: every domain that "
                                      "has a verifier)")


class RewardModelSource(Strict):
    """A sequence-classification reward model: the policy's response is decoded, stripped of <think>...</think>,
    put into the RM's own chat template with the prompt and scored; batched by tokens on the rank's device."""

    type: Literal["reward_model"] = "reward_model"
    name: str = Field("reward_model", description="metrics: reward/<name>/mean, reward/<name>/length_corr")
    model: StageRef = Field(..., description="a reward_model stage's model output, e.g. rm.model")
    weight: float = Field(1.0, gt=0)
    domains: list[str] | None = Field(None, description="domains this source scores (default: every domain that "
                                      "has no verifier)")
    max_length: int = Field(4096, ge=16, description="tokens of prompt + response the RM reads; a longer response "
                            "loses its beginning, never its final answer")
    batch_tokens: int = Field(65_536, ge=16, description="padded tokens per RM forward (bounds its memory)")
    strip_thinking: bool = Field(True, description="remove <think>...</think> before the RM reads the response")
    template: Literal["chat", "plain"] = Field("chat", description="chat: the RM tokenizer's chat template "
                                               "(required); plain: 'prompt\\n\\nresponse'")


def _source_type(value) -> str | None:
    if isinstance(value, dict):
        return value.get("type", "verifier")
    return getattr(value, "type", None)


RewardSource = Annotated[
    Union[Annotated[VerifierSource, Tag("verifier")], Annotated[RewardModelSource, Tag("reward_model")]],  # noqa: UP007
    Discriminator(_source_type, custom_error_type="reward_source",
                  custom_error_message="a reward source is {type: verifier} or {type: reward_model, model: ...}"),
]
Aggregation = Literal["sum_then_normalize", "normalize_then_sum"]


def covered_domains(source, domains: Sequence[str], verifiable: Callable[[str], bool]) -> list[str]:
    """The domains among `domains` that `source` scores."""
    if source.domains is not None:
        return [d for d in domains if d in source.domains]
    if source.type == "verifier":
        return [d for d in domains if verifiable(d)]
    return [d for d in domains if not verifiable(d)]


def routing(sources: Sequence, domains: Sequence[str], verifiable: Callable[[str], bool]) -> dict[str, list[int]]:
    """domain -> indices of the sources that score it (empty list: no reward for that domain)."""
    table: dict[str, list[int]] = {d: [] for d in domains}
    for i, src in enumerate(sources):
        for d in covered_domains(src, domains, verifiable):
            table[d].append(i)
    return table


def has_verifier(domain: str) -> bool:
    from ringctl.rewards import known_domains

    return domain in known_domains()


def uncovered_problem(sources: Sequence, domains: Sequence[str]) -> str | None:
    """A message naming the domains no source scores, or None."""
    table = routing(sources, sorted(set(domains)), has_verifier)
    missing = [d for d, idx in table.items() if not idx]
    if not missing:
        return None
    have = [s.type + (f" ({', '.join(s.domains)})" if s.domains else "") for s in sources]
    from ringctl.rewards import known_domains

    return (f"no reward source scores the domain(s) {missing}: the sources are {have}; a verifier covers only "
            f"domains that have one ({', '.join(known_domains())}), a reward_model the others (add "
            f"{{type: reward_model, model: <stage>.model}}, or list the domains under a source's `domains:`)")


# ----------------------------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------------------------

@dataclass
class ScoredBatch:
    """Rewards of a batch of rollouts: `logged` (weighted sum of the raw scores, per rollout), `for_advantage`
    (what the group advantage normalises), per-source raw scores (None where a source does not score a rollout)
    and the verifiers' RewardResults (None where no verifier scored)."""

    logged: list[float]
    for_advantage: list[float]
    per_source: dict[str, list[float | None]] = field(default_factory=dict)
    verifier_results: list = field(default_factory=list)


class RewardMixer:
    """Scores rollouts with the stage's reward sources. `reward_models` maps a source's name to an object with
    `score(prompts, responses) -> list[float]` (ringctl.rewards.rm_scorer.RewardModelScorer)."""

    def __init__(self, sources: Sequence, aggregation: str = "sum_then_normalize",
                 reward_models: dict | None = None, reward_workers: int = 2, reward_timeout_s: float = 10.0):
        self.sources = list(sources)
        self.aggregation = aggregation
        self.reward_models = dict(reward_models or {})
        self.reward_workers, self.reward_timeout_s = reward_workers, reward_timeout_s

    @classmethod
    def verifiers(cls, reward_workers: int = 2, reward_timeout_s: float = 10.0) -> RewardMixer:
        """The verifiers alone, by domain (select_sft's measurement, the difficulty filter, a stage without
        `rewards`): a domain without a verifier is an error, not a silent 0."""
        return cls([VerifierSource()], reward_workers=reward_workers, reward_timeout_s=reward_timeout_s)

    def score(self, tok, records: list[dict], rollouts: list, samples_per_prompt: int) -> ScoredBatch:
        """Rollouts ordered prompt by prompt (K each); records[r.prompt_index] is a rollout's prompt record."""
        from ringctl.rewards import score_batch

        domains = [records[r.prompt_index]["domain"] for r in rollouts]
        table = routing(self.sources, sorted(set(domains)), has_verifier)
        if not all(table.values()):
            raise ValueError(uncovered_problem(self.sources, domains))
        responses = [tok.decode(r.response_ids, skip_special_tokens=True) for r in rollouts]
        per_source: dict[str, list[float | None]] = {}
        verifier_results: list = [None] * len(rollouts)
        for i, src in enumerate(self.sources):
            rows = [j for j, d in enumerate(domains) if i in table[d]]
            values: list[float | None] = [None] * len(rollouts)
            if rows and src.type == "verifier":
                results = score_batch([{"domain": domains[j], "response": responses[j],
                                        "reference": records[rollouts[j].prompt_index]["answer"],
                                        "meta": records[rollouts[j].prompt_index].get("metadata") or {}}
                                       for j in rows], workers=self.reward_workers, timeout=self.reward_timeout_s)
                for j, res in zip(rows, results, strict=True):
                    values[j], verifier_results[j] = res.score, res
            elif rows or getattr(self.reward_models[src.name], "lockstep", False):  # ZeRO-3: every rank calls
                scores = self.reward_models[src.name].score(
                    [records[rollouts[j].prompt_index]["prompt"] for j in rows], [responses[j] for j in rows])
                for j, s in zip(rows, scores, strict=True):
                    values[j] = float(s)
            per_source[src.name] = values
        logged = [sum(src.weight * per_source[src.name][j] for src in self.sources
                      if per_source[src.name][j] is not None) for j in range(len(rollouts))]
        if self.aggregation == "sum_then_normalize":
            for_advantage = list(logged)
        else:
            for_advantage = [0.0] * len(rollouts)
            for src in self.sources:
                normalised = normalise_in_groups(per_source[src.name], samples_per_prompt)
                for j, v in enumerate(normalised):
                    if v is not None:
                        for_advantage[j] += src.weight * v
        return ScoredBatch(logged, for_advantage, per_source, verifier_results)


def normalise_in_groups(values: Sequence[float | None], k: int, eps: float = 1e-6) -> list[float | None]:
    """z-score within each consecutive group of k (population std); a constant group gives 0; None stays None
    (a group's rollouts share a prompt, so a source scores all of a group or none of it)."""
    out: list[float | None] = list(values)
    for g in range(0, len(values), k):
        group = [v for v in values[g:g + k] if v is not None]
        if not group:
            continue
        mean = sum(group) / len(group)
        std = math.sqrt(sum((v - mean) ** 2 for v in group) / len(group))
        for j in range(g, min(g + k, len(values))):
            if values[j] is not None:
                out[j] = 0.0 if std < eps else (values[j] - mean) / (std + eps)
    return out


def source_sums(batch: ScoredBatch, lengths: Sequence[int]) -> dict[str, float]:
    """Per-source sums for metrics over ranks: count, sum, and (reward models) the moments for the Pearson
    correlation of score with response length (length hacking shows up as a rising correlation)."""
    out: dict[str, float] = {}
    for name, values in batch.per_source.items():
        pairs = [(v, float(n)) for v, n in zip(values, lengths, strict=True) if v is not None]
        out[f"src_n/{name}"] = float(len(pairs))
        out[f"src_sum/{name}"] = sum(v for v, _ in pairs)
        out[f"src_len/{name}"] = sum(n for _, n in pairs)
        out[f"src_vv/{name}"] = sum(v * v for v, _ in pairs)
        out[f"src_ll/{name}"] = sum(n * n for _, n in pairs)
        out[f"src_vl/{name}"] = sum(v * n for v, n in pairs)
    return out


def source_metrics(total: dict[str, float], sources: Sequence) -> dict[str, float]:
    """reward/<source>/mean and, for reward models, reward/<source>/length_corr, from summed source_sums."""
    metrics: dict[str, float] = {}
    for src in sources:
        n = total.get(f"src_n/{src.name}", 0.0)
        if n <= 0:
            continue
        mean_v, mean_l = total[f"src_sum/{src.name}"] / n, total[f"src_len/{src.name}"] / n
        metrics[f"reward/{src.name}/mean"] = mean_v
        if src.type == "reward_model":
            cov = total[f"src_vl/{src.name}"] / n - mean_v * mean_l
            var_v = total[f"src_vv/{src.name}"] / n - mean_v ** 2
            var_l = total[f"src_ll/{src.name}"] / n - mean_l ** 2
            metrics[f"reward/{src.name}/length_corr"] = (cov / math.sqrt(var_v * var_l)
                                                         if var_v > 1e-12 and var_l > 1e-12 else 0.0)
    return metrics


def build_reward_mixer(sources: Sequence, aggregation: str, model_paths: dict, *, device, recipe,
                       reward_workers: int = 2, reward_timeout_s: float = 10.0) -> RewardMixer:
    """A stage's reward sources, each reward model (`model_paths`: source name -> its directory) loaded once, on
    this rank's device (under ZeRO-3 partitioned over the ranks like the policy, through a DeepSpeed engine
    without optimizer)."""
    from ringctl.rewards.rm_scorer import RewardModelScorer
    from ringctl.train.engine import deepspeed_config
    from ringctl.train.models import zero3_enabled

    backends = recipe.backends
    ds_config = deepspeed_config(backends.deepspeed) if zero3_enabled(backends) else None
    dtype = "bfloat16" if recipe.model.dtype == "bfloat16" else None
    models = {src.name: RewardModelScorer(model_paths[src.name], device=device, max_length=src.max_length,
                                          batch_tokens=src.batch_tokens, strip_thinking=src.strip_thinking,
                                          template=src.template, dtype=dtype, deepspeed_config=ds_config)
              for src in sources if src.type == "reward_model"}
    return RewardMixer(sources, aggregation, models, reward_workers=reward_workers, reward_timeout_s=reward_timeout_s)
