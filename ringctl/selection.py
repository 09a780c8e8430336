"""Choosing the SFT checkpoint RL starts from (paper §4.3): the rule, the table and the plot.

Rule for `token-efficiency` (the default):
  1. keep the candidates whose entropy on RL prompts lies inside the band (default 0.3-0.5);
     if none does, keep those nearest to the band;
  2. rank them by where the short C3PO probe left them: probe accuracy plus the probe's reward gain (probe
     accuracy alone when no probe was run), i.e. the y of the paper's Fig. 9 at the probe's small RL budget;
  3. break ties by the higher token efficiency (RL tokens / SFT tokens).
Other metrics: `entropy` (closest to the band centre), `accuracy` (highest probe pass@1; ties to fewer SFT
tokens), `reward-gain` (highest probe gain; ties to higher token efficiency).

Why step 2 ranks by the accuracy reached and not by the gain (changed 2026-12-02, issue 24): on the tiny default
(imperfect-teacher SFT traces, 5 epochs) the two in-band candidates (epochs 4 and 5) had probe gains of +0.021 /
-0.010 (seed 1234) and -0.010 / +0.083 (seed 7): within the noise of 64 samples per measurement after 3 probe steps
(a standard error of about 0.05), while their probe accuracies differed by up to 0.135 (0.198 vs 0.333). Ranking by
gain handed RL the weaker epoch on seeds 1234 and 99 (the evaluation: selected checkpoint 0.21 and 0.26 held-out
pass@1, sft.final 0.32 and 0.35), and from every start the recipe's 120 RL steps added a similar +0.21 to +0.27
(held-out), so the weaker start ended weaker: on seed 1234 the pipeline's product ended only 2.9 standard errors above
sft.final. The gain still counts, added to the accuracy it started from: a candidate that the probe moves more ranks
higher by that much.

Validated by the curve (bench/selection_curve.py --seeds 1234,7, 2026-12-03: the recipe's 120 RL steps from every
epoch): the rule chose epoch 5 on both seeds, and epoch 5 ended best on both (held-out 0.525 +- 0.021 and
0.415 +- 0.021). Either half alone would have missed: gain alone picks epoch 4 on seed 1234 (+0.021 vs -0.010; it
ends 0.047 lower), accuracy alone picks epoch 4 on seed 7 (0.229 vs 0.198; it ends 0.10 lower, 3.5 combined SE),
accuracy + gain picks epoch 5 on both (0.323 vs 0.219, 0.281 vs 0.219).

Measure enough prompts (2026-12-03, the curve's third seed, 99): with the tiny recipe's 24 prompts x 4 samples the
rule picked epoch 4 (0.396 + 0.042 against epoch 5's 0.438 - 0.094), and epoch 4 ended 0.544 +- 0.023 after RL
against epoch 5's 0.602 +- 0.022 (1.8 combined SE). The probe's gain is the difference of two such measurements, and
three probe steps move a candidate less than their noise. The rule stayed; the recipe measures 96 prompts x 4
samples (standard error ~0.025): the gains shrink to -0.013..+0.036 and accuracy + gain ranks epoch 5 first on all
three seeds (0.312 vs 0.258, 0.208 vs 0.180, 0.378 vs 0.362), the epoch that ends best on all three. Size
`num_prompts` so that the standard error of a measurement is below the differences between candidates.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

METRICS = ("token-efficiency", "entropy", "accuracy", "reward-gain")
TIE = 1e-9


@dataclass
class Candidate:
    checkpoint: str
    epoch: int
    sft_tokens: int
    entropy: float
    accuracy: float
    rl_tokens: int = 0
    reward_gain: float | None = None

    @property
    def token_efficiency(self) -> float | None:
        return self.rl_tokens / self.sft_tokens if self.rl_tokens and self.sft_tokens else None

    def to_json(self) -> dict:
        d = asdict(self)
        d["token_efficiency"] = self.token_efficiency
        return d


def after_probe(c: Candidate) -> float:
    """Probe accuracy after the short C3PO probe (before it when no probe ran)."""
    return c.accuracy + (c.reward_gain or 0.0)


def band_distance(entropy: float, band: tuple[float, float]) -> float:
    lo, hi = band
    return max(lo - entropy, 0.0, entropy - hi)


def choose(candidates: list[Candidate], metric: str = "token-efficiency",
           band: tuple[float, float] = (0.3, 0.5)) -> Candidate:
    if not candidates:
        raise ValueError("no SFT checkpoints to choose from")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(METRICS)}")
    te = lambda c: c.token_efficiency or 0.0  # noqa: E731
    gain = lambda c: c.reward_gain if c.reward_gain is not None else c.accuracy  # noqa: E731
    if metric == "token-efficiency":
        nearest = min(band_distance(c.entropy, band) for c in candidates)
        pool = [c for c in candidates if band_distance(c.entropy, band) <= nearest + TIE]
        return max(pool, key=lambda c: (round(after_probe(c), 9), te(c)))
    if metric == "entropy":
        centre = sum(band) / 2
        return min(candidates, key=lambda c: (abs(c.entropy - centre), c.sft_tokens))
    if metric == "accuracy":
        return max(candidates, key=lambda c: (c.accuracy, -c.sft_tokens))
    return max(candidates, key=lambda c: (gain(c), te(c)))


def report(candidates: list[Candidate], selected: Candidate, metric: str) -> dict:
    """The `--json` document: {"metric", "selected", "candidates": [...]}."""
    return {"metric": metric, "selected": selected.checkpoint,
            "candidates": [c.to_json() for c in sorted(candidates, key=lambda c: c.epoch)]}


def table(doc: dict, band: tuple[float, float]):
    """The ranking for the terminal (ringctl.display.TableDoc), the selected checkpoint marked."""
    from ringctl.display import TableDoc

    rows, styles = [], []
    for c in doc["candidates"]:
        chosen = c["checkpoint"] == doc["selected"]
        in_band = band[0] <= c["entropy"] <= band[1]
        rows.append([str(c["epoch"]), f"{c['sft_tokens']:,}", f"{c['entropy']:.3f}" + (" *" if in_band else ""),
                     f"{c['accuracy']:.3f}", "-" if c["reward_gain"] is None else f"{c['reward_gain']:+.3f}",
                     f"{c['rl_tokens']:,}", "-" if c["token_efficiency"] is None else f"{c['token_efficiency']:.3f}",
                     "[bold green]<- selected[/]" if chosen else ""])
        styles.append("bold" if chosen else None)
    notes = []
    if any(band[0] <= c["entropy"] <= band[1] for c in doc["candidates"]):
        notes.append("* inside the entropy band")
    elif doc["metric"] == "token-efficiency":
        notes.append(f"none inside the entropy band {band[0]}-{band[1]}: ranked those nearest to it")
    columns = [(col, "left" if col == "" else "right") for col in
               ("epoch", "SFT tokens", "entropy", "probe acc", "reward gain", "RL tokens", "token eff.", "")]
    return TableDoc(title=f"SFT checkpoint selection ({doc['metric']}, entropy band {band[0]}-{band[1]})",
                    columns=columns, rows=rows, row_styles=styles, notes=notes)


def plot(doc: dict, path: Path) -> Path:
    """Performance against SFT tokens, each point labelled with its token efficiency (like the paper's figure)."""
    from ringctl.plotting import axes, save

    cands = doc["candidates"]
    fig, ax = axes((6, 4))
    xs = [c["sft_tokens"] for c in cands]
    acc = [c["accuracy"] for c in cands]
    ax.plot(xs, acc, "o-", label="probe accuracy (pass@1)")
    if any(c["reward_gain"] is not None for c in cands):
        after = [c["accuracy"] + (c["reward_gain"] or 0.0) for c in cands]
        ax.plot(xs, after, "s--", label="after C3PO probe")
    for c, x, y in zip(cands, xs, acc):
        te = c["token_efficiency"]
        label = f"ep{c['epoch']}" + (f"\nTE={te:.2f}" if te is not None else "")
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 6), fontsize=8)
        if c["checkpoint"] == doc["selected"]:
            ax.scatter([x], [y], s=160, facecolors="none", edgecolors="red", label="selected")
    ax.set_xlabel("SFT training tokens")
    ax.set_ylabel("performance")
    ax.set_title(f"SFT checkpoint selection ({doc['metric']})")
    ax.legend(fontsize=8)
    return save(fig, path)


