"""The quality cascade over a batch of labels: rules -> grounding -> judge -> aggregation.

Every record gets every rule and grounding dimension; the judge runs only for the records
``judge.select_for_judge`` picks. ``overall_score`` is the weighted mean of the dimensions that
ran (weights from config), so it stays in [0, 1] whether or not the judge saw a record. The
stats are the cost account of the cascade: how many records each layer scored, how long it
took, the judge's tokens and share, and how often the audit sample agreed with the cheap layers.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dialinsight_core import schemas
from dialinsight_core.config import DIMENSIONS, GROUNDING_DIMENSIONS, JUDGE_DIMENSIONS, RULE_DIMENSIONS, Settings
from dialinsight_core.contracts import ScoreStats
from dialinsight_core.llm import Engine
from dialinsight_core.parallel import available_cores, ordered_map
from dialinsight_core.quality import grounding, judge, rules
from dialinsight_core.text import prompt_lang

STAGE = "score"
NOT_CLAIMS = frozenset({"not_mentioned"})  # JSON keys whose values name what the dialogue lacks


@dataclass
class ScoreResult:
    scored: pa.Table
    stats: ScoreStats


def overall(dims: dict[str, float | None], weights: dict[str, float]) -> float:
    """Weighted mean of the dimensions that have a score (a judge dimension is None when unjudged)."""
    used = [(dims[d], w) for d, w in weights.items() if w > 0 and dims.get(d) is not None]
    total = sum(w for _, w in used)
    return round(sum(v * w for v, w in used) / total, 6) if total else 0.0


def failed_thresholds(dims: dict[str, float | None], settings: Settings) -> list[str]:
    return [d for d, t in settings.quality.thresholds.items() if dims.get(d) is not None and dims[d] < t]


def _dialogue_texts(turns: pa.Table, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """Per dialogue: the turn texts alone (what copy and grounding compare against; role names
    between turns would hide a pasted stretch) and the text with role names of the source's domain
    (what the judge reads)."""
    by_dialogue: dict[str, list[tuple[int, str, str, str]]] = defaultdict(list)
    source: dict[str, str] = {}
    for t in turns.select(["dialogue_id", "turn_idx", "role", "text", "lang", "source"]).to_pylist():
        by_dialogue[t["dialogue_id"]].append((t["turn_idx"], t["role"], t["text"], t["lang"]))
        source[t["dialogue_id"]] = t["source"]
    plain, named = {}, {}
    for d, rows in by_dialogue.items():
        names = settings.domain_of(source[d]).role_names[prompt_lang(rows[0][3])]
        plain[d] = "\n".join(text for _, _, text, _ in sorted(rows))
        named[d] = "\n".join(f"{names.get(role, role)}: {text}" for _, role, text, _ in sorted(rows))
    return plain, named


def score_labels(labels: pa.Table, prompts: pa.Table, turns: pa.Table, instructions: pa.Table,
                 output_schemas: dict[str, dict[str, Any]], settings: Settings,
                 judge_engine: Callable[[], Engine] | None = None, ds: str = "") -> ScoreResult:
    """labels (+ prompt, dialogue and instruction context) -> ``scored`` table and cost stats.

    ``judge_engine`` builds the judge's engine; it is called only if some record needs the judge
    (so a batch that needs none never loads a model). None disables the judge for this call.
    """
    parts: list[pa.Table] = []
    stats = score_parts([(labels, prompts, turns)], instructions, output_schemas, settings, judge_engine, ds,
                        parts.append)
    scored = pa.concat_tables(parts) if parts else schemas.table(schemas.SCORED, [])
    return ScoreResult(scored, stats)


def score_parts(parts: Iterable[tuple[pa.Table, pa.Table, pa.Table]], instructions: pa.Table,
                output_schemas: dict[str, dict[str, Any]], settings: Settings,
                judge_engine: Callable[[], Engine] | None, ds: str, sink: Callable[[pa.Table], None],
                workers: int = 1) -> ScoreStats:
    """The cascade over parts of the labels (each with its prompts and its dialogues' turns, e.g.
    one label shard), holding one part in memory at a time.

    The cheap layers run part by part (in ``workers`` processes, a part each, when more than one)
    and their rows wait in a local spool file; the judge's
    selection is then made over *all* records (its cap and audit sample are the run's, as if
    scored at once); the judge sees the chosen ones; each part is finished and handed to ``sink``.
    """
    q = settings.quality
    t0 = time.perf_counter()
    instr_by_id = {i["instruction_id"]: i for i in instructions.to_pylist()}
    times = {"rules": 0.0, "grounding": 0.0}
    summary: list[pa.Table] = []  # the judge's selection inputs, columnar; none when there is no judge
    n_in = 0
    with tempfile.TemporaryDirectory(prefix="dialinsight-score-") as spool:
        spooled: list[Path] = []
        for n, part_summary, part_times in _cheap_parts(parts, instr_by_id, output_schemas, settings, Path(spool),
                                                        workers):
            n_in += n
            if judge_engine is not None:
                summary.append(part_summary)
            spooled.append(Path(spool) / f"part-{len(spooled):05d}.parquet")
            for k, v in part_times.items():
                times[k] += v
        t_cheap = time.perf_counter() - t0

        # --- judge: only records in doubt + the audit sample, capped (over the whole run) ------------
        chosen, sel = judge.select_for_judge(pa.concat_tables(summary) if summary else [], settings, ds) \
            if judge_engine is not None else judge.no_selection()
        del summary
        verdicts: dict[str, judge.JudgeVerdict] = {}
        t_judge = 0.0
        engine_desc: dict[str, Any] = {}
        if chosen:
            items = [judge.JudgeItem(r["prompt_id"], r["_lang"], r["_judge_dialogue"], r["_judge_instruction"],
                                     r["output_text"] or "")
                     for path in spooled for r in _unspill_rows(path) if r["prompt_id"] in chosen]
            a = time.perf_counter()
            engine = judge_engine()  # type: ignore[misc]
            engine_desc = {"engine": engine.name, "model": engine.model}
            try:
                verdicts = judge.judge_records(items, engine, settings)
            finally:
                engine.close()
            t_judge = time.perf_counter() - a

        audit_pairs: list[tuple[bool, bool]] = []
        account: list[pa.Table] = []  # the cost columns, columnar: what cost_stats sums over the run
        n_out = 0
        for path in spooled:
            rows = [_finish(r, chosen, verdicts, engine_desc, audit_pairs, q.thresholds, q.weights)
                    for r in _unspill_rows(path)]
            if not rows:
                continue
            tbl = schemas.table(schemas.SCORED, rows)
            account.append(tbl.select(["judge_status", "judge_tokens", "prompt_tokens", "completion_tokens"]))
            n_out += tbl.num_rows
            sink(tbl)
    cost_columns = pa.concat_tables(account) if account else schemas.SCORED.empty_table().select(
        ["judge_status", "judge_tokens", "prompt_tokens", "completion_tokens"])
    stats = cost_stats(cost_columns, sel, engine_desc, audit_pairs, t_cheap, times["rules"], times["grounding"], t_judge)
    if stats["labels_in"] != n_in or n_out != n_in:
        raise AssertionError(f"score stage lost records: {n_in} labels in, {n_out} scored: {stats}")
    return stats


def score_workers(settings: Settings, n_labels: int, n_parts: int) -> int:
    """How many processes the cheap layers get for a run of this size (``quality.workers``)."""
    q = settings.quality
    if n_labels < q.parallel_min_labels or n_parts < 2:
        return 1
    wanted = q.workers or available_cores()
    return max(1, min(wanted, n_parts))


def _cheap_part(args: tuple[Any, ...]) -> tuple[int, pa.Table, dict[str, float]]:
    """One part's cheap layers, spooled to ``path``: (labels in, the judge's selection inputs as a
    ``judge.summary_table``, seconds)."""
    labels, prompts, turns, instr_by_id, output_schemas, settings, path = args
    times = {"rules": 0.0, "grounding": 0.0}
    rows = _cheap_layers(labels, prompts, turns, instr_by_id, output_schemas, settings, times)
    summary = judge.summary_table([{"prompt_id": r["prompt_id"], "cheap_score": r["cheap_score"], "passes": r["_passes"],
                                    "margin": r["_margin"]} for r in rows])
    pq.write_table(pa.Table.from_pylist([_spill(r) for r in rows]) if rows else pa.table({}), path)
    return labels.num_rows, summary, times


def _cheap_parts(parts: Iterable[tuple[pa.Table, pa.Table, pa.Table]], instr_by_id: dict[str, dict[str, Any]],
                 output_schemas: dict[str, dict[str, Any]], settings: Settings, spool: Path,
                 workers: int) -> Iterator[tuple[int, pa.Table, dict[str, float]]]:
    """Each part's ``_cheap_part`` result, in part order, over ``workers`` spawned processes (a part
    each, a bounded window in flight: memory stays bounded)."""
    jobs = ((labels, prompts, turns, instr_by_id, output_schemas, settings, spool / f"part-{i:05d}.parquet")
            for i, (labels, prompts, turns) in enumerate(parts))
    yield from ordered_map(_cheap_part, jobs, workers)


def cheap_dimensions(label: dict[str, Any], task_family: str, lang: str, dialogue_text: str, instruction_text: str,
                     prompt_text: str, expected_fields: list[str], schema: dict[str, Any], settings: Settings,
                     times: dict[str, float] | None = None) -> tuple[dict[str, float | None], dict[str, Any]]:
    """Rules, grounding and coverage of one answer (``label``: output_text, output_json,
    finish_reason); the judge's dimensions are None. What the score stage and the evaluation of a
    fine-tuned model's answers (``evaluate.domain``) both measure."""
    q = settings.quality
    fam = settings.task_families[task_family]
    ctx = rules.RuleContext(task_family, lang, dialogue_text, instruction_text, schema, fam.min_chars, fam.max_chars,
                            task_family not in q.boilerplate_exempt_families, fam.form)
    a = time.perf_counter()
    dims: dict[str, float | None]
    dims, findings = rules.score_record(label, ctx, q.shingle_size, q.echo_shingle_size)  # type: ignore[assignment]
    b = time.perf_counter()
    facts_text = rules.content_text(label["output_text"], label["output_json"], numbers=False,
                                    skip_keys=NOT_CLAIMS | rules.label_keys(schema))  # field names are not claims
    dims["grounding"], unsupported = grounding.score_grounding(facts_text, dialogue_text, prompt_text,
                                                               tuple(q.amenities), fam.lexical_support)
    content = rules.content_text(label["output_text"], label["output_json"])
    dims["coverage"], missing = grounding.score_coverage(content, label["output_json"], expected_fields, schema)
    if times is not None:
        times["rules"] += b - a
        times["grounding"] += time.perf_counter() - b
    if unsupported:
        findings["grounding"] = {"unsupported_facts": unsupported[:20]}
    if missing:
        findings["coverage"] = {"missing_fields": missing}
    dims.update(dict.fromkeys(JUDGE_DIMENSIONS))
    return dims, findings


