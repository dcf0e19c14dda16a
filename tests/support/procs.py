"""Processes a test started and must not leave behind."""

from __future__ import annotations

from pathlib import Path


def procs_with_env(key: str, value: str) -> list[int]:
    """Live (non-zombie) processes whose environment has ``key=value``."""
    needle = f"{key}={value}".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                if stat[stat.rindex(")") + 2] != "Z" and needle in (d / "environ").read_bytes().split(b"\0"):
                    found.append(int(d.name))
            except OSError:
                continue
    return found


def procs_with_arg(fragment: str) -> list[int]:
    """Live processes whose command line contains ``fragment``."""
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if fragment.encode() in (d / "cmdline").read_bytes():
                    found.append(int(d.name))
            except OSError:
                continue
    return found