# ----------------------------------------------------------------------------------------------------------------
# measuring the candidates
# ----------------------------------------------------------------------------------------------------------------
def epoch_checkpoints(root: Path) -> list[Path]:
    """Epoch checkpoint directories under `root` (epoch-1, epoch-2, ...), in epoch order."""
    root = Path(root)
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith("epoch-")] if root.exists() else []
    return sorted(dirs, key=lambda p: int(p.name.split("-")[1]))


def probe_prompts(path: Path, n: int, seed: int) -> list[dict]:
    """A fixed, seeded subset of n RL prompts of `path`."""
    import random

    from ringctl.data.records import iter_jsonl

    records = list(iter_jsonl(path))
    if not records:
        raise ValueError(f"no RL prompts in {path}")
    rng = random.Random(seed)
    rng.shuffle(records)
    return records[:n]


def measure(ckpts: list[Path], prompts: list[dict], cfg, recipe, tracker=None, seed: int = 0) -> list[Candidate]:
    """Every candidate's entropy, probe accuracy and (cfg.probe_steps > 0) reward gain after a short C3PO probe.
    `cfg` is the select_sft stage's Config (samples_per_prompt, temperature, top_p, max_new_tokens, probe_steps,
    probe: the probe's RL settings); the checkpoints sample on `recipe.resources.device`.

    Data parallel (select_sft launched over several ranks; every rank calls this): each rank samples and scores
    its contiguous share of the prompts from every checkpoint, seeded per global row, and the figures are reduced
    in the single-process order; then each candidate's probe trains over all the ranks (DDP or DeepSpeed, a global
    C3PO budget) and is measured the same way. Every rank returns the candidates one process would, whatever W is
    (the probe's figures up to float rounding in the all-reduced gradients)."""
    from ringctl.dist import rank_and_world
    from ringctl.train.checkpoint import read_epoch_info
    from ringctl.train.device import rank_device

    measured = [_measure_checkpoint(ckpt, prompts, cfg, recipe, seed) for ckpt in ckpts]
    rank, world = rank_and_world()
    probes: dict[int, tuple[float, int]] = {}
    if cfg.probe_steps:
        device = rank_device(recipe.resources.device, train_backend=recipe.backends.train)
        probes = {i: _probe_checkpoint(ckpt, prompts, cfg, recipe, seed, device) for i, ckpt in enumerate(ckpts)}
    candidates = []
    for i, ckpt in enumerate(ckpts):
        info, (accuracy, entropy) = read_epoch_info(ckpt), measured[i]
        after, rl_tokens = probes.get(i, (None, 0))
        gain = None if after is None else after - accuracy
        cand = Candidate(checkpoint=str(ckpt), epoch=int(info["epoch"]), sft_tokens=int(info["sft_tokens"]),
                         entropy=float(entropy), accuracy=float(accuracy), rl_tokens=int(rl_tokens),
                         reward_gain=gain)
        candidates.append(cand)
        if rank == 0:
            print(f"[select] epoch {cand.epoch}: entropy {cand.entropy:.3f} accuracy {cand.accuracy:.3f}"
                  + (f" gain {gain:+.3f}" if gain is not None else ""), flush=True)
        if tracker is not None:
            tracker.log_metrics(cand.epoch, **{"select/entropy": cand.entropy, "select/accuracy": cand.accuracy,
                                               "select/sft_tokens": cand.sft_tokens,
                                               "select/token_efficiency": cand.token_efficiency,
                                               "select/reward_gain": cand.reward_gain})
    return candidates


