"""Celery's own settings, derived from the typed settings object (docs/design.md)."""

from __future__ import annotations

from workers import messages
from workers.broker.transport import LEASE_OPTION, transport_for
from workers.settings import get_settings

_settings = get_settings()

broker_url = _settings.celery_broker_url
# For Redis, kombu's Redis transport hardened against malformed queue entries, with leases
# (workers/broker/transport.py); for any other URL, kombu's own transport for its scheme.
broker_transport = transport_for(broker_url)
result_backend = _settings.celery_result_backend

# JSON only: pickle would let anyone who can publish run code in the worker.
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]

# A message is acked only after its task ends; a killed worker's message comes back.
task_acks_late = True
task_reject_on_worker_lost = True
# A task that ends in an exception has dead-lettered its event first (workers/edge/task.py),
# so its message is acked; a handler killed by the time limit never got that far, so its
# message goes back to the queue like a killed worker's (and the redelivery is counted).
task_acks_on_failure = True
task_acks_on_timeout = False
task_time_limit = _settings.task_time_limit
# Handlers take milliseconds; a small prefetch keeps redeliveries after a crash few.
worker_prefetch_multiplier = 4

# Redis re-delivers unacked messages after the visibility timeout; Celery reads it from both
# option sets. Each worker renews the messages it holds every quarter of it (leases, in
# workers/broker/transport.py), so only a dead worker's messages expire. kombu looks for expired
# ones every `unacked_restore_interval` seconds, and scans only on every
# `unacked_restore_throttle`-th look: 1, so they come back within the timeout plus one
# interval, not ten. The scan holds a Redis lock that outlives a worker killed mid-scan:
# 30 s, not kombu's 300, or that crash would hold up everyone's recovery for five minutes.
broker_transport_options = {
    "visibility_timeout": _settings.visibility_timeout,
    "unacked_restore_interval": _settings.unacked_restore_interval,
    "unacked_restore_throttle": 1,
    "unacked_mutex_expire": 30,
    LEASE_OPTION: _settings.lease_renewal_interval,
}
result_backend_transport_options = {"visibility_timeout": _settings.visibility_timeout}
broker_connection_retry_on_startup = True
worker_cancel_long_running_tasks_on_connection_loss = True

# What Flower needs to show every task with its arguments, state and outcome: task events
# (received, started, succeeded with the result's repr, retried, failed with the error).
worker_send_task_events = True
task_send_sent_event = True
# Results are stored only when CELERY_RESULT_BACKEND is set, for a publisher that waits on
# one: the outcome alone (no arguments), for a day. Stored by default for every event, with
# its arguments, they would grow the broker's Redis by the event rate times their lifetime.
task_ignore_result = result_backend is None
result_extended = False
result_expires = 24 * 3600

task_default_queue = messages.EVENTS_QUEUE
task_routes = messages.task_routes()
# Undecodable, unknown and malformed messages are dead-lettered, not just logged.
worker_consumer = "workers.edge.task:DeadLetteringConsumer"
