"""One late batch's lookup against ingest's run index, on real signatures with popular bands.

Random signatures (``dedup_index_bench.py``) share no band, so they miss what a real corpus does:
short, formulaic dialogues share bands with thousands of others, and the candidate pairs of a
batch grow with the run. This takes the kept dialogues of a finished ingest (its ``index.parquet``,
e.g. the 1M scale run's), adds the first ``--indexed`` of them to a run index as ingest does (one
untiered segment per batch of 8,192), then looks up the next batch and prints the lookup's seconds,
the candidate pairs, the RSS before it and its peak (sampled every 50 ms), and a digest of the
answers (equal digests: equal answers).

    PYTHONPATH=. .venv/bin/python benchmarks/run_index_lookup_bench.py \\
        build/scale/n1000000/store/work/ds=2026-12-01/run=scale_bench/ingest/index.parquet --indexed 409600
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 8192


def _rss_mib() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 >> 20


def main() -> None:
    from dialinsight_core.dedup_index import DedupIndex, band_keys
    from dialinsight_core.storage import FileObjectStore

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("index", help="an ingest run's index.parquet (DIALOGUE_INDEX rows)")
    ap.add_argument("--indexed", type=int, default=409_600, help="dialogues in the run index before the batch")
    args = ap.parse_args()

    def batches():
        for b in pq.ParquetFile(args.index).iter_batches(batch_size=BATCH, columns=["dialogue_id", "content_hash", "minhash"]):
            mh = b.column(2)
            yield b.column(0).to_pylist(), b.column(1).to_pylist(), mh.flatten().to_numpy().reshape(len(mh), len(mh[0]))

    with tempfile.TemporaryDirectory(prefix="run-index-bench-") as tmp:
        idx = DedupIndex(FileObjectStore(Path(tmp)), 0.8, buckets=1, tiered=False)
        it, earlier = batches(), []
        t0 = time.perf_counter()
        for part in range(args.indexed // BATCH):
            ids, hashes, sigs = next(it)
            idx.add("run", ids, hashes, sigs, part=part)
            earlier.append(band_keys(sigs))
        built = time.perf_counter() - t0
        ids, hashes, sigs = next(it)
        keys = np.concatenate(earlier).reshape(-1) if earlier else np.zeros(0, np.uint64)
        uniq, counts = np.unique(keys, return_counts=True)
        mine = band_keys(sigs).reshape(-1)
        pos = np.minimum(np.searchsorted(uniq, mine), max(len(uniq) - 1, 0))
        pairs = int(counts[pos][uniq[pos] == mine].sum()) if len(uniq) else 0
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], _rss_mib())
                time.sleep(0.05)

        before = _rss_mib()
        threading.Thread(target=sample, daemon=True).start()
        t0 = time.perf_counter()
        found = idx.lookup(hashes, sigs, {"run"})
        took = time.perf_counter() - t0
        stop.set()
        digest = hashlib.sha256(repr([(m.dialogue_id, m.similarity, m.exact) if m else None
                                      for m in found]).encode()).hexdigest()[:16]
    print(f"indexed {args.indexed:,} in {built:.1f} s; batch of {len(ids):,}: {pairs:,} band pairs (with repeats); "
          f"lookup {took:.2f} s; RSS {before} MiB before, peak {max(peak[0], before)} MiB; "
          f"{sum(m is not None for m in found)} matches; digest {digest}")


if __name__ == "__main__":
    main()
