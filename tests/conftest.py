"""Shared fixtures. Airflow reads its config at import, so its env is set here, first."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="dialinsight-airflow-"))
atexit.register(shutil.rmtree, _AIRFLOW_HOME, ignore_errors=True)  # the session's Airflow home (its DB, logs) goes with it
os.environ.update({
    "AIRFLOW_HOME": str(_AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
    "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "GX_ANALYTICS_ENABLED": "false",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "HF_HUB_OFFLINE": "1",
})
for key in [k for k in os.environ if k.startswith("DIALINSIGHT__") or k == "DIALINSIGHT_CONFIG"]:
    del os.environ[key]  # tests start from the bundled config
# Airflow 3.3.2's dag.test() cannot finish a successful run of a DAG with a DeadlineAlert (it never
# stores the alerts, then looks them up by id: docs/operations.md). DAGs parsed in this process run
# under dag.test(), so they carry no deadline; the deadline is tested through the real scheduler
# (tests/integration/test_local_airflow.py), whose environment sets it again.
os.environ["DIALINSIGHT__NOTIFICATIONS__DEADLINE_HOURS"] = "null"

from dialinsight_core.config import Settings, load_settings  # noqa: E402

STAR = ROOT / "data" / "star_apartment_en"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture
def make_settings(tmp_path: Path):
    """Bundled config + overrides given as DIALINSIGHT__ env keys; file store under tmp_path."""

    def make(**env: str) -> Settings:
        base = {"DIALINSIGHT__STORAGE__URI": f"file://{tmp_path / 'store'}"}
        base.update(env)
        return load_settings(environ=base)

    return make


@pytest.fixture
def settings(make_settings) -> Settings:
    return make_settings()


@pytest.fixture
def fake_openai():
    from tests.support.fake_openai import FakeOpenAIServer

    servers = []

    def start(plan=None, slow_s: float = 5.0):
        srv = FakeOpenAIServer(plan, slow_s=slow_s).__enter__()
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.__exit__(None, None, None)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """A real S3-protocol server (moto) on a free loopback port; yields its endpoint URL."""
    from scripts.s3_server import S3Server  # conditional writes atomic, as on S3 (see its docstring)

    server = S3Server("127.0.0.1", 0).start()
    yield server.url
    server.stop()


@pytest.fixture
def s3_bucket(moto_s3: str) -> str:
    import uuid

    import boto3

    name = f"dialinsight-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Migrated SQLite metadata DB in the session's AIRFLOW_HOME (for dag.test())."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, stdout=subprocess.DEVNULL, env=os.environ.copy())
    return _AIRFLOW_HOME
