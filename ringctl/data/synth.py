"""Synthetic verifiable tasks for the tiny default pipeline (and for tests): records in the schema of records.py.

    generate_sft(n, seed, domains=None, difficulty=1)  -> long-CoT SFT records; `solution` is the solver's trace:
                                                          "<think>\\n...\\n</think>\\nthe answer is \\\\boxed{...}"
    generate_rl(n, seed, domains=None, difficulty=1)   -> RL prompts with references (solution filled too)
    generate_ifeval(n, seed)                           -> instruction-following prompts with IFEval references
    generate_preferences(n, seed, domains=None, difficulty=1) -> records plus chosen (the verified solution) and
                                                          rejected (the same trace with a wrong final answer)

Every record's `answer` is the reference its domain's verifier (ringctl.rewards) takes, and its `solution`
scores 1.0 with that verifier. Difficulty 1 is sized for a character-level toy model: prompts of ~30-80
characters, solutions of ~40-200, lowercase ascii. Domains are drawn round-robin so any n gets an even mix.
"""

from __future__ import annotations

import importlib
import random

from ringctl.data.records import Record, make_record

# the tiny recipe's default mix comes first (math-like, \boxed{} answers)
DOMAINS: list[str] = ["arithmetic", "countdown", "sudoku", "maze", "arc"]
TINY_DEFAULT_DOMAINS: list[str] = ["arithmetic", "countdown"]
_SPLIT_SALT = {"sft": 1, "rl": 2, "preferences": 4}


def _game(domain: str):
    if domain not in DOMAINS:
        raise ValueError(f"unknown synthetic domain {domain!r}; choose from {DOMAINS}")
    return importlib.import_module(f"ringctl.rewards.games.{domain}")


def _generate(split: str, n: int, seed: int, domains: list[str] | None, difficulty: int) -> list[Record]:
    if n < 0:
        raise ValueError("n must be >= 0")
    if difficulty < 1:
        raise ValueError("difficulty starts at 1")
    chosen = list(domains) if domains else list(TINY_DEFAULT_DOMAINS)
    modules = {d: _game(d) for d in chosen}
    rng = random.Random(seed * 1_000_003 + _SPLIT_SALT[split])
    records: list[Record] = []
    for i in range(n):
        domain = chosen[i % len(chosen)]
        task = modules[domain].generate(rng, difficulty)
        records.append(make_record(
            id=f"synth-{split}-{domain}-{seed}-{i}", prompt=task.prompt, answer=task.answer, domain=domain,
            source="synthetic", solution=task.solution(),
            metadata={"difficulty": difficulty, "seed": seed, "split": split, "final": task.final}))
    return records


GUESS_ACCURACY = 0.25  # how often a hasty guess (guess_fraction) is right


def generate_sft(n: int, seed: int, domains: list[str] | None = None, difficulty: int = 1,
                 guess_fraction: float = 0.0) -> list[Record]:
    """Long-CoT SFT samples: prompt + solver-written solution (think trace, then the boxed answer).

    guess_fraction: that fraction of the samples (a seeded draw per sample) answers with a hasty guess instead: an
    empty think block and a boxed answer that is right GUESS_ACCURACY of the time (otherwise one digit is off),
    like a distillation corpus that mixes reasoning and non-reasoning answers. A model trained on the mix guesses
    on about that fraction of prompts whatever the prompt, and RL with a verifier has to learn to reason instead:
    a behaviour that carries over to prompts it never trained on. metadata["style"] is "reasoning" or "guess"."""
    if not 0 <= guess_fraction <= 1:
        raise ValueError("guess_fraction must be in [0, 1]")
    records = _generate("sft", n, seed, domains, difficulty)
    if not guess_fraction:
        return records
    rng = random.Random(seed * 1_000_003 + 8)
    for record in records:
        meta = record["metadata"]
        if rng.random() < guess_fraction:
            guess = meta["final"] if rng.random() < GUESS_ACCURACY else _wrong_final(meta["final"], rng)
            record["solution"] = f"<think>\n</think>\nthe answer is \\boxed{{{guess}}}"
            meta["style"] = "guess"
        else:
            meta["style"] = "reasoning"
    return records


def generate_rl(n: int, seed: int, domains: list[str] | None = None, difficulty: int = 1) -> list[Record]:
    """RL prompts with references; drawn from a different stream than SFT so the two splits differ."""
    return _generate("rl", n, seed, domains, difficulty)


def _wrong_final(final: str, rng: random.Random) -> str:
    """A plausible wrong answer: change one digit (or append one when there is none)."""
    digits = [i for i, ch in enumerate(final) if ch.isdigit()]
    if not digits:
        return final + str(rng.randint(1, 9))
    i = rng.choice(digits)
    return final[:i] + str((int(final[i]) + rng.randint(1, 9)) % 10) + final[i + 1:]


def generate_preferences(n: int, seed: int, domains: list[str] | None = None, difficulty: int = 1) -> list[dict]:
    """Preference pairs for reward-model training: `chosen` scores 1 with the domain verifier, `rejected` 0."""
    from ringctl.rewards import score

    rng = random.Random(seed * 1_000_003 + _SPLIT_SALT["preferences"])
    pairs = []
    for record in _generate("preferences", n, seed, domains, difficulty):
        final = record["metadata"]["final"]
        rejected = None
        for _ in range(20):  # a changed digit can still be right (e.g. another valid maze path): re-draw
            wrong = _wrong_final(final, rng)
            candidate = record["solution"].rsplit("\\boxed{", 1)[0] + "\\boxed{" + wrong + "}"
            if score(record["domain"], candidate, record["answer"]) == 0.0:
                rejected = candidate
                break
        if rejected is None:
            continue
        pairs.append({**record, "chosen": record["solution"], "rejected": rejected})
    return pairs


_IFEVAL_TOPICS = ["the sea", "a small town", "rainy days", "old trains", "green tea", "the moon", "bees", "a river"]
_IFEVAL_WORDS = ["blue", "quiet", "bright", "slow", "warm", "tall"]


def generate_ifeval(n: int, seed: int) -> list[Record]:
    """Instruction-following prompts with IFEval-style references ({"instruction_id_list", "kwargs", "prompt"})
    and a `solution` that satisfies every instruction (checked by the ifeval verifier in the tests)."""
    rng = random.Random(seed * 1_000_003 + 17)
    records = []
    for i in range(n):
        topic, word = rng.choice(_IFEVAL_TOPICS), rng.choice(_IFEVAL_WORDS)
        end = rng.choice(["that is all.", "the end.", "any other questions?"])
        min_words = rng.randint(8, 14)
        title = f"<<{topic}>>"
        body = f"{title}\nthis is a short text about {topic}. it is {word} and calm and kind to read for a while"
        solution = f"{body} {end}"
        ids = ["detectable_format:title", "keywords:existence", "punctuation:no_comma",
               "length_constraints:number_words", "startend:end_checker"]
        kwargs = [{}, {"keywords": [word]}, {}, {"num_words": min_words, "relation": "at least"},
                  {"end_phrase": end}]
        prompt = (f"write about {topic}. give it a title in double angular brackets like <<title>>. use the word "
                  f"{word}. use no commas. use at least {min_words} words. end with the exact phrase '{end}'")
        reference = {"instruction_id_list": ids, "kwargs": kwargs, "prompt": prompt}
        records.append(make_record(id=f"ifeval-{seed}-{i}", prompt=prompt, answer=reference, domain="ifeval",
                                   source="synthetic", solution=solution, metadata={"difficulty": 1}))
    return records