def _decoding(cfg):
    """The probe's RL settings with the stage's sampling settings (how the candidates are sampled)."""
    return cfg.probe.model_copy(update={"temperature": cfg.temperature, "top_p": cfg.top_p,
                                        "max_new_tokens": cfg.max_new_tokens})


def _load(ckpt: Path, recipe, seed: int, backend: str | None = None, max_model_len: int | None = None):
    """The checkpoint in the recipe's rollout engine (backends.rollout, unless `backend` says otherwise)."""
    import torch

    from ringctl.rollout.generation import Generator, engine_settings

    torch.manual_seed(seed)
    settings = engine_settings(recipe, max_model_len=max_model_len)
    return Generator.load(ckpt, recipe.model, settings if backend is None else replace(settings, backend=backend))


def _measure_checkpoint(ckpt: Path, prompts: list[dict], cfg, recipe, seed: int) -> tuple[float, float]:
    """(accuracy, entropy) of one checkpoint, data parallel over the ranks. With vLLM the samples come from the
    engine and the entropy from the Hugging Face model's full distribution over them (teacher-forced)."""
    hp = _decoding(cfg)
    gen = _load(ckpt, recipe, seed, max_model_len=hp.max_prompt_tokens + hp.max_new_tokens)
    scorer = gen if gen.model is not None else _load(ckpt, recipe, seed, backend="hf")
    try:
        return sampled_accuracy(gen.model, gen.tok, gen.rollout_engine, prompts, cfg, seed,
                                entropy_model=scorer.model)
    finally:
        gen.close()
        scorer.close()


