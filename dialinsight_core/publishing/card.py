"""The dataset card: ``README.md`` in every snapshot, with Hugging Face dataset-card front matter.

``datasets.load_dataset(<snapshot folder>)`` reads its ``configs`` (the accepted rows as the
``default`` config, rejected rows as ``rejected``), and a person reads what the data is, how it was
made, its counts and its limits. Rendered from ``templates/dataset_card.md.j2``.
"""

from __future__ import annotations

from typing import Any

import yaml

from dialinsight_core.templating import get_template

LANG_NAMES = {"en": "English", "zh": "Chinese"}


def size_category(n: int) -> str:
    """The Hugging Face ``size_categories`` bucket of ``n`` rows."""
    for bound, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                        (10_000_000, "1M<n<10M")):
        if n < bound:
            return name
    return "n>10M"


def front_matter(*, languages: list[str], n_rows: int, data_files: dict[str, list[dict[str, str]]],
                 license_id: str, pretty_name: str) -> dict[str, Any]:
    return {
        "license": license_id,
        "language": languages or ["en"],
        "task_categories": ["text-generation"],
        "tags": ["dialogue", "instruction-tuning", "dial-insight", "synthetic"],
        "size_categories": [size_category(n_rows)],
        "pretty_name": pretty_name,
        "configs": [{"config_name": name, "data_files": files, **({"default": True} if name == "default" else {})}
                    for name, files in data_files.items()],
    }


def render_card(meta: dict[str, Any], context: dict[str, Any]) -> str:
    head = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()
    body = get_template("dataset_card.md.j2").render(**context)
    return f"---\n{head}\n---\n\n{body.strip()}\n"
