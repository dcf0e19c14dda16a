"""Great Expectations 1.x quality gates (docs/quality.md).

Three suites, all built from config:

* ``row_gate`` (every scored record): required columns present, each dimension at or above its
  threshold, overall score at or above ``quality.overall_min``. Each record an expectation flags
  is rejected with that expectation's reason code and the observed value.
* ``batch_gate`` (the scored batch): accept rate, mean overall and per-dimension means, judge
  failure rate, and the score-collapse alarm (a score column with almost no spread).
* ``batch_accepted_gate`` (the accepted records): share of each task family within tolerance of
  its target, row count plausible against the previous published snapshot.

If a batch suite fails, nothing is published. Results are kept as GX JSON and rendered as GX
Data Docs (HTML). GX runs in-process on an ephemeral context (no GX Airflow provider: it cannot
install with Airflow 3.3, see STACK.md).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa

from dialinsight_core import schemas
from dialinsight_core.config import Settings
from dialinsight_core.contracts import Baseline, GateStats, promoted, run_overrides
from dialinsight_core.quality import REASON_CODES
from dialinsight_core.quality.data_docs import label_row_gate, make_offline

log = logging.getLogger(__name__)
STAGE = "gate"
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
Expectation = tuple[str, str, dict[str, Any]]  # (reason_code, GX expectation class, kwargs)


@dataclass
class GateResult:
    accepted: pa.Table
    rejected: pa.Table
    results: dict[str, Any]  # suite name -> GX validation result (JSON)
    batch_success: bool
    failed_batch_expectations: list[str]
    stats: GateStats
    suites: dict[str, Any] = field(default_factory=dict)  # name -> {version, hash, success, skipped}
    data_docs_dir: Path | None = None  # rendered GX Data Docs (a temporary folder; caller copies it)

    @property
    def row_results(self) -> dict[str, Any]:
        return self.results.get("row_gate", {})


def row_expectations(settings: Settings) -> list[Expectation]:
    """The row suite: one expectation per required column and per thresholded dimension."""
    q = settings.quality
    exps: list[Expectation] = [
        (f"missing_{c}", "ExpectColumnValuesToNotBeNull", {"column": c})
        for c in ("prompt_id", "dialogue_id", "instruction_id", "output_text", "model")
    ]
    for dim, threshold in q.thresholds.items():
        exps.append((REASON_CODES[dim], "ExpectColumnValuesToBeBetween",
                     {"column": f"q_{dim}", "min_value": threshold, "max_value": 1.0}))
    exps.append(("low_overall_score", "ExpectColumnValuesToBeBetween",
                 {"column": "overall_score", "min_value": q.overall_min, "max_value": 1.0}))
    return exps


def batch_expectations(settings: Settings, df: pd.DataFrame) -> tuple[list[Expectation], list[dict[str, str]]]:
    """The batch suite over all scored records (with an ``accepted`` column), and skipped checks."""
    g = settings.gates
    exps: list[Expectation] = [
        ("accept_rate_below_min", "ExpectColumnMeanToBeBetween", {"column": "accepted", "min_value": g.min_accept_rate}),
        ("mean_overall_below_min", "ExpectColumnMeanToBeBetween",
         {"column": "overall_score", "min_value": g.min_mean_overall}),
        ("too_few_accepted", "ExpectColumnSumToBeBetween", {"column": "accepted", "min_value": g.min_rows}),
    ]
    skipped: list[dict[str, str]] = []
    for dim, minimum in g.min_mean.items():
        col = dim if dim == "overall_score" else f"q_{dim}"
        if df[col].notna().any():
            exps.append((f"mean_{dim}_below_min", "ExpectColumnMeanToBeBetween", {"column": col, "min_value": minimum}))
        else:
            skipped.append({"check": f"mean_{dim}", "why": "no record has this score"})
    if df["judge_failed"].notna().any():
        exps.append(("judge_failure_rate_above_max", "ExpectColumnMeanToBeBetween",
                     {"column": "judge_failed", "max_value": g.max_judge_failure_rate}))
    for col in g.collapse.columns:
        n = int(df[col].notna().sum()) if col in df else 0
        if n >= g.collapse.min_rows:
            exps.append((f"score_collapse_{col}", "ExpectColumnStdevToBeBetween",
                         {"column": col, "min_value": g.collapse.min_stdev}))
        else:
            skipped.append({"check": f"score_collapse_{col}",
                            "why": f"{n} values < gates.collapse.min_rows={g.collapse.min_rows}"})
    return exps, skipped


def accepted_expectations(settings: Settings, n_accepted: int, baseline: Baseline | None, dialogues_read: int | None,
                          params: dict[str, Any] | None) -> tuple[list[Expectation], list[dict[str, str]]]:
    """The suite over accepted records: task mix and row count against the previous snapshot."""
    g = settings.gates
    exps: list[Expectation] = []
    skipped: list[dict[str, str]] = []
    if n_accepted >= g.task_mix_min_rows:
        for fam, cfg in settings.task_families.items():
            exps.append((f"task_mix_{fam}", "ExpectColumnMeanToBeBetween",
                         {"column": f"is_{fam}", "min_value": round(max(cfg.target_share - g.task_mix_tolerance, 0), 4),
                          "max_value": round(min(cfg.target_share + g.task_mix_tolerance, 1), 4)}))
    else:
        skipped.append({"check": "task_mix", "why": f"{n_accepted} accepted < gates.task_mix_min_rows={g.task_mix_min_rows}"})
    expected = expected_rows(settings, baseline, dialogues_read, params)
    if isinstance(expected, str):
        skipped.append({"check": "row_count_vs_previous", "why": expected})
    else:
        exps.append(("row_count_implausible_vs_previous", "ExpectTableRowCountToBeBetween",
                     {"min_value": math.floor(expected * g.row_count.min_ratio),
                      "max_value": math.ceil(expected * g.row_count.max_ratio)}))
    return exps, skipped


def expected_rows(settings: Settings, baseline: Baseline | None, dialogues_read: int | None,
                  params: dict[str, Any] | None) -> float | str:
    """Accepted rows expected from the previous snapshot, or why there is no baseline.

    A run that will move ``latest.json`` (a full run, or a promoted one) is held to the latest
    snapshot's accepted count as it is: downstream readers must not get a dataset that shrank by
    accident. An override run (``max_dialogues``, ``sources``, ...) publishes beside ``latest``
    without moving it, so its band is the latest count scaled by dialogues read.
    """
    rc = settings.gates.row_count
    if baseline is None:
        return "no previous published snapshot"
    if baseline.accepted < rc.min_previous_rows:
        return f"previous snapshot {baseline.snapshot_id} has {baseline.accepted} rows < {rc.min_previous_rows}"
    if not run_overrides(params) or promoted(params) or not dialogues_read or not baseline.dialogues_read:
        return float(baseline.accepted)
    return baseline.accepted * dialogues_read / baseline.dialogues_read


def suite_hash(exps: list[Expectation]) -> str:
    return hashlib.sha256(json.dumps(exps, sort_keys=True, default=str).encode()).hexdigest()[:12]


class _Suites:
    """One ephemeral GX context per gate run; each suite runs through a checkpoint that also
    updates a Data Docs site in a temporary folder."""

    def __init__(self, version: str, docs: bool, run_name: str | None = None):
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        self.gx = gx
        self.version = version
        self.run_name = run_name
        self.ctx = gx.get_context(mode="ephemeral")
        self.ctx.variables.progress_bars = ProgressBarsConfig(globally=False)  # no tqdm bars in task logs
        self.docs_dir: Path | None = None
        for site, cfg in dict(self.ctx.get_config().data_docs_sites or {}).items():
            base = (cfg.get("store_backend") or {}).get("base_directory")
            self.ctx.delete_data_docs_site(site)  # the ephemeral default site: a temp dir GX never removes
            if base and Path(base).is_dir() and Path(base).name.startswith("tmp"):
                shutil.rmtree(base, ignore_errors=True)
        if docs:
            self.docs_dir = Path(tempfile.mkdtemp(prefix="dialinsight-gx-docs-"))
            self.ctx.add_data_docs_site("dialinsight", {
                "class_name": "SiteBuilder", "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(self.docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"}})
        self.source = self.ctx.data_sources.add_pandas("dialinsight")

    def run(self, name: str, df: pd.DataFrame, exps: list[Expectation]) -> Any:
        gx = self.gx
        batch_def = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_all")
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=name, meta={"suite_version": self.version,
                                                                          "suite_hash": suite_hash(exps)}))
        for reason, cls, kwargs in exps:
            suite.add_expectation(getattr(gx.expectations, cls)(**kwargs, meta={"reason_code": reason}))
        vd = self.ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}_validation", data=batch_def,
                                                                         suite=suite))
        actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if self.docs_dir else []
        cp = self.ctx.checkpoints.add(gx.Checkpoint(name=f"{name}_checkpoint", validation_definitions=[vd],
                                                    actions=actions, result_format={"result_format": "COMPLETE"}))
        from great_expectations.core.run_identifier import RunIdentifier

        run_name = self.run_name.replace("/", "_").replace("\\", "_") if self.run_name else None  # GX store keys
        res = cp.run(batch_parameters={"dataframe": df}, run_id=RunIdentifier(run_name=run_name))
        return next(iter(res.run_results.values()))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _kwargs(r: Any) -> dict[str, Any]:
    return {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}


def apply_gates(scored: pa.Table, settings: Settings, baseline: Baseline | None = None,
                dialogues_read: int | None = None, params: dict[str, Any] | None = None,
                run_name: str | None = None) -> GateResult:
    """Row gate, then both batch suites; ``run_name`` labels the Data Docs pages (the snapshot id)."""
    g = settings.gates
    suites = _Suites(g.suite_version, g.data_docs, run_name)
    df = scored.to_pandas()
    df.index = pd.RangeIndex(len(df))
    results: dict[str, Any] = {}
    summary: dict[str, Any] = {}

    # --- row gate -------------------------------------------------------------------------------
    reasons: dict[int, list[tuple[str, dict[str, Any]]]] = {}
    row_exps = row_expectations(settings)
    if len(df):
        row_res = suites.run("row_gate", df, row_exps)
        results["row_gate"] = _jsonable(row_res.to_json_dict())
        for r in row_res.results:
            reason = r.expectation_config.meta["reason_code"]
            for idx in r.result.get("unexpected_index_list") or []:
                reasons.setdefault(int(idx), []).append((reason, {"expectation": r.expectation_config.type, **_kwargs(r)}))
        summary["row_gate"] = {"success": bool(row_res.success)}
    else:
        results["row_gate"] = {"success": True, "results": [], "note": "no scored records"}
        summary["row_gate"] = {"success": True}
    summary["row_gate"].update(version=g.suite_version, hash=suite_hash(row_exps), expectations=len(row_exps))
    rows = scored.to_pylist()
    rejected_rows = []
    for i, why in sorted(reasons.items()):
        row = dict(rows[i])
        findings = json.loads(row.get("quality_findings") or "{}")
        detail = []
        for code, exp in why:
            col = exp.get("column")
            item = {"reason_code": code, **exp, "observed": row.get(col) if col else None}
            dim = col.removeprefix("q_") if col else None
            if dim in findings:
                item["evidence"] = findings[dim]
            detail.append(item)
        row.update(stage=STAGE, reason_code=",".join(code for code, _ in why),
                   reason_detail=json.dumps(detail, ensure_ascii=False, default=str))
        rejected_rows.append(row)
    accepted_idx = [i for i in range(len(rows)) if i not in reasons]
    accepted = scored.take(pa.array(accepted_idx, type=pa.int64()))

    # --- batch gate (all scored records) ------------------------------------------------------------
    df["accepted"] = [0 if i in reasons else 1 for i in range(len(df))]
    df["judge_failed"] = [None if pd.isna(s) else float(s != "ok") for s in df["judge_status"]] if len(df) else []
    df["judge_failed"] = df["judge_failed"].astype("float64")
    batch_exps, skipped = batch_expectations(settings, df)
    batch_res = suites.run("batch_gate", df, batch_exps)
    results["batch_gate"] = {**_jsonable(batch_res.to_json_dict()), "skipped": skipped}
    summary["batch_gate"] = {"success": bool(batch_res.success), "version": g.suite_version,
                             "hash": suite_hash(batch_exps), "expectations": len(batch_exps), "skipped": skipped}

    # --- batch gate (accepted records) --------------------------------------------------------------
    acc_df = df.loc[df["accepted"] == 1].reset_index(drop=True)
    for fam in settings.task_families:
        acc_df[f"is_{fam}"] = (acc_df["task_family"] == fam).astype("float64")
    acc_exps, acc_skipped = accepted_expectations(settings, len(acc_df), baseline, dialogues_read, params)
    failed = _failures(batch_res)
    acc_success = True
    if acc_exps:
        acc_res = suites.run("batch_accepted_gate", acc_df, acc_exps)
        acc_success = bool(acc_res.success)
        results["batch_accepted_gate"] = {**_jsonable(acc_res.to_json_dict()), "skipped": acc_skipped}
        failed += _failures(acc_res)
    else:
        results["batch_accepted_gate"] = {"success": True, "results": [], "skipped": acc_skipped}
    summary["batch_accepted_gate"] = {"success": acc_success, "version": g.suite_version, "hash": suite_hash(acc_exps),
                                      "expectations": len(acc_exps), "skipped": acc_skipped,
                                      "baseline": baseline.snapshot_id if baseline else None}
    batch_success = bool(batch_res.success) and acc_success

    stats: GateStats = {
        "scored_in": len(rows),
        "accepted": len(accepted_idx),
        "rejected": len(rejected_rows),
        "accept_rate": round(len(accepted_idx) / len(rows), 4) if rows else 0.0,
        "rejected_by_reason": dict(Counter(c for why in reasons.values() for c, _ in why)),
        "accepted_by_family": dict(Counter(acc_df["task_family"])) if len(acc_df) else {},
        "batch_gate_success": batch_success,
        "skipped_checks": skipped + acc_skipped,
    }
    if stats["scored_in"] != stats["accepted"] + stats["rejected"]:
        raise AssertionError(f"gate lost records: {stats}")
    if suites.docs_dir is not None:  # pages that read offline; the row gate's "Failed" says what it is
        left = make_offline(suites.docs_dir)
        if left:  # a GX upgrade added an asset: the pages still work online (tests/unit/test_gates.py catches it)
            log.warning("Data Docs still load %d asset(s) from the network: %s", len(left), left)
        if rejected_rows:
            label_row_gate(suites.docs_dir, "row_gate", len(rejected_rows))
    return GateResult(accepted, schemas.table(schemas.REJECTED, rejected_rows), results, batch_success, failed, stats,
                      summary, suites.docs_dir)


def _failures(res: Any) -> list[str]:
    """One line per failed expectation, readable in a log or an alert: reason code, what was
    measured, the observed value and the bound it missed."""
    out = []
    for r in res.results:
        if r.success:
            continue
        kw = _kwargs(r)
        lo, hi = kw.pop("min_value", None), kw.pop("max_value", None)
        what = kw.pop("column", None) or kw.pop("column_list", None) or ""
        bound = " and ".join(b for b in (f">= {lo}" if lo is not None else "", f"<= {hi}" if hi is not None else "") if b)
        rest = f" {kw}" if kw else ""
        out.append(f"{r.expectation_config.meta['reason_code']}: {r.expectation_config.type}({what}){rest} "
                   f"observed {_fmt(r.result.get('observed_value'))}, expected {bound or 'success'}")
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def remove_docs(result: GateResult) -> None:
    if result.data_docs_dir is not None:
        shutil.rmtree(result.data_docs_dir, ignore_errors=True)
