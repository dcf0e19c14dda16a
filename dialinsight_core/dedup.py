"""Near-duplicate detection: MinHash signatures over character shingles, banded LSH.

Character shingles need no word segmentation, so the same code catches near-duplicate Chinese
and English dialogues (and instructions). LSH keeps it sub-quadratic: only documents that share
a band bucket are compared, and candidates are confirmed by their estimated Jaccard similarity.
Hashes are stable across processes and machines (CRC32 + fixed-seed universal hashing), so
signatures can be stored and compared with later runs.
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from dialinsight_core.text import normalise_text

__all__ = ["LSHIndex", "MinHasher", "shingles"]

_PRIME = np.uint64(4294967291)  # largest prime < 2**32: a * x stays below 2**64


def shingles(text: str, k: int) -> set[str]:
    """Character k-grams of the folded (NFKC, lower case), whitespace-collapsed text: a copy
    re-typed with full-width punctuation is the same dialogue."""
    t = normalise_text(text)
    if len(t) <= k:
        return {t} if t else set()
    return {t[i : i + k] for i in range(len(t) - k + 1)}


@dataclass(frozen=True)
class MinHasher:
    num_perm: int = 128
    k: int = 5
    seed: int = 1

    @cached_property
    def _ab(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        a = rng.integers(1, int(_PRIME), size=self.num_perm, dtype=np.uint64)
        b = rng.integers(0, int(_PRIME), size=self.num_perm, dtype=np.uint64)
        return a, b

    def signature(self, text: str) -> np.ndarray:
        grams = shingles(text, self.k)
        if not grams:
            return np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        x = np.fromiter(map(zlib.crc32, map(str.encode, grams)), dtype=np.uint64, count=len(grams))  # UTF-8, C loops
        a, b = self._ab
        return ((a[:, None] * x[None, :] + b[:, None]) % _PRIME).min(axis=1)


def similarity(sig_a: np.ndarray, sig_b: np.ndarray) -> float:
    """Estimated Jaccard similarity of the two shingle sets."""
    return float(np.mean(sig_a == sig_b))


@dataclass
class LSHIndex:
    """Banded LSH over MinHash signatures; ``bands * rows`` must equal the signature length.

    With 16 bands of 8 rows (128 permutations), pairs at Jaccard 0.8 collide in some band with
    probability ~0.95 and pairs at 0.5 (dialogues sharing a script's template) with ~0.06, so
    templated corpora do not degrade into all-pairs comparison; collisions are then confirmed by
    ``threshold`` against the estimated similarity (vectorised over the candidates).
    """

    threshold: float = 0.8
    bands: int = 16
    rows: int = 8
    _buckets: list[dict[bytes, list[str]]] = field(default_factory=list)
    _sigs: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._buckets = [defaultdict(list) for _ in range(self.bands)]

    def _keys(self, sig: np.ndarray) -> list[bytes]:
        if len(sig) != self.bands * self.rows:
            raise ValueError(f"signature length {len(sig)} != bands*rows {self.bands * self.rows}")
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def query(self, sig: np.ndarray) -> list[tuple[str, float]]:
        """Indexed documents similar to ``sig`` (>= threshold), most similar first."""
        cands = sorted({key for band, k in zip(self._buckets, self._keys(sig), strict=True) for key in band.get(k, ())})
        if not cands:
            return []
        sims = (np.stack([self._sigs[c] for c in cands]) == sig).mean(axis=1)
        hits = [(c, float(s)) for c, s in zip(cands, sims, strict=True) if s >= self.threshold]
        return sorted(hits, key=lambda t: (-t[1], t[0]))

    def add(self, key: str, sig: np.ndarray) -> None:
        self._sigs[key] = sig
        for band, k in zip(self._buckets, self._keys(sig), strict=True):
            band[k].append(key)

    def __len__(self) -> int:
        return len(self._sigs)
