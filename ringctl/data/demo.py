"""Deterministic demo data for the filter stage: clean items plus every kind of mess the steps remove.

`generate_demo_records(DemoSource(...))` yields, in a fixed order for a given seed:
- unique items in four domains (math word problems, small code tasks, science questions, general
  instructions), about half of the math ones with a worked solution (for the SFT split);
- exact duplicates (same text up to case and whitespace), near duplicates (one small edit);
- guessable formats (multiple choice, true/false, yes/no), over-long prompts, prompts with control characters
  or images;
- real MATH-500 problems, lightly reworded, read at run time from `contaminate_from` (contamination to catch; the
  `math500` preset reads the copy shipped with ringctl).
Metadata field `demo_kind` says what each record is, so tests can check each step against the truth.
Memory stays bounded: duplicates are drawn from a window of recent items.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterator
from typing import Literal

from pydantic import Field, model_validator

from ringctl.data.records import Record, make_record
from ringctl.recipe.base import Strict

NAMES = ("Ada", "Bela", "Chen", "Dara", "Emil", "Farah", "Goran", "Hana", "Ivo", "Jun", "Kemal", "Lena", "Mateo",
         "Nia", "Oskar", "Priya", "Quinn", "Rosa", "Sami", "Tariq", "Uma", "Viktor", "Wen", "Ximena", "Yusuf",
         "Zofia", "Arjun", "Bruna", "Cyril", "Dilnoza", "Eero", "Femi", "Greta", "Hiro", "Ines", "Jonas")
OBJECTS = ("apple", "marble", "book", "stamp", "pencil", "shell", "coin", "sticker", "card", "button", "ribbon",
           "lantern", "kite", "candle", "teacup", "feather", "pebble", "notebook", "puzzle", "postcard", "seed",
           "brick", "bottle", "sock", "tile", "magnet", "badge", "spoon", "leaf", "map")
PLACES = ("market", "library", "harbour", "garden", "station", "bakery", "museum", "workshop", "village fair",
          "school", "orchard", "lighthouse", "bazaar", "greenhouse", "post office", "riverbank", "square",
          "monastery", "canteen", "observatory")
HOBBIES = ("chess", "rowing", "pottery", "astronomy", "baking", "cycling", "origami", "birdwatching", "fencing",
           "knitting", "sailing", "calligraphy", "gardening", "juggling", "climbing", "painting", "archery")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
ADJECTIVES = ("old", "tiny", "bright", "dusty", "heavy", "striped", "golden", "wooden", "crooked", "shiny",
              "faded", "curious", "quiet", "polished", "cracked", "velvet", "frozen", "painted")
SUBSTANCES = ("granite", "copper", "olive oil", "ice", "cork", "glass", "aluminium", "oak", "rubber", "salt",
              "sand", "wax", "bronze", "marble dust", "graphite")
TOPICS = ("the first snow", "a lost umbrella", "tidal pools", "city buses", "a broken clock", "migrating geese",
          "an empty stadium", "morning fog", "a paper boat", "street musicians", "an old bridge", "volcanoes",
          "a night train", "honeybees", "a thunderstorm", "a chess endgame", "desert stars", "a quiet harbour")
FORMS = ("haiku", "limerick", "short story", "product description", "letter", "news headline", "riddle", "toast",
         "diary entry", "tweet")
AUDIENCES = ("children", "sailors", "engineers", "a grandparent", "new students", "tourists", "a sports team")
CODE_OPS = (("sum", "sum(xs)"), ("maximum", "max(xs)"), ("minimum", "min(xs)"), ("count of even numbers",
            "sum(1 for x in xs if x % 2 == 0)"), ("product", "__import__('math').prod(xs)"),
            ("number of distinct values", "len(set(xs))"), ("difference between largest and smallest", "max(xs) - min(xs)"))
VERBS = ("buys", "finds", "collects", "receives", "picks up", "wins", "borrows")


class DemoSource(Strict):
    """Generated demo records (deterministic for a seed). Fractions are relative to `n` unique items."""

    type: Literal["demo"] = "demo"
    n: int = Field(1000, ge=1, description="number of unique clean items")
    seed: int = 0
    source: str = "demo"
    exact_duplicates: float = Field(0.05, ge=0.0, le=1.0)
    near_duplicates: float = Field(0.05, ge=0.0, le=1.0)
    guessable: float = Field(0.05, ge=0.0, le=1.0)
    too_long: float = Field(0.02, ge=0.0, le=1.0)
    bad_characters: float = Field(0.02, ge=0.0, le=1.0)
    contaminated: int = Field(0, ge=0, description="number of MATH-500 problems mixed in (lightly reworded)")
    contaminate_from: str | None = Field(None, description="math500 (the shipped MATH-500) or a MATH-500-style JSONL "
                                                          "(problem, answer) to contaminate from")
    long_prompt_chars: int = Field(6000, ge=100, description="length of the over-long prompts")

    @model_validator(mode="after")
    def _contamination_source(self) -> DemoSource:
        if self.contaminated and not self.contaminate_from:
            raise ValueError("contaminated > 0 needs contaminate_from (math500, or the path of a MATH-500-style JSONL)")
        return self

    @property
    def label(self) -> str:
        return f"demo:{self.source}"


def _math_item(rng: random.Random) -> tuple[str, str, str]:
    name, friend = rng.sample(NAMES, 2)
    obj, obj2 = rng.sample(OBJECTS, 2)
    a, b, c = rng.randint(3, 400), rng.randint(2, 300), rng.randint(1, 50)
    prompt = (f"{name} lives near the {rng.choice(PLACES)} and spends every {rng.choice(WEEKDAYS)} on "
              f"{rng.choice(HOBBIES)}. {name} keeps {a} {rng.choice(ADJECTIVES)} {obj}s in a box, "
              f"{rng.choice(VERBS)} {b} more at the {rng.choice(PLACES)}, then gives {c} to {friend}, who "
              f"already owns {rng.randint(2, 90)} {obj2}s. How many {obj}s does {name} have now?")
    total = a + b - c
    solution = f"{name} starts with {a}, adds {b} to get {a + b}, and gives away {c}: {a + b} - {c} = {total}.\n" \
               f"The answer is \\boxed{{{total}}}."
    return prompt, str(total), solution


def _code_item(rng: random.Random, i: int) -> tuple[str, dict]:
    # slots every few words, so that two items share a word 5-gram only where they happen to agree
    op, expr = rng.choice(CODE_OPS)
    obj = rng.choice(OBJECTS)
    fname = f"{rng.choice(ADJECTIVES)}_{obj}_{op.split()[0]}_{i}"
    xs = [rng.randint(-20, 60) for _ in range(rng.randint(3, 7))]
    prompt = (f"Write a Python function `{fname}(xs)` for the {rng.choice(HOBBIES)} club at the "
              f"{rng.choice(PLACES)}: given the {obj} tallies `xs` that {rng.choice(NAMES)} recorded on "
              f"{rng.choice(WEEKDAYS)}, return their {op}. Example: {fname}({xs}).")
    test = f"def check(candidate):\n    xs = {xs}\n    assert candidate(xs) == {expr}\n"
    return prompt, {"entry_point": fname, "test": test}


def _science_item(rng: random.Random) -> tuple[str, str]:
    mass, volume, digits = rng.randint(10, 900), rng.randint(2, 120), rng.randint(1, 3)
    substance = rng.choice(SUBSTANCES)
    per_m3 = rng.random() < 0.5
    density = mass / volume * (1000 if per_m3 else 1)
    prompt = (f"In the {rng.choice(PLACES)} laboratory, {rng.choice(NAMES)} weighs a {rng.choice(ADJECTIVES)} "
              f"block of {substance} on {rng.choice(WEEKDAYS)}: {mass} g for {volume} cm^3. What is the density "
              f"of this {substance} in {'kg/m^3' if per_m3 else 'g/cm^3'}, to {digits} decimal places?")
    return prompt, f"{density:.{digits}f}"


def _general_item(rng: random.Random) -> tuple[str, dict]:
    limit = rng.randint(20, 120)
    prompt = (f"Write a {rng.choice(FORMS)} about {rng.choice(TOPICS)} for {rng.choice(AUDIENCES)}, mentioning "
              f"{rng.choice(NAMES)} and a {rng.choice(ADJECTIVES)} {rng.choice(OBJECTS)}, in at most {limit} words.")
    return prompt, {"max_words": limit}


def _unique_record(cfg: DemoSource, rng: random.Random, i: int) -> Record:
    roll = rng.random()
    meta = {"demo_kind": "clean"}
    if roll < 0.5:
        prompt, answer, solution = _math_item(rng)
        return make_record(id=f"{cfg.source}/{i}", prompt=prompt, answer=answer, domain="math", source=cfg.source,
                           solution=solution if rng.random() < 0.5 else None, metadata=meta)
    if roll < 0.7:
        prompt, ref = _code_item(rng, i)
        return make_record(id=f"{cfg.source}/{i}", prompt=prompt, answer=ref, domain="code", source=cfg.source,
                           metadata=meta)
    if roll < 0.85:
        prompt, answer = _science_item(rng)
        return make_record(id=f"{cfg.source}/{i}", prompt=prompt, answer=answer, domain="science",
                           source=cfg.source, metadata=meta)
    prompt, ref = _general_item(rng)
    return make_record(id=f"{cfg.source}/{i}", prompt=prompt, answer=ref, domain="general", source=cfg.source,
                       metadata=meta)


def _variant(base: Record, new_id: str, prompt: str, kind: str) -> Record:
    return make_record(id=new_id, prompt=prompt, answer=base["answer"], domain=base["domain"], source=base["source"],
                       solution=base.get("solution"), metadata={"demo_kind": kind, "copy_of": base["id"]})


def _exact_duplicate(base: Record, new_id: str, rng: random.Random) -> Record:
    # same text up to case and whitespace: only exact dedup's normalisation is needed to catch it
    text = base["prompt"].upper() if rng.random() < 0.5 else "  " + base["prompt"].replace(" ", "  ") + "\n"
    return _variant(base, new_id, text, "exact_duplicate")


def _near_duplicate(base: Record, new_id: str, rng: random.Random) -> Record:
    # one small edit, as when the same problem is scraped from two sites
    text = base["prompt"]
    edits = [lambda t: t.replace(" now?", " at the end?"), lambda t: t.replace(" a ", " one ", 1),
             lambda t: t.rstrip("?.") + ", please.", lambda t: "Problem: " + t]
    edited = rng.choice(edits)(text)
    if edited == text:
        edited = "Problem: " + text
    return _variant(base, new_id, edited, "near_duplicate")


def _guessable(rng: random.Random, cfg: DemoSource, new_id: str) -> Record:
    kind = rng.choice(("multiple_choice", "true_false", "yes_no"))
    name, obj, place = rng.choice(NAMES), rng.choice(OBJECTS), rng.choice(PLACES)
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if kind == "multiple_choice":
        opts = rng.sample(range(a + b - 5, a + b + 6), 4)
        if a + b not in opts:
            opts[rng.randrange(4)] = a + b
        letter = "ABCD"[opts.index(a + b)]
        prompt = (f"{name} has {a} {obj}s and finds {b} more at the {place}. How many {obj}s now?\n"
                  + "\n".join(f"({L}) {v}" for L, v in zip("ABCD", opts, strict=True)))
        answer = letter
    elif kind == "true_false":
        claim = a + b if rng.random() < 0.5 else a + b + 1
        prompt = f"True or false: {name} with {a} {obj}s who finds {b} more at the {place} has {claim} {obj}s."
        answer = "True" if claim == a + b else "False"
    else:
        prompt = f"{name} has {a} {obj}s and {place} sells {b}. Does {name} have more {obj}s than the {place} sells?"
        answer = "Yes" if a > b else "No"
    return make_record(id=new_id, prompt=prompt, answer=answer, domain="math", source=cfg.source,
                       metadata={"demo_kind": kind})


def _too_long(base: Record, new_id: str, cfg: DemoSource) -> Record:
    filler = " Note: all quantities are whole numbers and nothing is lost or broken along the way."
    prompt = base["prompt"]
    while len(prompt) < cfg.long_prompt_chars:
        prompt += filler
    return _variant(base, new_id, prompt, "too_long")


def _bad_characters(base: Record, new_id: str, rng: random.Random) -> Record:
    damage = rng.choice(("\x07", "\ufffd", " See the figure ![diagram](figure1.png)."))
    return _variant(base, new_id, base["prompt"] + damage, "bad_characters")


def _contaminated(cfg: DemoSource) -> list[Record]:
    """MATH-500 problems, lightly reworded (a prefix and one changed word), spread evenly over the stream."""
    from ringctl.data.benchmark_files import benchmark_file
    from ringctl.data.readers import iter_rows

    path = benchmark_file(cfg.contaminate_from or "")
    if not path.exists():
        raise FileNotFoundError(f"demo source: contaminate_from file {path} not found (absolute: {path.absolute()})")
    rows = list(iter_rows(path, "jsonl"))  # a malformed line is an error at file:line
    rng = random.Random(cfg.seed + 1)
    picks = rng.sample(range(len(rows)), min(cfg.contaminated, len(rows)))
    out = []
    for k, idx in enumerate(picks):
        problem = rows[idx]["problem"].replace("What is", "Determine", 1).replace("Find", "Compute", 1)
        out.append(make_record(id=f"{cfg.source}/contaminated-{k}", prompt="Solve the following. " + problem,
                               answer=str(rows[idx].get("answer", "")), domain="math", source=cfg.source,
                               metadata={"demo_kind": "contaminated", "math500_row": idx}))
    return out


def generate_demo_records(cfg: DemoSource) -> Iterator[Record]:
    rng = random.Random(cfg.seed)
    recent: deque[Record] = deque(maxlen=512)
    contaminated = _contaminated(cfg) if cfg.contaminated else []
    every = max(1, cfg.n // (len(contaminated) + 1)) if contaminated else 0
    mess = (("exact", cfg.exact_duplicates), ("near", cfg.near_duplicates), ("guess", cfg.guessable),
            ("long", cfg.too_long), ("chars", cfg.bad_characters))
    for i in range(cfg.n):
        base = _unique_record(cfg, rng, i)
        recent.append(base)
        yield base
        for kind, rate in mess:
            if rate and rng.random() < rate:
                new_id = f"{cfg.source}/{i}-{kind}"
                other = rng.choice(recent)
                if kind == "exact":
                    yield _exact_duplicate(other, new_id, rng)
                elif kind == "near":
                    yield _near_duplicate(other, new_id, rng)
                elif kind == "guess":
                    yield _guessable(rng, cfg, new_id)
                elif kind == "long":
                    yield _too_long(other, new_id, cfg)
                else:
                    yield _bad_characters(other, new_id, rng)
        if contaminated and every and (i + 1) % every == 0:
            yield contaminated.pop(0)
    yield from contaminated  # n too small to spread them all