def _cheap_layers(labels: pa.Table, prompts: pa.Table, turns: pa.Table, instr_by_id: dict[str, dict[str, Any]],
                  output_schemas: dict[str, dict[str, Any]], settings: Settings, times: dict[str, float]) -> list[dict[str, Any]]:
    """Rules and grounding on every label of a part: its rows, with the judge's inputs kept aside."""
    q = settings.quality
    prompt_by_id = {p["prompt_id"]: p for p in prompts.to_pylist()}
    dialogue_text, dialogue_named = _dialogue_texts(turns, settings)
    rows: list[dict[str, Any]] = []
    for label in labels.to_pylist():
        p = prompt_by_id[label["prompt_id"]]
        instr = instr_by_id.get(p["instruction_id"], {})
        messages = json.loads(p["messages"])
        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        prompt_text = "\n".join(m["content"] for m in messages if m["role"] == "user")
        dtext = dialogue_text.get(p["dialogue_id"], "")
        schema = output_schemas[p["output_schema_id"]]
        expected = json.loads(instr.get("expected_fields") or "[]")
        dims, findings = cheap_dimensions(label, p["task_family"], p["lang"], dtext, f"{system}\n{instr.get('text', '')}",
                                          prompt_text, expected, schema, settings, times)
        cheap = overall(dims, q.weights)
        row = {c: p[c] for c in schemas.PROMPT_CONTEXT_COLUMNS}
        row.update(label)
        row["_dims"], row["_findings"] = dims, findings
        row["_lang"], row["_judge_dialogue"] = p["lang"], dialogue_named.get(p["dialogue_id"], "")
        row["_judge_instruction"] = instr.get("text", "")
        row["cheap_score"] = cheap
        row["_passes"] = not failed_thresholds(dims, settings) and cheap >= q.overall_min
        graded = [dims[d] - t for d, t in q.thresholds.items() if t < 1 and dims.get(d) is not None]
        row["_margin"] = round(min(graded), 6) if graded else 1.0
        rows.append(row)
    return rows


