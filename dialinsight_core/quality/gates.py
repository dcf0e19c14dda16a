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
from collections.abc import Callable, Iterable, Mapping
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


def batch_expectations(settings: Settings, non_null: Mapping[str, int]) -> tuple[list[Expectation], list[dict[str, str]]]:
    """The batch suite over all scored records (with an ``accepted`` column), and skipped checks;
    ``non_null``: each column's count of values over the run."""
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
        if non_null.get(col, 0):
            exps.append((f"mean_{dim}_below_min", "ExpectColumnMeanToBeBetween", {"column": col, "min_value": minimum}))
        else:
            skipped.append({"check": f"mean_{dim}", "why": "no record has this score"})
    judged = int(non_null.get("judge_failed", 0))
    if judged >= g.judge_failure_min_rows:
        exps.append(("judge_failure_rate_above_max", "ExpectColumnMeanToBeBetween",
                     {"column": "judge_failed", "max_value": g.max_judge_failure_rate}))
    elif judged:  # a rate over a handful of judged records is noise (one truncated verdict of one)
        skipped.append({"check": "judge_failure_rate",
                        "why": f"{judged} judged records < gates.judge_failure_min_rows={g.judge_failure_min_rows}"})
    for col in g.collapse.columns:
        n = int(non_null.get(col, 0))
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
            t = cfg.target_share
            band = max(g.task_mix_tolerance, g.task_mix_z * math.sqrt(t * (1 - t) / n_accepted))
            exps.append((f"task_mix_{fam}", "ExpectColumnMeanToBeBetween",
                         {"column": f"is_{fam}", "min_value": round(max(t - band, 0), 4),
                          "max_value": round(min(t + band, 1), 4)}))
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
        self._checkpoints: dict[str, Any] = {}

    def checkpoint(self, name: str, batch_def: Any, exps: list[Expectation]) -> Any:
        gx = self.gx
        suite = self.ctx.suites.add(gx.ExpectationSuite(name=name, meta={"suite_version": self.version,
                                                                          "suite_hash": suite_hash(exps)}))
        for reason, cls, kwargs in exps:
            suite.add_expectation(getattr(gx.expectations, cls)(**kwargs, meta={"reason_code": reason}))
        vd = self.ctx.validation_definitions.add(gx.ValidationDefinition(name=f"{name}_validation", data=batch_def,
                                                                         suite=suite))
        actions = [gx.checkpoint.UpdateDataDocsAction(name="data_docs")] if self.docs_dir else []
        return self.ctx.checkpoints.add(gx.Checkpoint(name=f"{name}_checkpoint", validation_definitions=[vd],
                                                      actions=actions, result_format={"result_format": "COMPLETE"}))

    def run_name_for(self, part: int | None) -> str | None:
        """GX's run name (a Data Docs folder): the snapshot id, and the part of the row gate."""
        name = self.run_name.replace("/", "_").replace("\\", "_") if self.run_name else None  # GX store keys
        if part is None:
            return name
        return f"{name}_part-{part:05d}" if name else f"part-{part:05d}"

    def run_frame(self, name: str, df: pd.DataFrame, exps: list[Expectation], part: int | None = None) -> Any:
        """Validate an in-memory frame; a suite run again (the row gate's next part) reuses its checkpoint."""
        if name not in self._checkpoints:
            batch_def = self.source.add_dataframe_asset(name).add_batch_definition_whole_dataframe(f"{name}_all")
            self._checkpoints[name] = self.checkpoint(name, batch_def, exps)
        return self._run(self._checkpoints[name], part, batch_parameters={"dataframe": df})

    def run_sql(self, name: str, batch_def: Any, exps: list[Expectation]) -> Any:
        """Validate a table of the run's SQLite database: GX computes the metrics in SQL, over every row."""
        return self._run(self.checkpoint(name, batch_def, exps), None)

    def _run(self, cp: Any, part: int | None, **kw: Any) -> Any:
        from great_expectations.core.run_identifier import RunIdentifier

        res = cp.run(run_id=RunIdentifier(run_name=self.run_name_for(part)), **kw)
        return next(iter(res.run_results.values()))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _kwargs(r: Any) -> dict[str, Any]:
    return {k: v for k, v in r.expectation_config.kwargs.items() if k != "batch_id"}


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _RunTable:
    """The columns the batch suites read, one row per scored record, in a SQLite file: memory holds
    one part at a time, and GX computes each mean, sum and standard deviation over all rows in SQL
    (a mean over the run, not a mean of the parts' means)."""

    def __init__(self, folder: Path, columns: list[str]):
        import sqlite3

        self.path = folder / "gate.sqlite"
        self.columns = ["accepted", "judge_failed", "task_family", *columns]
        self.con = sqlite3.connect(self.path)
        cols = ", ".join(f"{_ident(c)} {'TEXT' if c == 'task_family' else 'REAL'}" for c in self.columns)
        self.con.execute(f"CREATE TABLE scored ({cols})")
        self.non_null: Counter[str] = Counter()
        self.rows = 0

    def add(self, batch: pa.RecordBatch, accepted: pa.BooleanArray) -> None:
        import pyarrow.compute as pc

        status = batch.column("judge_status")
        judge_failed = pc.if_else(pc.equal(status, "ok"), 0.0, 1.0)  # null status (not judged): null
        values = {"accepted": pc.cast(accepted, pa.float64()), "judge_failed": judge_failed,
                  "task_family": batch.column("task_family")}
        arrays = [values[c] if c in values else batch.column(c) for c in self.columns]
        for c, arr in zip(self.columns, arrays, strict=True):
            self.non_null[c] += len(arr) - arr.null_count
        marks = ", ".join("?" * len(self.columns))
        self.con.executemany(f"INSERT INTO scored VALUES ({marks})", zip(*(a.to_pylist() for a in arrays), strict=True))
        self.rows += batch.num_rows

    def close(self) -> None:
        self.con.commit()
        self.con.close()


