"""The one typed settings object; nothing else in the project reads os.environ."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain import StageName
from workers.edge.decide import RetryPolicy, longest_retry_span

_COMMAND_NAME = re.compile(r"[a-z_][a-z0-9_]{0,63}")


#: How far apart the clocks of two worker hosts may be without a retry's eta being dropped.
CLOCK_SKEW_SECONDS = 300.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field("sqlite:///imagegroups.db", validation_alias="DATABASE_URL")
    celery_broker_url: str = Field("redis://localhost:6379/0", validation_alias="CELERY_BROKER_URL")
    # Off unless set: Flower builds its view from task events, and a result stored per event
    # in the broker's Redis would fill it. Set it for a publisher that waits on a result.
    celery_result_backend: str | None = Field(None, validation_alias="CELERY_RESULT_BACKEND")
    max_attempts: int = Field(8, ge=1, validation_alias="IMAGEGROUPS_MAX_ATTEMPTS")
    retry_backoff_max: float = Field(60.0, gt=0, validation_alias="IMAGEGROUPS_RETRY_BACKOFF_MAX")
    auto_advance: bool = Field(True, validation_alias="IMAGEGROUPS_AUTO_ADVANCE")
    # Stage deadlines (docs/contract.md §1): how long a requested stage may go unanswered.
    stage_timeout_deploy: float = Field(
        3600.0, gt=0, validation_alias="IMAGEGROUPS_STAGE_TIMEOUT_DEPLOY"
    )
    stage_timeout_pxe_boot: float = Field(
        1800.0, gt=0, validation_alias="IMAGEGROUPS_STAGE_TIMEOUT_PXE_BOOT"
    )
    stage_timeout_validate: float = Field(
        3600.0, gt=0, validation_alias="IMAGEGROUPS_STAGE_TIMEOUT_VALIDATE"
    )
    # How often a worker looks for passed deadlines (the project's own knob).
    deadline_sweep_interval: float = Field(
        5.0, gt=0, validation_alias="IMAGEGROUPS_DEADLINE_SWEEP_INTERVAL"
    )
    # Prometheus metrics at /metrics on this port; unset (or empty): no endpoint, no metrics.
    metrics_port: int | None = Field(
        None, ge=1, le=65535, validation_alias="IMAGEGROUPS_METRICS_PORT"
    )
    # Loopback unless told otherwise (the contract's §6): a port the worker opens is no
    # business of whoever shares its network. A container sets 0.0.0.0 (docker-compose.yml).
    metrics_address: str = Field("127.0.0.1", validation_alias="IMAGEGROUPS_METRICS_ADDRESS")
    # The project's own knobs (not in the contract); defaults suit production.
    # The first retry waits 0.5-1 s; with the defaults the 8 deliveries of an event waiting
    # for another one span at least 61 s, longer than a dead worker's messages take to come
    # back (visibility timeout + one scan), so a crash never exhausts them (see below).
    retry_backoff_base: float = Field(1.0, gt=0, validation_alias="IMAGEGROUPS_RETRY_BACKOFF_BASE")
    lock_timeout_ms: int = Field(5000, ge=1, validation_alias="IMAGEGROUPS_LOCK_TIMEOUT_MS")
    outbox_sweep_interval: float = Field(
        5.0, gt=0, validation_alias="IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL"
    )
    outbox_sweep_grace: float = Field(10.0, ge=0, validation_alias="IMAGEGROUPS_OUTBOX_SWEEP_GRACE")
    outbox_mark_interval: float = Field(
        0.2, gt=0, validation_alias="IMAGEGROUPS_OUTBOX_MARK_INTERVAL"
    )
    # Redis hands an unacknowledged message to another worker after this long: how fast a
    # dead host's events come back. A live worker renews the messages it holds every quarter
    # of it (workers/broker/transport.py), so retry countdowns and slow handlers are not affected.
    visibility_timeout: int = Field(30, ge=1, validation_alias="IMAGEGROUPS_VISIBILITY_TIMEOUT")
    # A handler takes milliseconds; one still running after this is killed, and its event
    # comes back like a killed worker's (counted, dead-lettered after MAX_ATTEMPTS).
    task_time_limit: int = Field(60, ge=1, validation_alias="IMAGEGROUPS_TASK_TIME_LIMIT")
    # Retention (persistence/retention.py). The inbox keeps an event_id for this long: the
    # idempotency window, which must outlast every way an event can come back (checked below).
    inbox_retention: float = Field(
        7 * 24 * 3600.0, gt=0, validation_alias="IMAGEGROUPS_INBOX_RETENTION"
    )
    outbox_retention: float = Field(
        24 * 3600.0, gt=0, validation_alias="IMAGEGROUPS_OUTBOX_RETENTION"
    )
    dead_letter_retention: float = Field(
        30 * 24 * 3600.0, gt=0, validation_alias="IMAGEGROUPS_DEAD_LETTER_RETENTION"
    )
    # How often a worker prunes (0: never; `imagegroups prune` does it by hand).
    retention_interval: float = Field(
        600.0, ge=0, validation_alias="IMAGEGROUPS_RETENTION_INTERVAL"
    )
    # Flower shows every event's arguments, so it refuses to start without authentication
    # unless the operator says an open dashboard is intended (workers/runtime/flower_access.py).
    flower_unauthenticated: bool = Field(
        False, validation_alias="IMAGEGROUPS_FLOWER_UNAUTHENTICATED"
    )
    # Remote control over the broker (workers/broker/control_policy.py): "read-only" answers what
    # `imagegroups health` and Flower's views ask, "full" all of Celery's commands; either
    # way a revoke never drops an event. ALLOW: single commands more, comma-separated.
    remote_control: Literal["read-only", "full"] = Field(
        "read-only", validation_alias="IMAGEGROUPS_REMOTE_CONTROL"
    )
    remote_control_allow: Annotated[frozenset[str], NoDecode] = Field(
        frozenset(), validation_alias="IMAGEGROUPS_REMOTE_CONTROL_ALLOW"
    )

    @property
    def lease_renewal_interval(self) -> float:
        """How often a worker renews the messages it holds (a quarter of the timeout)."""
        return self.visibility_timeout / 4

    @property
    def unacked_restore_interval(self) -> float:
        """How often a worker looks for messages a dead worker left unacknowledged."""
        return max(1.0, min(10.0, self.visibility_timeout / 10))

    @property
    def recovery_seconds(self) -> float:
        """At most how long a dead worker's messages wait before another worker gets them."""
        return self.visibility_timeout + self.unacked_restore_interval

    @property
    def max_eta_seconds(self) -> float:
        """How far ahead a message may be scheduled: the longest retry countdown, plus the
        clock skew between hosts the worker tolerates (CLOCK_SKEW_SECONDS). An eta further
        ahead is dropped and the event runs at once (workers/edge/accept.py), never refused."""
        return self.retry_backoff_max + CLOCK_SKEW_SECONDS

    @property
    def retry_policy(self) -> RetryPolicy:
        """What workers/edge/decide.py decides a failed delivery by."""
        return RetryPolicy(self.max_attempts, self.retry_backoff_base, self.retry_backoff_max)

    @property
    def longest_redelivery_seconds(self) -> float:
        """The longest an event can take to come back to a worker after its first delivery:
        every retry at its longest wait, then a dead worker's recovery, each handler run to
        its time limit."""
        retries = longest_retry_span(
            self.max_attempts, base=self.retry_backoff_base, cap=self.retry_backoff_max
        )
        return retries + self.max_attempts * (self.recovery_seconds + self.task_time_limit)

    @model_validator(mode="after")
    def _window_outlasts_redelivery(self) -> Settings:
        needed = max(3600.0, 2 * self.longest_redelivery_seconds)
        if self.inbox_retention < needed:
            raise ValueError(
                f"IMAGEGROUPS_INBOX_RETENTION ({self.inbox_retention:g}s) must be at least "
                f"{needed:g}s: twice the longest an event can take to be delivered again "
                f"({self.longest_redelivery_seconds:g}s), and an hour"
            )
        return self

    @field_validator("celery_result_backend")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("remote_control_allow", mode="before")
    @classmethod
    def _command_names(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        names = frozenset(name.strip() for name in value.split(",") if name.strip())
        bad = sorted(name for name in names if not _COMMAND_NAME.fullmatch(name))
        if bad:
            raise ValueError(f"not remote-control command names: {', '.join(map(repr, bad))}")
        return names

    @field_validator("metrics_port", mode="before")
    @classmethod
    def _empty_port_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def stage_timeouts(self) -> dict[StageName, timedelta]:
        return {
            StageName.DEPLOY: timedelta(seconds=self.stage_timeout_deploy),
            StageName.PXE_BOOT: timedelta(seconds=self.stage_timeout_pxe_boot),
            StageName.VALIDATE: timedelta(seconds=self.stage_timeout_validate),
        }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
