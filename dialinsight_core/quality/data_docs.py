"""Great Expectations Data Docs that read offline, and say what a row gate's "failure" means.

GX renders pages that load bootstrap, jQuery, bootstrap-table and Font Awesome from CDNs; offline
the index is unstyled and lists no results, because its tables are drawn by bootstrap-table.
``make_offline`` copies the vendored files (``data_docs_static/``, see its README) into the site
as ``static/vendor/`` and points every page at them by relative path, so a snapshot's
``gx/data_docs/`` works from a laptop, an S3 download or an air-gapped cluster.

The row gate is a *filter*: its suite "fails" whenever it rejects rows, which every healthy run
does. ``label_row_gate`` rewrites that status on the row gate's pages to "N rows rejected by these
expectations" (the run's verdict is the batch gates'), so a reader does not take a published run
for a failed one.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

VENDOR = Path(__file__).parent / "data_docs_static"
# CDN URL -> vendored file under static/vendor/ (None: the tag is removed)
ASSETS: dict[str, str | None] = {
    "https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css": "bootstrap/bootstrap.min.css",
    "https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js": "bootstrap/bootstrap.min.js",
    "https://code.jquery.com/jquery-3.7.1.min.js": "jquery/jquery.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/popper.js/1.12.9/umd/popper.min.js": "popper/popper.min.js",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.css": "bootstrap-table/bootstrap-table.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/bootstrap-table.min.js": "bootstrap-table/bootstrap-table.min.js",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.min.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.0/dist/extensions/filter-control/bootstrap-table-filter-control.css":
        "bootstrap-table/bootstrap-table-filter-control.min.css",
    "https://unpkg.com/bootstrap-table@1.19.1/dist/extensions/filter-control/bootstrap-table-filter-control.min.js":
        "bootstrap-table/bootstrap-table-filter-control.min.js",
    "https://cdnjs.cloudflare.com/ajax/libs/font-awesome/6.6.0/css/all.min.css": "fontawesome/css/all.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css":
        "bootstrap-datepicker/bootstrap-datepicker.min.css",
    "https://cdnjs.cloudflare.com/ajax/libs/bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js":
        "bootstrap-datepicker/bootstrap-datepicker.min.js",
    "https://cdn.jsdelivr.net/npm/@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css": None,
    "https://cdn.jsdelivr.net/npm/vega@5": None,
    "https://cdn.jsdelivr.net/npm/vega-lite@5": None,
    "https://cdn.jsdelivr.net/npm/vega-embed@6": None,
}
_LOGO = re.compile(r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/logo-long\.png\?d=[^\"']*")
_STATIC = re.compile(r"""((?:src|href)=["'])(?:\./|(?:\.\./)+)?static/""")
_FETCH = re.compile(r"""(?:src|href)\s*=\s*["'](https?://[^"']+)["']""")
_FAILED_ICON = '<i class="fas fa-times text-danger" aria-hidden="true"></i> Failed'


def _tag_pattern(url: str) -> re.Pattern[str]:
    """The whole <script …src=url…></script> or <link …href=url…> tag."""
    u = re.escape(url)
    return re.compile(rf"""<script[^>]*\bsrc=["']{u}["'][^>]*>\s*</script>|<link[^>]*\bhref=["']{u}["'][^>]*>""")


def make_offline(site: Path) -> list[str]:
    """Vendor the assets into ``site/static/vendor`` and rewrite every page; returns the CDN
    references left (none for the pages GX renders today)."""
    shutil.copytree(VENDOR, site / "static" / "vendor", dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("README.md"))
    left: list[str] = []
    for page in site.rglob("*.html"):
        up = "../" * (len(page.relative_to(site).parts) - 1)
        text = page.read_text(encoding="utf-8")
        for url, local in ASSETS.items():
            if local is None:
                text = _tag_pattern(url).sub("", text)
            else:
                text = text.replace(url, f"{up}static/vendor/{local}")
        text = _LOGO.sub(f"{up}static/images/logo-long.png", text)
        # GX's own relative links to static/ miss one level on the deepest pages (the favicon): fix the depth
        text = _STATIC.sub(rf"\g<1>{up}static/", text)
        page.write_text(text, encoding="utf-8")
        left += [m.group(1) for m in _FETCH.finditer(text) if _loads(text, m)]
    return sorted(set(left))


def _loads(text: str, m: re.Match[str]) -> bool:
    """A src= (script, image) or a stylesheet href= fetches; a plain link (<a href>) does not."""
    tag_start = text.rfind("<", 0, m.start())
    tag = text[tag_start:m.end()]
    return m.group(0).startswith("src") or tag.startswith("<link")


def label_row_gate(site: Path, suite: str, rejected_rows: int | dict[str, int]) -> None:
    """On the row gate's validation pages and index entries, 'Failed' becomes what it means.

    ``rejected_rows``: one count for every page, or a count per GX run name (the row gate runs once
    per part of the scored table; each page says what its own part rejected)."""
    def label(run: str) -> str | None:
        n = rejected_rows if isinstance(rejected_rows, int) else rejected_rows.get(run)
        return f"{n} rows rejected by these expectations" if n else None

    base = site / "validations" / suite
    for page in base.rglob("*.html"):
        text_label = label(page.relative_to(base).parts[0])
        if text_label is None:
            continue
        icon = f'<i class="fas fa-filter text-warning" aria-hidden="true"></i> {text_label}'
        text = page.read_text(encoding="utf-8")
        page.write_text(text.replace(_FAILED_ICON, icon), encoding="utf-8")
    index = site / "index.html"
    if not index.exists():
        return
    text = index.read_text(encoding="utf-8")
    link = re.compile(rf"'_table_row_link_path': 'validations/{re.escape(suite)}/([^/']+)/")

    # each validation is one {...} entry of the index table's data; change the row gate's alone
    def relabel(m: re.Match[str]) -> str:
        entry = m.group(0)
        found = link.search(entry)
        text_label = label(found.group(1)) if found else None
        if text_label is None:
            return entry
        entry = entry.replace("fas fa-times text-danger ge-failed-icon", "fas fa-filter text-warning")
        return entry.replace("'_validation_success_text': 'Failed'", f"'_validation_success_text': '{text_label}'")
    index.write_text(re.sub(r"\{'validation_success':.*?'asset_name': '[^']*'\}", relabel, text, flags=re.DOTALL),
                     encoding="utf-8")
