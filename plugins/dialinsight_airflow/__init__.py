"""Airflow-facing glue for dialinsight: run context from a task's Airflow context, callbacks.

Kept out of ``dialinsight_core`` so the core never imports Airflow.
"""
