"""Prometheus metrics, defined once for every tether process.

The plugin serves them at ``/metrics`` on its API port; an agent on its
``[agent] metrics_port``. Names follow Prometheus conventions: ``_total`` for
counters, ``_seconds`` for durations.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

TASKS_FINISHED = Counter(
    "tether_tasks_finished_total", "Tasks that reached a terminal state.", ["provider", "operation", "state"]
)
TASK_SECONDS = Histogram(
    "tether_task_seconds",
    "Seconds from accepting a change to its task's terminal state.",
    ["provider", "state"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
)
RETRIES = Counter(
    "tether_task_retries_total", "Tasks dispatched again after a failed attempt.", ["provider", "reason"]
)
REDELIVERIES = Counter(
    "tether_redeliveries_total", "Claims of a work message the broker delivered again.", ["provider"]
)
DEAD_LETTERS = Counter(
    "tether_dead_letters_total", "Messages this process sent to the dead-letter queue.", ["kind"]
)
REFUSED = Counter(
    "tether_requests_refused_total", "Requests refused by throttling (429) or backpressure (503).", ["reason"]
)
DRIVER_SECONDS = Histogram(
    "tether_driver_call_seconds",
    "Duration of driver calls on an agent.",
    ["driver", "operation", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
)
CALLBACK_FAILURES = Counter(
    "tether_callback_failures_total",
    "Callback deliveries that failed, by whether they will be retried.",
    ["final"],
)
IN_FLIGHT = Gauge("tether_agent_tasks_in_flight", "Tasks an agent is working on, long operations included.")
DB_STATEMENTS = Counter(
    "tether_db_statements_total",
    "SQL statements this process sent to its database, by engine (writer or reader).",
    ["engine"],
)
