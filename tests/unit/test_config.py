from __future__ import annotations

import pytest

from dialinsight_core.config import ConfigError, load_settings


def test_bundled_config_is_valid():
    s = load_settings(environ={})
    assert s.engine.kind == "vllm"
    assert abs(sum(f.target_share for f in s.task_families.values()) - 1) < 1e-9
    assert {"information_extraction", "summarisation", "dialogue_generation", "data_analysis"} <= set(s.task_families)
    assert len(s.config_hash()) == 16


def test_env_overrides_are_typed():
    s = load_settings(environ={"DIALINSIGHT__LABELING__SHARDS": "7", "DIALINSIGHT__QUALITY__OVERALL_MIN": "0.9",
                               "DIALINSIGHT__STORAGE__URI": "s3://bucket/prefix"})
    assert s.labeling.shards == 7 and s.quality.overall_min == 0.9 and s.storage.uri == "s3://bucket/prefix"
    assert s.config_hash() != load_settings(environ={}).config_hash()


@pytest.mark.parametrize(
    ("env", "key"),
    [
        ({"DIALINSIGHT__LABELING__SHARDS": "1000"}, "labeling.shards"),
        ({"DIALINSIGHT__QUALITY__OVERALL_MIN": "1.5"}, "quality.overall_min"),
        ({"DIALINSIGHT__ENGINE__KIND": "tgi"}, "engine.kind"),
        ({"DIALINSIGHT__ENGINE__BOGUS": "1"}, "engine.bogus"),
        ({"DIALINSIGHT__STORAGE__URI": "ftp://x"}, "storage.uri"),
        ({"DIALINSIGHT__ENGINE__KIND": "openai"}, "engine"),
        ({"DIALINSIGHT__TASK_FAMILIES__SUMMARISATION__TARGET_SHARE": "0.9"}, "target_share"),
        ({"DIALINSIGHT__QUALITY__WEIGHTS__NOVELTY": "1"}, "quality.weights"),
        ({"DIALINSIGHT__QUALITY__THRESHOLDS__NOVELTY": "0.5"}, "quality.thresholds"),
        ({"DIALINSIGHT__QUALITY__THRESHOLDS__ECHO": "1.5"}, "quality.thresholds"),
        ({"DIALINSIGHT__QUALITY__JUDGE__BAND_LOW": "0.95"}, "quality.judge"),
        ({"DIALINSIGHT__QUALITY__JUDGE__MAX_SHARE": "2"}, "quality.judge.max_share"),
        ({"DIALINSIGHT__QUALITY__JUDGE__ENGINE__BOGUS": "1"}, "quality.judge"),
        ({"DIALINSIGHT__GATES__MIN_MEAN__NOVELTY": "0.5"}, "gates.min_mean"),
        ({"DIALINSIGHT__GATES__COLLAPSE__COLUMNS": "[q_novelty]"}, "gates.collapse.columns"),
    ],
)
def test_invalid_values_fail_fast_naming_the_key(env, key):
    with pytest.raises(ConfigError) as exc:
        load_settings(environ=env)
    assert key in str(exc.value)


def test_empty_mapping_override_clears_a_section():
    assert load_settings(environ={"DIALINSIGHT__GATES__MIN_MEAN": "{}"}).gates.min_mean == {}
    assert load_settings(environ={"DIALINSIGHT__GATES__MIN_MEAN__COPY": "0.4"}).gates.min_mean["schema_valid"] == 0.8


def test_judge_engine_overrides_apply_only_to_the_judge():
    judge = "{kind: openai, base_url: 'http://j:8000/v1', max_tokens: 99}"
    s = load_settings(environ={"DIALINSIGHT__QUALITY__JUDGE__ENGINE": judge})
    j = s.judge_settings()
    assert (j.engine.kind, j.engine.base_url, j.engine.max_tokens) == ("openai", "http://j:8000/v1", 99)
    assert s.engine.kind == "vllm" and s.engine.max_tokens == 256


def test_unreadable_file(tmp_path):
    bad = tmp_path / "c.yaml"
    bad.write_text("seed: [unclosed")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(bad, environ={})


def test_overrides_from_params_revalidate():
    s = load_settings(environ={})
    assert s.with_overrides({"labeling.shards": 3}).labeling.shards == 3
    with pytest.raises(ConfigError, match=r"labeling\.shards"):
        s.with_overrides({"labeling.shards": 0})
