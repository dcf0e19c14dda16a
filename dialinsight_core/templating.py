"""Templating (bottom layer): the one Jinja environment every LLM prompt is rendered with, over the
one ``templates/`` tree (prompt construction, seed and evolution requests, the scene classifier,
the judge). Prompts live in these files, never in f-strings (docs/architecture.md).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template

TEMPLATE_DIR = Path(__file__).parent / "templates"


@cache
def template_env() -> Environment:
    """Strict: a variable a template uses but the caller did not pass fails at render time."""
    return Environment(loader=FileSystemLoader(TEMPLATE_DIR), undefined=StrictUndefined, autoescape=False)


def get_template(name: str) -> Template:
    return template_env().get_template(name)
