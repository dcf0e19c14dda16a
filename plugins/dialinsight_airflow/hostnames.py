"""Which worker ran a task, when several share one machine.

Airflow records each task instance's ``hostname`` (``[core] hostname_callable``). Workers in
containers get distinct host names for free; Celery workers that share a machine (scripts/prod_stack.py)
all report the machine's name. Pointing ``AIRFLOW__CORE__HOSTNAME_CALLABLE`` at ``worker_hostname``
and giving each worker ``DIALINSIGHT_WORKER_NAME`` makes the UI and the REST API say which one it was.
"""

from __future__ import annotations

import os
import socket


def worker_hostname() -> str:
    return os.environ.get("DIALINSIGHT_WORKER_NAME") or socket.getfqdn()
