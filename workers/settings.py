"""The one typed settings object; nothing else in the project reads os.environ."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
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
    visibility_timeout: int = Field(3600, ge=1, validation_alias="IMAGEGROUPS_VISIBILITY_TIMEOUT")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
