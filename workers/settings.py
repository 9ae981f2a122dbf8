"""The one typed settings object; nothing else in the project reads os.environ."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True)

    database_url: str = Field("sqlite:///imagegroups.db", validation_alias="DATABASE_URL")
    celery_broker_url: str = Field("redis://localhost:6379/0", validation_alias="CELERY_BROKER_URL")
    celery_result_backend: str = Field(
        "redis://localhost:6379/1", validation_alias="CELERY_RESULT_BACKEND"
    )
    max_attempts: int = Field(8, ge=1, validation_alias="IMAGEGROUPS_MAX_ATTEMPTS")
    retry_backoff_max: float = Field(60.0, gt=0, validation_alias="IMAGEGROUPS_RETRY_BACKOFF_MAX")
    auto_advance: bool = Field(True, validation_alias="IMAGEGROUPS_AUTO_ADVANCE")
    # The project's own knobs (not in the contract); defaults suit production.
    retry_backoff_base: float = Field(0.5, gt=0, validation_alias="IMAGEGROUPS_RETRY_BACKOFF_BASE")
    lock_timeout_ms: int = Field(5000, ge=1, validation_alias="IMAGEGROUPS_LOCK_TIMEOUT_MS")
    outbox_sweep_interval: float = Field(
        5.0, gt=0, validation_alias="IMAGEGROUPS_OUTBOX_SWEEP_INTERVAL"
    )
    outbox_sweep_grace: float = Field(10.0, ge=0, validation_alias="IMAGEGROUPS_OUTBOX_SWEEP_GRACE")
    outbox_mark_interval: float = Field(
        0.2, gt=0, validation_alias="IMAGEGROUPS_OUTBOX_MARK_INTERVAL"
    )
    # Redis hands an unacknowledged message to another worker after this long: how fast a
    # dead host's events are recovered. Everything a worker holds unacknowledged (a retry
    # waiting for its countdown, then a handler running up to its time limit) must end well
    # inside it, or a live worker's message is delivered twice (harmless, but counted).
    visibility_timeout: int = Field(300, ge=1, validation_alias="IMAGEGROUPS_VISIBILITY_TIMEOUT")
    # A handler takes milliseconds; one still running after this is killed, and its event
    # comes back like a killed worker's (counted, dead-lettered after MAX_ATTEMPTS).
    task_time_limit: int = Field(60, ge=1, validation_alias="IMAGEGROUPS_TASK_TIME_LIMIT")
    # Flower shows every event's arguments, so it refuses to start without authentication
    # unless the operator says an open dashboard is intended (workers/flower_access.py).
    flower_unauthenticated: bool = Field(
        False, validation_alias="IMAGEGROUPS_FLOWER_UNAUTHENTICATED"
    )

    @model_validator(mode="after")
    def _deadlines_fit_the_visibility_timeout(self) -> Settings:
        held = self.retry_backoff_max + self.task_time_limit
        if self.visibility_timeout <= held:
            raise ValueError(
                f"IMAGEGROUPS_VISIBILITY_TIMEOUT ({self.visibility_timeout}s) must be longer "
                f"than IMAGEGROUPS_RETRY_BACKOFF_MAX + IMAGEGROUPS_TASK_TIME_LIMIT ({held:g}s): "
                "a retry waiting for its countdown and then running must be acknowledged "
                "before Redis gives its message to another worker"
            )
        return self

    @property
    def max_eta_seconds(self) -> float:
        """How far ahead a message may be scheduled and still finish inside the timeout."""
        return float(self.visibility_timeout - self.task_time_limit)

    @property
    def unacked_restore_interval(self) -> float:
        """How often a worker looks for messages a dead worker left unacknowledged."""
        return max(1.0, min(10.0, self.visibility_timeout / 10))


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
