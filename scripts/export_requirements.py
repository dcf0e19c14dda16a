"""Write requirements.txt from requirements.lock (and the `# no-deps:` pins of requirements.in).

requirements.lock is what `make setup` installs with uv (annotated with why each package is
there); requirements.txt holds the very same pins for a plain pip user:
`pip install --no-deps -r requirements.txt` (the set is already closed: resolving it again
would pull the CUDA torchvision/torchaudio/triton builds the lock excludes). `make lock` runs
this after compiling the lock; `--check` fails if requirements.txt is out of date
(tests/unit/test_requirements.py runs it).

    python scripts/export_requirements.py [--check]
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*(?:\[[^\]]+\])?)==(\S+)$")
HEADER = """\
# Generated from requirements.lock by `make lock` (scripts/export_requirements.py); do not edit.
# The pinned CPU set of dialinsight (embedded default), the same pins `make setup` installs.
# The set is closed: install it without re-resolving, then the package itself:
#   pip install --no-deps -r requirements.txt && pip install --no-deps -e .
# torch==…+cpu is PyTorch's CPU wheel: add `--extra-index-url https://download.pytorch.org/whl/cpu`
# (or `--find-links <folder>` where the wheel is kept locally, as on the project's build machines).
"""


def lock_pins(text: str) -> list[str]:
    return [line for line in text.splitlines() if PIN.match(line)]


def no_deps_pins(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^# no-deps:\s*(\S+)\s*$", text, re.MULTILINE)]


def render(lock: str, req_in: str) -> str:
    pins = lock_pins(lock)
    extra = no_deps_pins(req_in)
    body = "\n".join(pins)
    if extra:
        body += "\n# installed --no-deps by `make setup` (requirements.in `# no-deps:`)\n" + "\n".join(extra)
    return HEADER + body + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="exit 1 if requirements.txt differs from the lock")
    args = parser.parse_args(argv)
    want = render((ROOT / "requirements.lock").read_text(), (ROOT / "requirements.in").read_text())
    out = ROOT / "requirements.txt"
    if args.check:
        if not out.is_file() or out.read_text() != want:
            print("requirements.txt is out of date with requirements.lock: run `make lock`", file=sys.stderr)
            return 1
        return 0
    out.write_text(want)
    print(f"wrote {out.relative_to(ROOT)}: {len(lock_pins(want))} pins")
    return 0


if __name__ == "__main__":
    sys.exit(main())
