"""Templating (bottom layer): the one Jinja environment every LLM prompt is rendered with, over the
one ``templates/`` tree (prompt construction, seed and evolution requests, the scene classifier,
the judge). Prompts live in these files, never in f-strings (docs/architecture.md). Reports
(the run report, the evaluation report) render from the same tree, their plots inlined by ``svg``.
"""

from __future__ import annotations

import io
import re
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

TEMPLATE_DIR = Path(__file__).parent / "templates"


@cache
def template_env() -> Environment:
    """Strict: a variable a template uses but the caller did not pass fails at render time."""
    return Environment(loader=FileSystemLoader(TEMPLATE_DIR), undefined=StrictUndefined, autoescape=False)


def get_template(name: str) -> Template:
    return template_env().get_template(name)


def svg(fig: Any) -> str:
    """A matplotlib figure as inline SVG (no XML declaration, DOCTYPE or metadata): an HTML report
    that needs no file beside it and no script."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    out = buf.getvalue()
    out = out[out.index("<svg"):]
    return re.sub(r"<metadata>.*?</metadata>", "", out, flags=re.DOTALL)