def _probe_checkpoint(ckpt: Path, prompts: list[dict], cfg, recipe, seed: int, device) -> tuple[float, int]:
    """(accuracy after the short C3PO probe, RL tokens it trained on): over every rank of the stage, with the
    recipe's training engine (backends.train: DDP, or DeepSpeed ZeRO with the model partitioned under ZeRO-3) and
    rollout engine (backends.rollout), the way the RL stage trains; with the probe's C3PO budget global (ProbeConfig's
    default) the figures do not depend on the number of ranks."""
    from ringctl.rl.trainer import probe

    return probe(recipe, ckpt, prompts, cfg.probe, cfg.probe_steps, seed, device, cfg.probe.checkpointing(recipe),
                 lambda policy, tok, rollout_engine: sampled_accuracy(policy, tok, rollout_engine, prompts, cfg, seed)[0])


def sampled_accuracy(policy, tok, rollout_engine, prompts: list[dict], cfg, seed: int, entropy_model=None
                     ) -> tuple[float, float | None]:
    """(mean verifier reward, mean token entropy of the samples or None) of cfg.samples_per_prompt samples per
    prompt. Every rank calls it: each samples and scores its share of the prompts (rows seeded by their global
    index) and the per-prompt figures are gathered in prompt order, so the result does not depend on the number
    of ranks. policy: the model being trained (synced into the engine first) or None (a checkpoint loaded into the
    engine). The entropy (entropy_model given) is computed one prompt's samples at a time (the same batches on any
    number of ranks)."""
    from ringctl.dist import gather_shares, sampling_share
    from ringctl.rewards.sources import RewardMixer
    from ringctl.rollout.generation import sample
    from ringctl.train.models import mean_token_entropy

    hp, n = _decoding(cfg), cfg.samples_per_prompt
    lo, hi, _ = sampling_share(len(prompts))
    mine = prompts[lo:hi]
    rollouts = sample(policy, tok, rollout_engine, mine, hp, n, seed, row_offset=lo * n, total_rows=len(prompts) * n,
                      logprobs=False)
    rewards = RewardMixer.verifiers(hp.reward_workers, hp.reward_timeout_s).score(tok, mine, rollouts, n).logged \
        if mine else []
    groups = []  # per prompt: (its rewards, (mean token entropy, tokens) of its samples)
    for j in range(len(mine)):
        group = rollouts[j * n:(j + 1) * n]
        tokens = sum(len(r.response_ids) for r in group)
        ent = mean_token_entropy(entropy_model, [r.prompt_ids for r in group], [r.response_ids for r in group],
                                 batch_size=n, pad_id=tok.pad_token_id) if entropy_model is not None and tokens \
            else 0.0
        groups.append((rewards[j * n:(j + 1) * n], (ent, tokens)))
    groups = gather_shares(groups)
    flat = [x for rs, _ in groups for x in rs]
    accuracy = sum(flat) / max(len(flat), 1)
    if entropy_model is None:
        return accuracy, None
    return accuracy, sum(e * t for _, (e, t) in groups) / max(sum(t for _, (_, t) in groups), 1)
