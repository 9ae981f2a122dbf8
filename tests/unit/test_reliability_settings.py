"""The defaults users run with keep the reliability promises the fault suite checks."""

from __future__ import annotations

import pytest

import celeryconfig
from workers.broker.transport import LEASE_OPTION
from workers.edge.decide import backoff, shortest_retry_span
from workers.runtime.lifecycle import recovery_warning
from workers.settings import Settings


def defaults() -> Settings:
    return Settings.model_validate({})


def test_the_defaults_are_the_documented_ones() -> None:
    s = defaults()
    assert (s.max_attempts, s.retry_backoff_max, s.retry_backoff_base) == (8, 60.0, 1.0)
    assert (s.visibility_timeout, s.task_time_limit) == (30, 60)


def test_with_the_defaults_a_crashed_worker_s_events_return_before_their_dependents_give_up() -> (
    None
):
    s = defaults()
    # A build result waiting for its catalog is retried 8 times: at least 61 s in all. A dead
    # worker's catalog comes back after the visibility timeout plus one scan: 33 s.
    span = shortest_retry_span(s.max_attempts, base=s.retry_backoff_base, cap=s.retry_backoff_max)
    assert span == pytest.approx(61.5)
    assert s.recovery_seconds == pytest.approx(33.0)
    assert recovery_warning(s) is None


def test_settings_whose_retries_run_out_before_recovery_are_warned_about() -> None:
    s = Settings.model_validate({"IMAGEGROUPS_MAX_ATTEMPTS": 3})
    warning = recovery_warning(s)
    assert warning is not None and "IMAGEGROUPS_MAX_ATTEMPTS" in warning


@pytest.mark.parametrize("attempts", [2, 5, 8, 20])
def test_the_shortest_span_is_the_sum_of_each_retry_s_least_delay(attempts: int) -> None:
    class Least:
        def uniform(self, low: float, high: float) -> float:
            return low

    least = sum(
        backoff(n, base=1.0, cap=60.0, rng=Least())  # type: ignore[arg-type,misc]
        for n in range(1, attempts)
    )
    assert shortest_retry_span(attempts, base=1.0, cap=60.0) == pytest.approx(least)


def test_held_messages_are_renewed_four_times_per_visibility_timeout() -> None:
    s = defaults()
    options = celeryconfig.broker_transport_options
    assert options[LEASE_OPTION] == s.visibility_timeout / 4
    assert options["unacked_restore_throttle"] == 1
    assert options["unacked_restore_interval"] == 3.0


def test_a_hard_time_limit_requeues_and_a_failure_acks_once_dead_lettered() -> None:
    assert celeryconfig.task_acks_on_timeout is False
    assert celeryconfig.task_acks_on_failure is True
    assert celeryconfig.task_reject_on_worker_lost is True


def test_the_event_tasks_have_no_retry_cap_of_celerys_own() -> None:
    from workers.celery import app

    for name in ("imagegroups.catalog_parsed", "imagegroups.stage_finished"):
        assert app.tasks[name].max_retries is None


def test_no_warning_for_a_broker_that_notices_a_dead_consumer_at_once() -> None:
    s = Settings.model_validate(
        {"IMAGEGROUPS_MAX_ATTEMPTS": 3, "CELERY_BROKER_URL": "amqp://guest@127.0.0.1//"}
    )
    assert recovery_warning(s) is None


def test_the_idempotency_window_must_outlast_every_way_an_event_comes_back() -> None:
    s = defaults()
    # 8 deliveries at their longest waits, then each recovered and run to its time limit.
    assert s.longest_redelivery_seconds == pytest.approx(123 + 8 * (33 + 60))
    assert s.inbox_retention == 7 * 24 * 3600 >= 2 * s.longest_redelivery_seconds
    with pytest.raises(ValueError, match="IMAGEGROUPS_INBOX_RETENTION"):
        Settings.model_validate({"IMAGEGROUPS_INBOX_RETENTION": 1800})


def test_results_are_not_stored_unless_a_backend_is_set() -> None:
    assert defaults().celery_result_backend is None
    assert celeryconfig.task_ignore_result is (celeryconfig.result_backend is None)
    assert celeryconfig.result_extended is False
    blank = Settings.model_validate({"CELERY_RESULT_BACKEND": ""})
    assert blank.celery_result_backend is None