def batch_columns(settings: Settings, names: list[str]) -> list[str]:
    """Score columns the batch suites read (those the scored table has)."""
    g = settings.gates
    cols = ["overall_score", *(d if d == "overall_score" else f"q_{d}" for d in g.min_mean), *g.collapse.columns]
    return [c for c in dict.fromkeys(cols) if c in names]


def apply_gates(scored: pa.Table, settings: Settings, baseline: Baseline | None = None,
                dialogues_read: int | None = None, params: dict[str, Any] | None = None,
                run_name: str | None = None) -> GateResult:
    """``gate_parts`` over an in-memory table, its accepted and rejected rows collected."""
    accepted: list[pa.Table] = []
    rejected: list[pa.Table] = []
    res = gate_parts(scored.to_batches(max_chunksize=settings.gates.batch_rows), scored.schema, settings,
                     accepted.append, rejected.append, baseline=baseline, dialogues_read=dialogues_read, params=params,
                     run_name=run_name)
    res.accepted = pa.concat_tables(accepted) if accepted else scored.schema.empty_table()
    res.rejected = pa.concat_tables(rejected) if rejected else schemas.table(schemas.REJECTED, [])
    return res


def gate_parts(parts: Iterable[pa.RecordBatch], schema: pa.Schema, settings: Settings,
               write_accepted: Callable[[pa.Table], None], write_rejected: Callable[[pa.Table], None], *,
               write_evidence: Callable[[str, Any], None] | None = None, baseline: Baseline | None = None,
               dialogues_read: int | None = None, params: dict[str, Any] | None = None,
               run_name: str | None = None) -> GateResult:
    """Row gate part by part (``gates.batch_rows`` rows each), then both batch suites over the whole
    run; ``run_name`` labels the Data Docs pages (the snapshot id).

    Each part's accepted and rejected rows go to the writers as they are decided, and its full GX
    result to ``write_evidence`` (``row_gate/part-NNNNN``); memory holds one part. The batch suites
    read the run's SQLite table (``_RunTable``), so their figures are the run's own."""
    g = settings.gates
    suites = _Suites(g.suite_version, g.data_docs, run_name)
    tmp = Path(tempfile.mkdtemp(prefix="dialinsight-gate-"))
    try:
        return _gate(parts, schema, settings, suites, tmp, write_accepted, write_rejected, write_evidence,
                     baseline, dialogues_read, params)
    except BaseException:
        if suites.docs_dir is not None:
            shutil.rmtree(suites.docs_dir, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _gate(parts: Iterable[pa.RecordBatch], schema: pa.Schema, settings: Settings, suites: _Suites, tmp: Path,
          write_accepted: Callable[[pa.Table], None], write_rejected: Callable[[pa.Table], None],
          write_evidence: Callable[[str, Any], None] | None, baseline: Baseline | None, dialogues_read: int | None,
          params: dict[str, Any] | None) -> GateResult:
    g = settings.gates
    results: dict[str, Any] = {}
    row_exps = row_expectations(settings)
    row_cols = list(dict.fromkeys(kw["column"] for _, _, kw in row_exps))
    table = _RunTable(tmp, batch_columns(settings, schema.names))
    row_agg = _RowGateTotals(row_exps)
    by_reason: Counter[str] = Counter()
    by_family: Counter[str] = Counter()
    for part, batch in enumerate(b for b in parts if b.num_rows):
        df = pa.Table.from_batches([batch]).select(row_cols).to_pandas()
        row_res = suites.run_frame("row_gate", df, row_exps, part)
        reasons: dict[int, list[tuple[str, dict[str, Any]]]] = {}
        for r in row_res.results:
            reason = r.expectation_config.meta["reason_code"]
            for idx in r.result.get("unexpected_index_list") or []:
                reasons.setdefault(int(idx), []).append((reason, {"expectation": r.expectation_config.type, **_kwargs(r)}))
        if write_evidence is not None:
            write_evidence(f"row_gate/part-{part:05d}", _jsonable(row_res.to_json_dict()))
        rejected_idx = sorted(reasons)
        rejected_rows = []
        for i, row in zip(rejected_idx, batch.take(pa.array(rejected_idx, pa.int64())).to_pylist(), strict=True):
            why = reasons[i]
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
            by_reason.update(code for code, _ in why)
        row_agg.add(part, batch.num_rows, len(reasons), row_res)
        keep = pa.array([i not in reasons for i in range(batch.num_rows)])
        accepted = pa.Table.from_batches([batch]).filter(keep)
        by_family.update(accepted.column("task_family").to_pylist())
        write_accepted(accepted)
        if rejected_rows:
            write_rejected(schemas.table(schemas.REJECTED, rejected_rows))
        table.add(batch, keep)
    table.close()
    scored_in = table.rows
    n_rejected = row_agg.rejected_rows
    n_accepted = scored_in - n_rejected
    summary: dict[str, Any] = {}
    if scored_in:
        results["row_gate"] = row_agg.json()
    else:
        results["row_gate"] = {"success": True, "results": [], "parts": [], "note": "no scored records"}
    summary["row_gate"] = {"success": bool(results["row_gate"]["success"]), "version": g.suite_version,
                           "hash": suite_hash(row_exps), "expectations": len(row_exps),
                           "parts": len(results["row_gate"]["parts"])}

    # --- the batch suites, over the run's SQLite table -------------------------------------------------
    source = suites.ctx.data_sources.add_sqlite("dialinsight_run", connection_string=f"sqlite:///{table.path}")
    batch_exps, skipped = batch_expectations(settings, table.non_null)
    batch_res = suites.run_sql("batch_gate", source.add_table_asset("scored", table_name="scored")
                               .add_batch_definition_whole_table("scored_all"), batch_exps)
    results["batch_gate"] = {**_jsonable(batch_res.to_json_dict()), "skipped": skipped}
    summary["batch_gate"] = {"success": bool(batch_res.success), "version": g.suite_version,
                             "hash": suite_hash(batch_exps), "expectations": len(batch_exps), "skipped": skipped}

    acc_exps, acc_skipped = accepted_expectations(settings, n_accepted, baseline, dialogues_read, params)
    failed = _failures(batch_res)
    acc_success = True
    if acc_exps:
        is_fam = ", ".join(f"CASE WHEN task_family = '{fam.replace(chr(39), chr(39) * 2)}' THEN 1.0 ELSE 0.0 END AS "
                           f"{_ident(f'is_{fam}')}" for fam in settings.task_families)
        query = f"SELECT *{', ' + is_fam if is_fam else ''} FROM scored WHERE accepted = 1"
        acc_res = suites.run_sql("batch_accepted_gate", source.add_query_asset("accepted", query=query)
                                 .add_batch_definition_whole_table("accepted_all"), acc_exps)
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
        "scored_in": scored_in,
        "accepted": n_accepted,
        "rejected": n_rejected,
        "accept_rate": round(n_accepted / scored_in, 4) if scored_in else 0.0,
        "rejected_by_reason": dict(by_reason),
        "accepted_by_family": dict(by_family),
        "batch_gate_success": batch_success,
        "skipped_checks": skipped + acc_skipped,
    }
    if stats["accepted"] != sum(by_family.values()):
        raise AssertionError(f"gate lost records: {stats}")
    if suites.docs_dir is not None:  # pages that read offline; the row gate's "Failed" says what it is
        left = make_offline(suites.docs_dir)
        if left:  # a GX upgrade added an asset: the pages still work online (tests/unit/test_gates.py catches it)
            log.warning("Data Docs still load %d asset(s) from the network: %s", len(left), left)
        if n_rejected:
            label_row_gate(suites.docs_dir, "row_gate",
                           {suites.run_name_for(p["part"]): p["rejected"] for p in row_agg.parts})
    empty = schema.empty_table()
    return GateResult(empty, schemas.table(schemas.REJECTED, []), results, batch_success, failed, stats,
                      summary, suites.docs_dir)


