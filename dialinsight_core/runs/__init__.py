"""The run layer: the one place that wires stages together (docs/architecture.md).

``nightly`` holds the runners of the ``dialinsight_nightly`` DAG and the CLI, ``instructions``
those of the ``dialinsight_instructions`` DAG; both take a ``RunContext`` (``context``). DAG tasks
and ``python -m dialinsight_core`` call these runners and nothing below them.
"""
