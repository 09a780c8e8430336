"""Exact dedup (hash of normalised text) and near dedup (MinHash LSH, datasketch).

Both keep only hashes of what they have seen, never the records: memory grows with the number of distinct
records (about 70 bytes each for exact dedup, 8 bytes per LSH band for near dedup), not with their size.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Literal

from pydantic import Field

from ringctl.data.filters.base import Filter, StepBase, field_text, normalize_text

TextField = Literal["prompt", "answer", "solution"]


def _hash64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def dedup_text(record: dict, fields: list[str]) -> str:
    return "\x1f".join(normalize_text(field_text(record, f)) for f in fields)


class ExactDedup(StepBase):
    """Drop a record whose normalised text (case, Unicode form and whitespace ignored) was seen before."""

    type: Literal["exact_dedup"] = "exact_dedup"
    fields: list[TextField] = Field(["prompt"], min_length=1, description="fields that make up the compared text")

    def build(self) -> Filter:
        return _ExactDedupFilter(list(self.fields))


class _ExactDedupFilter(Filter):
    def __init__(self, fields: list[str]):
        self.fields = fields
        self.seen: set[int] = set()

    def check(self, record: dict) -> str | None:
        key = _hash64(dedup_text(record, self.fields).encode("utf-8"))
        if key in self.seen:
            return "exact_duplicate"
        self.seen.add(key)
        return None


class NearDedup(StepBase):
    """Drop a record whose MinHash collides, in at least one LSH band, with an earlier kept record.

    Banding (b bands of r rows) comes from datasketch's MinHashLSH for the given threshold and num_perm, so a
    pair with Jaccard similarity s is caught with probability 1 - (1 - s^r)^b (an S-curve around threshold).
    `index: compact` keeps one 64-bit key per band in a sorted array (8 bytes per band, about 0.1 KB per record
    at threshold 0.7); `index: datasketch` uses MinHashLSH itself (same decisions, about 3.6 KB per record).
    """

    type: Literal["near_dedup"] = "near_dedup"
    threshold: float = Field(0.8, gt=0.0, lt=1.0, description="Jaccard similarity regarded as a near duplicate")
    num_perm: int = Field(128, ge=16, le=1024)
    shingle: Literal["char", "word"] = Field("word", description="shingles of words or of characters")
    ngram: int = Field(5, ge=1, le=32, description="shingle length (words or characters)")
    fields: list[TextField] = Field(["prompt"], min_length=1)
    index: Literal["compact", "datasketch"] = "compact"
    seed: int = 1

    def build(self) -> Filter:
        return _NearDedupFilter(self)


def shingles(text: str, unit: str, n: int) -> set[bytes]:
    if unit == "word":
        words = text.split()
        grams = [" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))]
    else:
        grams = [text[i:i + n] for i in range(max(1, len(text) - n + 1))]
    return {g.encode("utf-8") for g in grams if g}


class _NearDedupFilter(Filter):
    def __init__(self, cfg: NearDedup):
        from datasketch import MinHash, MinHashLSH

        self.cfg = cfg
        # crc32 is a deterministic 32-bit shingle hash (what the affine32 scheme expects) and ~10x faster
        # than datasketch's default sha1; one MinHash object is reset per record instead of rebuilt
        self.minhash = MinHash(num_perm=cfg.num_perm, seed=cfg.seed, hashfunc=zlib.crc32)
        self.lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm)
        self.band_keys = BandKeyIndex()
        self.count = 0
        # one 64-bit key per band in a single numpy step: sum of random odd multipliers times the band's
        # 32-bit values (mod 2^64), salted with the band number so equal values in different bands differ
        import numpy as np

        self.np = np
        b, r = self.lsh.b, self.lsh.r
        rng = np.random.RandomState(cfg.seed)
        self.band_rows = b * r
        self.multipliers = (rng.randint(0, 2**62, size=(b, r), dtype=np.uint64) * np.uint64(2) + np.uint64(1))
        self.band_salt = rng.randint(0, 2**62, size=b, dtype=np.uint64)

    def check(self, record: dict) -> str | None:
        m = self.minhash
        m.clear()
        m.update_batch(shingles(dedup_text(record, self.cfg.fields), self.cfg.shingle, self.cfg.ngram))
        if self.cfg.index == "datasketch":
            if self.lsh.query(m):
                return "near_duplicate"
            self.lsh.insert(self.count, m, check_duplication=False)  # keeps band hashes, not m
            self.count += 1
            return None
        bands = m.hashvalues[: self.band_rows].astype(self.np.uint64).reshape(self.multipliers.shape)
        keys = (bands * self.multipliers).sum(axis=1) + self.band_salt
        if self.band_keys.contains_any(keys):
            return "near_duplicate"
        self.band_keys.add(keys)
        return None


class BandKeyIndex:
    """A set of uint64 keys in about 8 bytes each: a sorted numpy array plus a Python set of recent keys that
    is merged into the array in bulk (a Python set alone costs about 80 bytes per key: 1 GB for 1M records
    with 14 bands). Merging concatenates two sorted runs, which numpy's stable sort merges in linear time."""

    def __init__(self, merge_every: int = 1 << 18):
        import numpy as np

        self.np = np
        self.merge_every = merge_every
        self.sorted = np.empty(0, dtype=np.uint64)
        self.recent: set[int] = set()

    def __len__(self) -> int:
        return int(self.sorted.size) + len(self.recent)

    def contains_any(self, keys) -> bool:
        if self.sorted.size:
            pos = self.np.searchsorted(self.sorted, keys)
            pos[pos == self.sorted.size] = self.sorted.size - 1
            if bool((self.sorted[pos] == keys).any()):
                return True
        recent = self.recent
        return bool(recent) and any(k in recent for k in keys.tolist())

    def add(self, keys) -> None:
        self.recent.update(keys.tolist())
        if len(self.recent) >= self.merge_every:
            self.merge()

    def merge(self) -> None:
        np = self.np
        fresh = np.fromiter(self.recent, dtype=np.uint64, count=len(self.recent))
        fresh.sort()
        merged = np.concatenate([self.sorted, fresh])
        merged.sort(kind="stable")  # two sorted runs: a linear merge
        self.sorted = np.unique(merged) if merged.size and bool((merged[1:] == merged[:-1]).any()) else merged
        self.recent = set()