def _spill(row: dict[str, Any]) -> dict[str, Any]:
    """A cheap-layer row as a flat record for the spool file (dimensions and findings as JSON:
    floats round-trip exactly)."""
    return {**row, "_dims": json.dumps(row["_dims"]), "_findings": json.dumps(row["_findings"], ensure_ascii=False)}


def _unspill_rows(path: Path) -> list[dict[str, Any]]:
    rows = pq.read_table(path).to_pylist()
    for r in rows:
        r["_dims"], r["_findings"] = json.loads(r["_dims"]), json.loads(r["_findings"])
    return rows


def _finish(r: dict[str, Any], chosen: dict[str, str], verdicts: dict[str, judge.JudgeVerdict],
            engine_desc: dict[str, Any], audit_pairs: list[tuple[bool, bool]], thresholds: dict[str, float],
            weights: dict[str, float]) -> dict[str, Any]:
    """A record's final row: the judge's verdict (if any) merged, the overall score, the layers run."""
    dims, findings = r.pop("_dims"), r.pop("_findings")
    for k in ("_lang", "_judge_dialogue", "_judge_instruction", "_margin"):
        r.pop(k)
    passes = r.pop("_passes")
    v = verdicts.get(r["prompt_id"])
    layers = ["rules", "grounding"]
    r.update(judge_reason=chosen.get(r["prompt_id"]), judge_status=None, judge_rationale=None, judge_tokens=None,
             judge_model=None)
    if v is not None:
        r.update(judge_status=v.status, judge_rationale=v.rationale, judge_tokens=v.tokens,
                 judge_model=engine_desc.get("model"))
        if v.scores:
            dims.update(v.scores)
            layers.append("judge")
            judge_pass = not [d for d in JUDGE_DIMENSIONS if d in thresholds and v.scores[d] < thresholds[d]]
            if chosen[r["prompt_id"]] == "audit":
                audit_pairs.append((passes, judge_pass))
        else:
            layers.append("judge_failed")
            findings["judge"] = {"status": v.status}
    r.update({f"q_{d}": dims[d] for d in DIMENSIONS})
    r["overall_score"] = overall(dims, weights)
    r["layers_run"] = ",".join(layers)
    r["quality_findings"] = json.dumps(findings, ensure_ascii=False, sort_keys=True) if findings else None
    return r


