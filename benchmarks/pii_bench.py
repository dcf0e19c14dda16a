"""Recall and precision of PII redaction per type on the labelled set (zh + en), and whether every
domain fact survives. ``python benchmarks/pii_bench.py`` prints the table kept in
docs/benchmarks.md; ``tests/unit/test_pii_labelled.py`` holds the figures to the issue's bars.

Per line the ingest redactor runs as it does on a dialogue (``learn_names`` then redaction).
*Recall*: the labelled value is gone from the output. *Precision*: redactions that removed a
labelled value / all redactions of that placeholder type (a placeholder in a clean line, or a
second one in a line with one datum, is a false positive). *Facts kept*: each labelled fact is
still in the output verbatim.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jsonl import read_jsonl  # noqa: E402
from dialinsight_core.pii import PLACEHOLDER_TYPES, Redactor  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "pii_labelled"


def load(lang: str) -> list[dict[str, Any]]:
    return read_jsonl(FIXTURES / f"{lang}.jsonl")


def evaluate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by_type: dict[str, dict[str, int]] = defaultdict(lambda: {"instances": 0, "found": 0, "redactions": 0, "true": 0})
    facts = facts_kept = 0
    misses: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for row in rows:
        r = Redactor()
        r.learn_names([row["text"]])
        out = r(row["text"])
        for item in row["pii"]:
            st = by_type[item["type"]]
            st["instances"] += 1
            if item["value"] not in out:
                st["found"] += 1
            else:
                misses.append({"id": row["id"], "text": row["text"], "out": out})
        true_labels = {PLACEHOLDER_TYPES[i["type"]]: i for i in row["pii"] if i["value"] not in out}
        for kind in {k for k in PLACEHOLDER_TYPES}:
            label = PLACEHOLDER_TYPES[kind]
            n = out.count(f"[{label}_")
            if not n or (kind == "ssn" and label == "ID_NUMBER"):
                continue
            by_type[kind]["redactions"] += n
            by_type[kind]["true"] += min(n, 1 if label in true_labels and true_labels[label]["type"] == kind else 0)
        for fact in row["facts"]:
            facts += 1
            facts_kept += fact in out
    seconds = time.perf_counter() - t0
    table = {}
    for kind, st in sorted(by_type.items()):
        table[kind] = {**st, "recall": round(st["found"] / st["instances"], 4) if st["instances"] else None,
                       "precision": round(st["true"] / st["redactions"], 4) if st["redactions"] else None}
    return {"types": table, "facts": facts, "facts_kept": facts_kept, "lines": len(rows), "seconds": round(seconds, 2),
            "misses": misses}


def main() -> None:
    print("| lang | type | instances | recall | redactions | precision |")
    print("| --- | --- | --- | --- | --- | --- |")
    summary = []
    for lang in ("zh", "en"):
        res = evaluate(load(lang))
        for kind, st in res["types"].items():
            if not st["instances"] and not st["redactions"]:
                continue
            rec = f"{st['recall']:.4f}" if st["recall"] is not None else "—"
            prec = f"{st['precision']:.4f}" if st["precision"] is not None else "—"
            print(f"| {lang} | {kind} | {st['instances']} | {rec} | {st['redactions']} | {prec} |")
        summary.append(f"{lang}: facts kept {res['facts_kept']}/{res['facts']}, {res['lines']} lines in {res['seconds']} s")
        for m in res["misses"][:15]:
            print(f"  MISS {m['id']}: {m['text']!r} -> {m['out']!r}", file=sys.stderr)
    print("\n".join(summary))


if __name__ == "__main__":
    main()
