# ruff: noqa: E501 - table rows are built one per line
"""False rejects of clean answers and catch rate of each defect kind, on the labelled set
(tests/fixtures/quality_labelled, built by benchmarks/quality_set.py), through the real cheap
cascade (``quality.scoring.score_labels``: rules + grounding, the bundled config's thresholds;
no judge, so these are the figures a record gets before any LLM looks at it).

``python benchmarks/quality_bench.py`` prints the tables kept in docs/benchmarks.md;
``tests/unit/test_quality_labelled.py`` holds them to the issue's bars.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.jsonl import read_jsonl  # noqa: E402
from dialinsight_core import schemas  # noqa: E402
from dialinsight_core.config import load_settings  # noqa: E402
from dialinsight_core.instructions import load_library, load_output_schemas  # noqa: E402
from dialinsight_core.llm import parse_json  # noqa: E402
from dialinsight_core.prompts import Ask, render_messages, schema_fields  # noqa: E402
from dialinsight_core.quality.scoring import failed_thresholds, score_labels  # noqa: E402
from dialinsight_core.templating import template_env  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "quality_labelled"


def load() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return read_jsonl(FIXTURES / "dialogues.jsonl"), read_jsonl(FIXTURES / "labels.jsonl")


def score(dialogues: list[dict[str, Any]], labels: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each label with ``rejected`` and the failed dimensions, scored as the nightly scores it."""
    settings = load_settings(ROOT / "config" / "dialinsight.yaml")
    lib = load_library(settings, ROOT / "config" / "instructions" / "library.yaml")
    instr = {i["instruction_id"]: i for i in lib.to_pylist()}
    out_schemas = load_output_schemas(settings)
    env = template_env()
    turns, prompts, rows = [], [], []
    by_id = {d["dialogue_id"]: d for d in dialogues}
    for d in dialogues:
        for i, t in enumerate(d["turns"]):
            turns.append({"dialogue_id": d["dialogue_id"], "source": "fixture", "turn_idx": i, "role": t["role"], "text": t["text"],
                          "lang": d["lang"], "scene": "*", "behaviour": "other", "meta": "{}"})
    for lab in labels:
        d = by_id[lab["dialogue_id"]]
        fam = lab["task_family"]
        schema_id = settings.task_families[fam].output_schema_id
        messages = render_messages(env, lang=d["lang"], scene="*", turns=d["turns"], instruction=instr[lab["instruction_id"]]["text"],
                                   ask=Ask(), fields=schema_fields(out_schemas[schema_id]),
                                   domain=settings.domain_of(None))
        prompts.append({"prompt_id": lab["label_id"], "dialogue_id": d["dialogue_id"], "instruction_id": lab["instruction_id"],
                        "task_family": fam, "scene": "*", "lang": d["lang"],
                        "role_focus": instr[lab["instruction_id"]]["role_focus"], "output_schema_id": schema_id,
                        "template_id": "t", "variant": "plain", "messages": json.dumps(messages, ensure_ascii=False), "sampling_weight": 1.0,
                        "seed": 0, "library_version": "v1", "turn_span": f"0-{len(d['turns']) - 1}"})
        rows.append({"prompt_id": lab["label_id"], "output_text": lab["output_text"], "output_json": parse_json(lab["output_text"]),
                     "model": "fixture", "engine": "fixture", "sampling_params_hash": "h", "prompt_tokens": 0,
                     "completion_tokens": 0, "finish_reason": lab["finish_reason"], "latency_s": 0.0, "cache_hit": False,
                     "model_fingerprint": "fixture"})
    res = score_labels(schemas.table(schemas.LABELS, rows), schemas.table(schemas.PROMPTS, prompts),
                       schemas.table(schemas.TURNS, turns), lib, out_schemas, settings, None)
    q = settings.quality
    out = []
    for lab, r in zip(labels, res.scored.to_pylist(), strict=True):
        dims = {k[2:]: v for k, v in r.items() if k.startswith("q_")}
        failed = failed_thresholds(dims, settings)
        if r["overall_score"] < q.overall_min:
            failed.append("overall")
        out.append({**lab, "rejected": bool(failed), "failed": failed, "findings": r["quality_findings"]})
    return out


# the dimension that names each defect (a record may fail others too)
OWN_REASON = {"hallucinated_fact": {"grounding"}, "pii_leak": {"pii_leak"}, "wrong_language": {"lang_match"},
              "refusal": {"refusal"}, "truncated": {"not_truncated"}, "empty": {"non_empty", "schema_valid"},
              "repetition": {"repetition"}, "copy": {"copy"}, "instruction_ignored": {"task_form", "coverage"},
              "invalid_json": {"schema_valid"}}


def summarise(scored: list[dict[str, Any]]) -> dict[str, Any]:
    clean: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    defects: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0])
    reasons: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for r in scored:
        if r["kind"] == "clean":
            c = clean[(r["lang"], r["task_family"])]
            c[0] += 1
            c[1] += r["rejected"]
        else:
            c = defects[(r["lang"], r["kind"])]
            c[0] += 1
            c[1] += r["rejected"]
            c[2] += bool(OWN_REASON[r["kind"]] & set(r["failed"]))
            reasons[(r["lang"], r["kind"])].update(r["failed"])
    return {"clean": {f"{k[0]}/{k[1]}": {"n": n, "false_rejects": fr, "rate": round(fr / n, 4)} for k, (n, fr) in sorted(clean.items())},
            "defects": {f"{k[0]}/{k[1]}": {"n": n, "rejected": rj, "rate": round(rj / n, 4), "own_reason": own,
                                           "reasons": dict(reasons[k].most_common(3))}
                        for k, (n, rj, own) in sorted(defects.items())}}


def main() -> None:
    dialogues, labels = load()
    t0 = time.perf_counter()
    scored = score(dialogues, labels)
    seconds = time.perf_counter() - t0
    s = summarise(scored)
    print("| lang / family | clean answers | falsely rejected | rate |\n| --- | --- | --- | --- |")
    for k, v in s["clean"].items():
        print(f"| {k} | {v['n']} | {v['false_rejects']} | {v['rate']:.2%} |")
    print("\n| lang / defect | answers | rejected | rate | rejected for its own dimension | dimensions failed (top 3) |\n"
          "| --- | --- | --- | --- | --- | --- |")
    for k, v in s["defects"].items():
        reasons = ", ".join(f"{d} {n}" for d, n in v["reasons"].items())
        print(f"| {k} | {v['n']} | {v['rejected']} | {v['rate']:.2%} | {v['own_reason']} | {reasons} |")
    print(f"\n{len(labels)} answers scored in {seconds:.1f} s ({len(labels) / seconds:.0f} records/s, rules + grounding)")
    for r in scored:
        if (r["kind"] == "clean") == r["rejected"]:
            print(f"  {'FALSE REJECT' if r['rejected'] else 'MISSED'} {r['label_id']} {r['failed']} {r['output_text'][:150]!r} "
                  f"{(r['findings'] or '')[:200]}", file=sys.stderr)


if __name__ == "__main__":
    main()
