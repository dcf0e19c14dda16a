"""DAG integrity: parses without errors, no DB/connection access at parse, policy checks."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(ROOT / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "dialinsight_nightly" in dagbag.dags


def test_nightly_policy(dagbag):
    dag = dagbag.dags["dialinsight_nightly"]
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert dag.doc_md and "dialinsight_nightly" in dag.doc_md
    assert {"dialinsight", "nightly"} <= set(dag.tags)
    assert dag.timetable.expression == "0 2 * * *"  # nightly
    for t in dag.tasks:
        assert t.retries >= 1, t.task_id
        assert t.retry_exponential_backoff, t.task_id
        assert t.execution_timeout is not None, t.task_id
        assert t.on_failure_callback, t.task_id
    assert {"ingest", "build_prompts", "plan_shards", "label", "score", "gate", "publish"} == set(dag.task_dict)
    label = dag.task_dict["label"]
    assert label.pool == "llm_engine"  # engines are serialised so they cannot exhaust memory
    assert set(dag.params.keys()) == {"max_dialogues", "sources", "engine", "engine_base_url", "shards", "promote"}
    assert dag.task_dict["gate"].downstream_task_ids == {"publish"}


def test_params_form_accepts_its_own_defaults(dagbag):
    """The UI trigger form sends an empty text field as null: optional fields must allow null."""
    dag = dagbag.dags["dialinsight_nightly"]
    dag.params.validate()
    for name, param in dag.params.items():
        value = param.value
        if value in (None, "", []):
            types = param.schema.get("type")
            assert isinstance(types, list) and "null" in types, name


def test_parse_needs_no_database_or_connections(tmp_path):
    """Parse the DAG file with the metadata DB unreachable and connection look-ups booby-trapped."""
    script = textwrap.dedent(f"""
        import sys
        from airflow.sdk.bases.hook import BaseHook
        def boom(*a, **k):
            raise RuntimeError("connection look-up at parse time")
        BaseHook.get_connection = classmethod(boom)
        import sqlalchemy
        real = sqlalchemy.create_engine
        def no_db(*a, **k):
            raise RuntimeError("database access at parse time")
        sqlalchemy.create_engine = no_db
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(ROOT / 'dags')!r})
        print(bag.import_errors)
        sys.exit(1 if bag.import_errors or "dialinsight_nightly" not in bag.dags else 0)
    """)
    env = dict(os.environ, AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{tmp_path}/missing/dir/airflow.db")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]


def test_parse_imports_no_heavy_modules():
    script = textwrap.dedent(f"""
        import sys
        from airflow.dag_processing.dagbag import DagBag
        DagBag(dag_folder={str(ROOT / 'dags')!r})
        heavy = [m for m in ("vllm", "torch", "great_expectations", "pandas", "boto3", "transformers") if m in sys.modules]
        print(heavy)
        sys.exit(1 if heavy else 0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_instructions_dag_policy(dagbag):
    from airflow.providers.standard.operators.hitl import HITLOperator

    dag = dagbag.dags["dialinsight_instructions"]
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.doc_md
    assert dag.timetable.expression == "0 3 * * 1"  # weekly; manual triggers any time
    review = dag.get_task("review")
    assert isinstance(review, HITLOperator) and review.options == ["Approve", "Reject"]
    assert set(review.params) == {"edits", "note"}
    assert dag.get_task("generate").pool == "llm_engine"
    outlets = dag.get_task("finalise").outlets
    assert [o.name for o in outlets] == ["dialinsight_library"]
    assert dag.get_task("finalise").upstream_task_ids == {"review", "export_for_review"}
    dag.params.validate()  # the trigger form accepts its own defaults


def test_snapshot_asset_links_publish_to_the_check_dag(dagbag):
    """publish emits the snapshot asset; the check DAG is scheduled on it and on nothing else."""
    nightly = dagbag.dags["dialinsight_nightly"]
    assert [o.name for o in nightly.get_task("publish").outlets] == ["dialinsight_snapshot"]
    assert all(not t.outlets for t in nightly.tasks if t.task_id != "publish")
    check = dagbag.dags["dialinsight_snapshot_check"]
    assert check.catchup is False and check.doc_md and "dialinsight_snapshot" in check.doc_md
    assert [a.name for a in check.timetable.asset_condition.objects] == ["dialinsight_snapshot"]
    for t in check.tasks:
        assert t.retries >= 1 and t.on_failure_callback and t.execution_timeout is not None


def test_evaluate_dag_runs_on_each_snapshot_and_serialises_its_models(dagbag):
    """dialinsight_evaluate: scheduled on the snapshot asset, its model tasks in the engine pool (one
    fine-tune at a time on a worker), the report emits the evaluation asset and notifies."""
    dag = dagbag.dags["dialinsight_evaluate"]
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.doc_md
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["dialinsight_snapshot"]
    assert set(dag.task_dict) == {"plan", "model", "report"}
    model = dag.get_task("model")
    assert model.pool == "llm_engine"
    assert [o.name for o in dag.get_task("report").outlets] == ["dialinsight_evaluation"]
    assert dag.get_task("report").on_success_callback
    for t in dag.tasks:
        assert t.retries >= 1 and t.on_failure_callback and t.execution_timeout is not None, t.task_id
    dag.params.validate()
    assert set(dag.params) == {"snapshot_uri"}
