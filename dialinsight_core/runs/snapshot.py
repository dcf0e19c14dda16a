"""Runner of ``dialinsight_snapshot_check``: the first consumer of the snapshot asset.

It runs when, and only when, the nightly published a snapshot (which it does only after every
gate passed), and reads that snapshot back as its users will (docs/dataset.md).
"""

from __future__ import annotations

from typing import Any

from dialinsight_core import publishing
from dialinsight_core.runs.context import RunContext


class SnapshotCheckFailed(RuntimeError):
    """A published snapshot does not read back as its manifest says."""


def run_check(ctx: RunContext, uri: str) -> dict[str, Any]:
    """Verify the snapshot at ``uri`` (from the asset event); raises with every mismatch."""
    root = ctx.store.uri.rstrip("/") + "/"
    if not uri.startswith(root):
        raise SnapshotCheckFailed(f"snapshot {uri} is not in this deployment's object store {ctx.store.uri}")
    result = publishing.verify(ctx.store, uri.removeprefix(root))
    if result["problems"]:
        raise SnapshotCheckFailed(f"snapshot {uri} does not match its manifest:\n  - " + "\n  - ".join(result["problems"]))
    return result
