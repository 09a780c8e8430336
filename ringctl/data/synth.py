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
                 guess_fraction: float = 0.0, slip_fraction: float = 0.0) -> list[Record]:
    """Long-CoT SFT samples: prompt + solver-written solution (think trace, then the boxed answer).

    guess_fraction: that fraction of the samples (a seeded draw per sample) answers with a hasty guess instead: an
    empty think block and a boxed answer that is right GUESS_ACCURACY of the time (otherwise one digit is off),
    like a distillation corpus that mixes reasoning and non-reasoning answers. A model trained on the mix guesses
    on about that fraction of prompts whatever the prompt, and RL with a verifier has to learn to reason instead:
    a behaviour that carries over to prompts it never trained on. metadata["style"] is "reasoning" or "guess".

    slip_fraction: that fraction of the samples (another seeded draw, after the guesses) keeps the reasoning but
    slips: the trace's last result is wrong by one digit and the boxed answer carries the slip, like an imperfect
    teacher whose chains of thought are right most of the time. The slips are random, not a rule: a model that
    imitates the teacher reproduces them at about that rate when it samples, so SFT alone plateaus near the
    teacher's accuracy while RL with a verifier can sharpen past it. metadata["style"] is "slip" for them."""
    for name, value in (("guess_fraction", guess_fraction), ("slip_fraction", slip_fraction)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1]")
    records = _generate("sft", n, seed, domains, difficulty)
    if slip_fraction:
        _slip(records, slip_fraction, random.Random(seed * 1_000_003 + 9))
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


def _slip(records: list[Record], fraction: float, rng: random.Random) -> None:
    """Make `fraction` of the records (a seeded draw per record) reach a wrong final answer: the last occurrence of
    the final answer in the think block and the boxed answer both become the same wrong value."""
    for record in records:
        meta = record["metadata"]
        meta["style"] = "reasoning"
        if rng.random() >= fraction:
            continue
        final, solution = meta["final"], record["solution"]
        wrong = _wrong_final(final, rng)
        think, sep, rest = solution.rpartition("</think>")
        head, found, tail = think.rpartition(final)
        if found:
            think = head + wrong + tail
        record["solution"] = think + sep + rest.replace(f"\\boxed{{{final}}}", f"\\boxed{{{wrong}}}")
        meta["style"] = "slip"


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


# ----------------------------------------------------------------------------------------------------------------
# general tasks for the tiny default's general RL: short instruction-following prompts (IFEval checks) and
# open-ended prompts that a reward model scores
# ----------------------------------------------------------------------------------------------------------------

GENERAL_TOPICS = ["bees", "the sea", "the moon", "rain", "trains", "tea", "a river", "snow", "cats", "bread",
                  "music", "stars", "a garden", "the wind", "books", "clouds", "dogs", "a lamp", "the sun", "fish",
                  "a hill", "boats", "birds", "a clock", "apples", "the city", "a forest", "winter", "a song",
                  "the road", "a park", "mice", "a storm", "soup", "the night", "a bell", "frogs", "a door", "milk",
                  "a cave"]
_GENERAL_ADJECTIVES = ["calm", "bright", "warm", "quiet", "slow", "kind", "old", "soft"]
_KEYWORDS = ["green", "happy", "small", "loud", "cold", "round"]
_END_PHRASES = ["the end.", "that is all.", "bye now."]
_CHAT_PHRASINGS = ["tell me about {topic}, in a {adj} way.", "describe {topic} as {adj}.",
                   "what is {topic} like? say it is {adj}."]
# The documented rule behind the tiny reward model's preference pairs (no verifier can see it): a helpful answer
# to an open-ended prompt talks about the topic asked for and closes with this polite phrase.
POLITE_CLOSING = "hope this helps."
CHAT_DOMAIN = "chat"


