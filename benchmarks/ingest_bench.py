"""Ingest benchmarks: near-duplicate screening (MinHash/LSH) at scale, PII redaction throughput,
and ingest of the bundled sample. Prints a Markdown table row per measurement.

    .venv/bin/python benchmarks/ingest_bench.py [--sizes 1000 10000 50000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dialinsight_core.config import load_settings
from dialinsight_core.dedup import LSHIndex, MinHasher
from dialinsight_core.ingest import ingest
from dialinsight_core.pii import Redactor


def corpus(n: int, rng: random.Random, base: list[str]) -> list[str]:
    """n documents: real sample turns stitched into dialogues; 5 % are small edits of earlier ones."""
    docs: list[str] = []
    for i in range(n):
        if i > 10 and rng.random() < 0.05:
            d = docs[rng.randrange(len(docs))]
            docs.append(d.replace(" the ", " a ", 1) + " ok")
        else:
            docs.append("\n".join(rng.choice(base) for _ in range(12)))
    return docs


def bench_dedup(sizes: list[int], base: list[str]) -> None:
    mh = MinHasher()
    for n in sizes:
        rng = random.Random(n)
        docs = corpus(n, rng, base)
        idx = LSHIndex(threshold=0.8)
        start = time.perf_counter()
        dups = 0
        for i, d in enumerate(docs):
            sig = mh.signature(d)
            dups += bool(idx.query(sig))
            idx.add(str(i), sig)
        s = time.perf_counter() - start
        what = "near-dup screening (MinHash 128 perms, 16x8 LSH)"
        print(f"| {what} | {n:,} dialogues | {s:.2f} s | {n / s:,.0f} docs/s | {dups} flagged |")


def bench_redaction(base: list[str]) -> None:
    texts = base * max(1, 50_000 // len(base))
    start = time.perf_counter()
    r = Redactor()
    for t in texts:
        r(t)
    s = time.perf_counter() - start
    print(f"| PII redaction | {len(texts):,} turns | {s:.2f} s | {len(texts) / s:,.0f} turns/s | |")


def bench_ingest() -> list[str]:
    s = load_settings()
    start = time.perf_counter()
    res = ingest(s)
    el = time.perf_counter() - start
    st = res.stats
    size = f"{st['files_read']} dialogues / {st['turns_kept']:,} turns"
    print(f"| ingest of the bundled STAR sample (parse, validate, redact, dedup, scenes, behaviours) | "
          f"{size} | {el:.2f} s | {st['files_read'] / el:,.0f} dialogues/s | |")
    return res.turns.column("text").to_pylist()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1_000, 10_000, 50_000])
    args = ap.parse_args()
    print("| what | size | time | rate | note |\n| --- | --- | --- | --- | --- |")
    base = bench_ingest()
    bench_redaction(base)
    bench_dedup(args.sizes, base)


if __name__ == "__main__":
    main()
