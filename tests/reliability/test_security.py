"""Security checks of the suite (issue 15, item 4): a whole run on S3 with canary credentials and
Chinese and English personal data in its input leaves no credential in its logs, its XComs (the
stage outputs), any object it wrote (manifests included) or its notifications, and no personal
datum in clear in its logs; the local API server binds loopback with auth on; the object store
refuses keys that escape its prefix."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from dialinsight_core.notify import success_message
from dialinsight_core.storage import FileObjectStore, store_from_settings
from tests.integration.test_hostile_inputs import SECRETS, _zh_dialogue
from tests.reliability.conftest import Pipeline
from tests.reliability.test_faults import MIX, _valid

CANARIES = {"AWS_ACCESS_KEY_ID": "AKIACANARY7Q2W9E4R", "AWS_SECRET_ACCESS_KEY": "canary/secret+Zx81Qm4kPv0Tn7",
            "DI_CANARY_API_KEY": "sk-canary-5f1e3b9a7c2d"}


def _text_of(store, key: str) -> str:
    data = store.read_bytes(key)
    if key.endswith(".parquet"):
        return pd.read_parquet(io.BytesIO(data)).astype(str).to_csv()
    return data.decode("utf-8", "replace")


def test_no_credential_or_personal_datum_leaks_from_a_run(fake_openai, pipeline_env, moto_s3, s3_bucket, tmp_path,
                                                          monkeypatch, caplog, capfd):
    for k, v in CANARIES.items():
        monkeypatch.setenv(k, v)  # moto accepts any key; the engine sends the API key as a bearer token
    zh, en = tmp_path / "zh", tmp_path / "en"
    zh.mkdir()
    en.mkdir()
    (zh / "export.jsonl").write_bytes(b"\n".join(json.dumps(_zh_dialogue(i), ensure_ascii=False).encode()
                                                for i in range(6)) + b"\n")
    (en / "export.jsonl").write_bytes(b"\n".join(_valid(i) for i in range(6)) + b"\n")
    sources = [{"name": "crm", "adapter": "jsonl", "uri": str(zh),
                "fields": {"dialogue_id": "conv_id", "turns": "utterances", "role": "speaker", "text": "content"},
                "roles": {"客户": "customer", "经纪人": "agent"}},
               {"name": "web", "adapter": "jsonl", "uri": str(en),
                "roles": {"customer": "customer", "agent": "agent"}}]
    srv = fake_openai(MIX)
    env = pipeline_env(srv, DIALINSIGHT__STORAGE__URI=f"s3://{s3_bucket}/dialinsight",
                       DIALINSIGHT__STORAGE__S3_ENDPOINT_URL=moto_s3, DIALINSIGHT__ENGINE__API_KEY_ENV="DI_CANARY_API_KEY",
                       DIALINSIGHT__SOURCES=json.dumps(sources, ensure_ascii=False),
                       DIALINSIGHT__GATES__MIN_MEAN__SCHEMA_VALID="0", DIALINSIGHT__GATES__TASK_MIX_TOLERANCE="1.0")
    caplog.set_level(logging.DEBUG)
    pipe = Pipeline(env, "2026-11-25", "scheduled__security")
    pipe.all()
    assert srv.authorization == {f"Bearer {CANARIES['DI_CANARY_API_KEY']}"}  # the canary key was in use
    store = store_from_settings(pipe.ctx.settings)
    keys = store.list("")
    assert any(k.endswith("manifest.json") for k in keys) and len(keys) > 20
    out, err = capfd.readouterr()
    logs = "\n".join(r.getMessage() for r in caplog.records) + out + err
    xcoms = json.dumps(pipe.outs, default=str, ensure_ascii=False)
    event = pipe.outs["publish"]["asset_extra"]
    msg = success_message(dag_id="dialinsight_nightly", event=event, run_url=None)
    notification = msg.text() + json.dumps(msg.payload(), ensure_ascii=False) + msg.html()
    places = {"task logs": logs, "XComs": xcoms, "notification": notification}
    places.update({f"object {k}": _text_of(store, k) for k in keys})
    leaks = {where: [name for name, v in CANARIES.items() if v in text] for where, text in places.items()}
    assert not {w: names for w, names in leaks.items() if names}, "credentials leaked"
    snapshot_pii = {k: [s for s in SECRETS if s in _text_of(store, k)] for k in keys if k.startswith("snapshots/")}
    assert not {k: v for k, v in snapshot_pii.items() if v}, "personal data in clear in the snapshot"
    log_pii = [s for s in SECRETS if s in logs or s in xcoms or s in notification]
    assert not log_pii, f"personal data in clear in logs / XComs / notifications: {log_pii}"


def test_the_local_api_server_binds_loopback_with_auth_on():
    import scripts.local_airflow as la

    env = la.airflow_env(8080, (8793, 8794))
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False").lower() != "true"
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] and env["AIRFLOW__API_AUTH__JWT_SECRET"]


@pytest.mark.parametrize("key", ["../outside", "a/../../etc/passwd", "/etc/passwd", "snapshots/../../x", ""])
def test_the_object_store_refuses_keys_that_escape_its_prefix(key, tmp_path: Path):
    store = FileObjectStore(tmp_path / "store")
    for op in (lambda: store.write_bytes(key, b"x"), lambda: store.read_bytes(key), lambda: store.delete(key)):
        with pytest.raises(ValueError, match="invalid object key"):
            op()
    assert not (tmp_path / "outside").exists()