def _if_task(rng: random.Random) -> tuple[str, dict, str, str]:
    """(prompt, IFEval reference, answer that follows the instruction, answer that ignores it): one instruction
    per prompt, sized for a character-level toy model (the answer copies the prompt's topic and adjective)."""
    topic, adj = rng.choice(GENERAL_TOPICS), rng.choice(_GENERAL_ADJECTIVES)
    plain, ask = f"{topic} is {adj}.", f"write a {adj} line about {topic}."
    kind = rng.choice(["end", "keyword", "quote", "title"])
    if kind == "end":
        end = rng.choice(_END_PHRASES)
        return (f"{ask} end with '{end}'", {"instruction_id_list": ["startend:end_checker"],
                                            "kwargs": [{"end_phrase": end}]}, f"{plain} {end}", plain)
    if kind == "keyword":
        word = rng.choice(_KEYWORDS)
        return (f"{ask} use the word {word}.",
                {"instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": [word]}]},
                f"{topic} is {adj} and {word}.", plain)
    if kind == "quote":
        return (f"{ask} wrap it in double quotes.",
                {"instruction_id_list": ["startend:quotation"], "kwargs": [{}]}, f'"{plain}"', plain)
    return (f"{ask} give it a title like <<title>>.",
            {"instruction_id_list": ["detectable_format:title"], "kwargs": [{}]}, f"<<{topic}>>\n{plain}", plain)


def _chat_task(rng: random.Random) -> tuple[str, str, str]:
    """(prompt, the helpful answer, an unhelpful one): the unhelpful answer lacks the polite closing, or says
    nothing, or talks about another topic."""
    topic, adj = rng.choice(GENERAL_TOPICS), rng.choice(_GENERAL_ADJECTIVES)
    prompt = rng.choice(_CHAT_PHRASINGS).format(topic=topic, adj=adj)
    good = f"{topic} is {adj}. {POLITE_CLOSING}"
    other = rng.choice([t for t in GENERAL_TOPICS if t != topic])
    bad = rng.choice([f"{topic} is {adj}.", "i do not know.", f"{other} is {adj}. {POLITE_CLOSING}"])
    return prompt, good, bad


def generate_general(n: int, seed: int, follow_fraction: float = 1.0) -> list[Record]:
    """General prompts, alternating: instruction following (domain "ifeval", an IFEval reference, scored by the
    ifeval verifier) and open-ended questions (domain "chat", no verifier: a reward model scores them; `answer`
    holds the helpful answer, for reference only).

    `solution` follows the instruction (or is the helpful answer) for a seeded `follow_fraction` of the records and
    ignores it (or is an unhelpful answer) otherwise, like an SFT corpus whose answers only sometimes do what was
    asked: a model trained on it follows instructions about that often, and general RL has something to raise.
    metadata["followed"] says which."""
    if not 0 <= follow_fraction <= 1:
        raise ValueError("follow_fraction must be in [0, 1]")
    rng = random.Random(seed * 1_000_003 + 23)
    records = []
    for i in range(n):
        follow = rng.random() < follow_fraction
        if i % 2 == 0:
            prompt, reference, good, bad = _if_task(rng)
            domain, reference = "ifeval", {**reference, "prompt": prompt}
        else:
            prompt, good, bad = _chat_task(rng)
            domain, reference = CHAT_DOMAIN, good
        records.append(make_record(id=f"general-{seed}-{i}", prompt=prompt, answer=reference, domain=domain,
                                   source="synthetic", solution=good if follow else bad,
                                   metadata={"difficulty": 1, "followed": follow}))
    return records


def generate_chat_preferences(n: int, seed: int) -> list[dict]:
    """Preference pairs for the tiny reward model: {id, prompt, chosen, rejected, domain}; chosen is the helpful
    answer (on topic, polite closing), rejected an unhelpful one (see _chat_task)."""
    rng = random.Random(seed * 1_000_003 + 29)
    pairs = []
    for i in range(n):
        prompt, good, bad = _chat_task(rng)
        pairs.append({"id": f"pref-{seed}-{i}", "prompt": prompt, "chosen": good, "rejected": bad,
                      "domain": CHAT_DOMAIN, "source": "synthetic-preferences", "metadata": {"seed": seed}})
    return pairs
