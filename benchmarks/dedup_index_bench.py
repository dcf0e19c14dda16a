"""Dedup against history: what the persistent index costs a night as the history grows.

For each history size H it indexes H published dialogues as nightly snapshots of ``--night``
dialogues each (the way publish adds them, size-tiered merges included), then asks the lookups of
one ingest run: ``--new`` (16,384) new dialogues in batches of ``ingest.dedup_batch`` (8,192), of which 1 %
repeat a published dialogue exactly and 4 % nearly (a few of its 128 MinHash values changed).
Signatures are random (the MinHash of distinct text is; shingling is ingest's cost, measured
elsewhere), so every figure is the index's own work. Each H runs in a fresh process.

It prints, per H: seconds per night to add (amortised over the nights, merges included), segments
per bucket, the lookup's seconds per 1,000 new dialogues, the row groups it read and those the
statistics let it skip, and peak RSS.

    .venv/bin/python benchmarks/dedup_index_bench.py --history 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _hashes(tag: str, n: int) -> list[str]:
    return [hashlib.sha256(f"{tag}-{i}".encode()).hexdigest() for i in range(n)]


def child(history: int, night: int, new: int, batch: int, buckets: int) -> dict:
    from dialinsight_core.dedup_index import DedupIndex
    from dialinsight_core.storage import open_store

    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="dedup-bench-") as tmp:
        store = open_store(f"file://{tmp}/store")
        idx = DedupIndex(store, threshold=0.8, buckets=buckets)
        t0 = time.perf_counter()
        nights, kept_sigs, kept_hashes = [], [], []
        for d in range(max(1, history // night)):
            snap = f"2026-{1 + d // 28:02d}-{1 + d % 28:02d}/night"
            sigs = rng.integers(0, 2**63, size=(night, 128), dtype=np.uint64)
            hashes = _hashes(snap, night)
            idx.add(snap, [f"d{i}" for i in range(night)], hashes, sigs)
            nights.append(snap)
            pick = rng.choice(night, size=min(night, 64), replace=False)  # some to plant as repeats
            kept_sigs.append(sigs[pick])
            kept_hashes += [hashes[i] for i in pick]
        add_s = time.perf_counter() - t0
        segs = {kind: len([k for k in store.list(f"dedup/{kind}/") if k.endswith(".parquet")]) / buckets
                for kind in ("bands", "hashes", "sigs")}
        # the night's new dialogues: 1 % exact copies, 4 % near copies, the rest new
        old_sigs, old_hashes = np.concatenate(kept_sigs), kept_hashes
        q_sigs = rng.integers(0, 2**63, size=(new, 128), dtype=np.uint64)
        q_hashes = _hashes("new", new)
        n_exact, n_near = new // 100, new * 4 // 100
        src = rng.choice(len(old_hashes), size=n_exact + n_near, replace=len(old_hashes) < n_exact + n_near)
        for j, i in enumerate(src):
            q_sigs[j] = old_sigs[i]
            if j < n_exact:
                q_hashes[j] = old_hashes[i]
            else:
                q_sigs[j, rng.choice(128, size=6, replace=False)] += np.uint64(1)  # similarity ~0.95
        allowed = set(nights)
        t0 = time.perf_counter()
        found = exact = 0
        for s in range(0, new, batch):
            got = idx.lookup(q_hashes[s:s + batch], q_sigs[s:s + batch], allowed)
            found += sum(m is not None for m in got)
            exact += sum(m is not None and m.exact for m in got)
        lookup_s = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp, "store", "dedup").rglob("*.parquet"))
    return {"history": history, "nights": len(nights), "add_s_per_night": add_s / len(nights), "merges": idx.merges,
            "segments_per_bucket": segs, "index_mib": size / 2**20, "new": new, "found": found, "exact": exact,
            "planted": n_exact + n_near, "lookup_s": lookup_s, "lookup_s_per_1000": lookup_s / new * 1000,
            "row_groups_read": idx.row_groups_read[0], "row_groups_skipped": idx.row_groups_read[1],
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--night", type=int, default=10_000, help="dialogues per published night")
    ap.add_argument("--new", type=int, default=16_384, help="new dialogues looked up (two batches of 8,192)")
    ap.add_argument("--batch", type=int, default=8192, help="ingest.dedup_batch")
    ap.add_argument("--buckets", type=int, default=16, choices=(1, 16, 256))
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.history[0], args.night, args.new, args.batch, args.buckets)))
        return
    rows = []
    for h in args.history:
        out = subprocess.run([sys.executable, __file__, "--child", "--history", str(h), "--night", str(args.night),
                              "--new", str(args.new), "--batch", str(args.batch), "--buckets", str(args.buckets)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    print("\n| history (dialogues) | nights | add s/night | segments/bucket | index MiB | lookup s / 1,000 new "
          "| row groups read / skipped | found / planted | peak RSS |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['history']:,} | {r['nights']} | {r['add_s_per_night']:.2f} | {r['segments_per_bucket']['bands']:.0f} "
              f"| {r['index_mib']:,.0f} | {r['lookup_s_per_1000']:.3f} | {r['row_groups_read']:,} / {r['row_groups_skipped']:,} "
              f"| {r['found']} / {r['planted']} | {r['peak_rss_mib']:,.0f} MiB |")


if __name__ == "__main__":
    main()