class _RowGateTotals:
    """The row gate's result over all parts: per expectation, the parts' counts added up."""

    def __init__(self, exps: list[Expectation]):
        self.exps = exps
        self.parts: list[dict[str, Any]] = []
        self.counts = [Counter() for _ in exps]
        self.success = True

    def add(self, part: int, rows: int, rejected: int, res: Any) -> None:
        """A part's GX result; ``rejected``: its rows that failed one expectation or more."""
        self.success &= bool(res.success)
        for i, r in enumerate(res.results):
            for key in ("element_count", "unexpected_count", "missing_count"):
                self.counts[i][key] += int(r.result.get(key) or 0)
        self.parts.append({"part": part, "rows": rows, "rejected": rejected, "success": bool(res.success),
                           "evidence": f"row_gate/part-{part:05d}.json"})

    @property
    def rejected_rows(self) -> int:
        return sum(p["rejected"] for p in self.parts)

    def json(self) -> dict[str, Any]:
        results = []
        for (reason, cls, kwargs), c in zip(self.exps, self.counts, strict=True):
            n = c["element_count"]
            results.append({"expectation_config": {"type": cls, "kwargs": kwargs, "meta": {"reason_code": reason}},
                            "success": c["unexpected_count"] == 0,
                            "result": {**c, "unexpected_percent": round(100 * c["unexpected_count"] / n, 4) if n else 0.0}})
        return {"success": self.success, "statistics": {"rows": sum(p["rows"] for p in self.parts),
                                                          "rejected_rows": self.rejected_rows},
                "results": results, "parts": self.parts}


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