def cost_stats(scored: pa.Table, sel: dict[str, int], engine_desc: dict[str, Any], audit_pairs: list[tuple[bool, bool]],
               t_cheap: float, t_rules: float, t_ground: float, t_judge: float) -> ScoreStats:
    """The cascade's cost account: records per layer, judge share and tokens, audit agreement."""
    n = scored.num_rows
    st = scored.column("judge_status")  # counted in Arrow: a run's rows never become Python objects here
    judged = st.filter(pc.and_(pc.is_valid(st), pc.not_equal(st, "")))
    n_judged = len(judged)
    failed = Counter({v["values"]: v["counts"] for v in pc.value_counts(judged.filter(pc.not_equal(judged, "ok"))).to_pylist()})

    def total(col: str) -> int:
        return int(pc.sum(pc.fill_null(scored.column(col), 0)).as_py() or 0)

    judge_tokens = total("judge_tokens")
    label_tokens = total("prompt_tokens") + total("completion_tokens")
    agree = sum(1 for a, b in audit_pairs if a == b)
    return {
        "labels_in": n,
        "scored": n,
        "layers": {"rules": n, "grounding": n, "judge": n_judged},
        "dimensions": {"rules": list(RULE_DIMENSIONS), "grounding": list(GROUNDING_DIMENSIONS),
                       "judge": list(JUDGE_DIMENSIONS)},
        "seconds": {"rules": round(t_rules, 3), "grounding": round(t_ground, 3), "rules_and_grounding_total": round(t_cheap, 3),
                    "judge": round(t_judge, 3)},
        "judge": {
            **sel,
            **engine_desc,
            "judged": n_judged,
            "ok": n_judged - sum(failed.values()),
            "failed": sum(failed.values()),
            "failed_by_reason": dict(failed),
            "share": round(n_judged / n, 4) if n else 0.0,
            "tokens": judge_tokens,
            "tokens_per_judged_record": round(judge_tokens / n_judged, 1) if n_judged else 0.0,
            "label_tokens": label_tokens,
            "judge_tokens_vs_label_tokens": round(judge_tokens / label_tokens, 4) if label_tokens else 0.0,
        },
        "audit": {
            "judged_ok": len(audit_pairs),
            "agreement": round(agree / len(audit_pairs), 4) if audit_pairs else None,
            "cheap_pass_judge_fail": sum(1 for a, b in audit_pairs if a and not b),
            "cheap_fail_judge_pass": sum(1 for a, b in audit_pairs if not a and b),
        },
    }
