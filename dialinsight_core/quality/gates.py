"""Great Expectations 1.x quality gates (DESIGN.md section 1.9).

The *row gate* suite holds per-record expectations built from config; each record that an
expectation flags is rejected with that expectation's reason code. The *batch gate* suite checks
the run as a whole (accept rate, mean score, rows accepted); if it fails, nothing is published.
GX runs in-process on an ephemeral context (no GX Airflow provider: it cannot install with
Airflow 3.3, see STACK.md).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import Settings

STAGE = "gate"
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass
class GateResult:
    accepted: pa.Table
    rejected: pa.Table
    row_results: dict[str, Any]
    batch_results: dict[str, Any]
    batch_success: bool
    failed_batch_expectations: list[str]
    stats: dict[str, Any]


def row_expectations(settings: Settings) -> list[tuple[str, str, dict[str, Any]]]:
    """(reason_code, expectation class name, kwargs) for the row suite."""
    q = settings.quality
    exps: list[tuple[str, str, dict[str, Any]]] = [
        (f"missing_{c}", "ExpectColumnValuesToNotBeNull", {"column": c})
        for c in ("prompt_id", "dialogue_id", "instruction_id", "output_text", "model")
    ]
    exps += [
        ("schema_invalid", "ExpectColumnValuesToBeInSet", {"column": "q_schema_valid", "value_set": [1.0]}),
        ("empty_output", "ExpectColumnValuesToBeInSet", {"column": "q_non_empty", "value_set": [1.0]}),
        ("truncated", "ExpectColumnValuesToBeInSet", {"column": "q_not_truncated", "value_set": [1.0]}),
        ("repetitive", "ExpectColumnValuesToBeBetween", {"column": "q_repetition", "min_value": q.repetition_min}),
        ("copies_dialogue", "ExpectColumnValuesToBeBetween", {"column": "q_copy", "min_value": q.copy_min}),
        ("ungrounded", "ExpectColumnValuesToBeBetween", {"column": "q_grounding", "min_value": q.grounding_min}),
        ("low_overall_score", "ExpectColumnValuesToBeBetween",
         {"column": "overall_score", "min_value": q.overall_min, "max_value": 1.0}),
    ]
    return exps


def batch_expectations(settings: Settings) -> list[tuple[str, str, dict[str, Any]]]:
    g = settings.gates
    return [
        ("accept_rate_below_min", "ExpectColumnMeanToBeBetween", {"column": "accepted", "min_value": g.min_accept_rate}),
        ("mean_overall_below_min", "ExpectColumnMeanToBeBetween",
         {"column": "overall_score", "min_value": g.min_mean_overall}),
        ("too_few_accepted", "ExpectColumnSumToBeBetween", {"column": "accepted", "min_value": g.min_rows}),
    ]


def _run_suite(name: str, df: pd.DataFrame, exps: list[tuple[str, str, dict[str, Any]]], version: str) -> Any:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in task logs
    asset = ctx.data_sources.add_pandas(f"{name}_source").add_dataframe_asset(name)
    batch_def = asset.add_batch_definition_whole_dataframe(f"{name}_all")
    suite = ctx.suites.add(gx.ExpectationSuite(name=name, meta={"suite_version": version}))
    for reason, cls, kwargs in exps:
        suite.add_expectation(getattr(gx.expectations, cls)(**kwargs, meta={"reason_code": reason}))
    vd = ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}_validation", data=batch_def, suite=suite))
    return vd.run(batch_parameters={"dataframe": df}, result_format={"result_format": "COMPLETE"})


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def apply_gates(scored: pa.Table, settings: Settings) -> GateResult:
    version = settings.gates.suite_version
    df = scored.to_pandas()
    df.index = pd.RangeIndex(len(df))
    reasons: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    row_json: dict[str, Any] = {"success": True, "results": []}
    if len(df):
        row_res = _run_suite("row_gate", df, row_expectations(settings), version)
        row_json = _jsonable(row_res.to_json_dict())
        for r in row_res.results:
            reason = r.expectation_config.meta["reason_code"]
            kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}
            for idx in r.result.get("unexpected_index_list") or []:
                reasons.setdefault(int(idx), []).append((reason, {"expectation": r.expectation_config.type, **kwargs}))
    rows = scored.to_pylist()
    accepted_idx = [i for i in range(len(rows)) if i not in reasons]
    rejected_rows = []
    for i, why in sorted(reasons.items()):
        row = dict(rows[i])
        detail = [{"reason_code": code, **exp, "observed": _observed(rows[i], exp.get("column"))} for code, exp in why]
        row.update(stage=STAGE, reason_code=",".join(code for code, _ in why),
                   reason_detail=json.dumps(detail, ensure_ascii=False, default=str))
        rejected_rows.append(row)
    accepted = scored.take(pa.array(accepted_idx, type=pa.int64()))
    df["accepted"] = [0 if i in reasons else 1 for i in range(len(df))]
    batch_res = _run_suite("batch_gate", df if len(df) else pd.DataFrame({"accepted": [], "overall_score": []}),
                           batch_expectations(settings), version)
    batch_json = _jsonable(batch_res.to_json_dict())
    failed = [
        f"{r.expectation_config.meta['reason_code']}: {r.expectation_config.type} "
        f"{ {k: v for k, v in r.expectation_config.kwargs.items() if k != 'batch_id'} } observed={r.result.get('observed_value')}"
        for r in batch_res.results if not r.success
    ]
    from collections import Counter

    stats = {
        "scored_in": len(rows),
        "accepted": len(accepted_idx),
        "rejected": len(rejected_rows),
        "accept_rate": round(len(accepted_idx) / len(rows), 4) if rows else 0.0,
        "rejected_by_reason": dict(Counter(c for why in reasons.values() for c, _ in why)),
        "batch_gate_success": bool(batch_res.success),
    }
    if stats["scored_in"] != stats["accepted"] + stats["rejected"]:
        raise AssertionError(f"gate lost records: {stats}")
    return GateResult(accepted, schemas.table(schemas.REJECTED, rejected_rows), row_json, batch_json,
                      bool(batch_res.success), failed, stats)


def _observed(row: dict[str, Any], column: str | None) -> Any:
    return row.get(column) if column else None
