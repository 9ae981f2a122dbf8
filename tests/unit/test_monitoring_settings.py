"""The settings of stage deadlines and metrics: the contract's defaults, and what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest
from pydantic import ValidationError

from domain import StageName
from workers.runtime import root
from workers.runtime.root import Off
from workers.settings import Settings


def settings(**env: str) -> Settings:
    return Settings.model_validate(env)


def test_the_stage_timeouts_default_to_the_contracts_hour_half_hour_and_hour() -> None:
    assert settings().stage_timeouts == {
        StageName.DEPLOY: timedelta(hours=1),
        StageName.PXE_BOOT: timedelta(minutes=30),
        StageName.VALIDATE: timedelta(hours=1),
    }


def test_each_stage_timeout_is_read_from_its_own_variable() -> None:
    chosen = settings(
        IMAGEGROUPS_STAGE_TIMEOUT_DEPLOY="2",
        IMAGEGROUPS_STAGE_TIMEOUT_PXE_BOOT="0.5",
        IMAGEGROUPS_STAGE_TIMEOUT_VALIDATE="7200",
    )
    assert list(chosen.stage_timeouts.values()) == [
        timedelta(seconds=2),
        timedelta(seconds=0.5),
        timedelta(hours=2),
    ]


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_stage_timeout_that_is_not_a_positive_number_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="IMAGEGROUPS_STAGE_TIMEOUT_DEPLOY"):
        settings(IMAGEGROUPS_STAGE_TIMEOUT_DEPLOY=value)


@pytest.mark.parametrize("value", [None, ""])
def test_metrics_are_off_when_the_port_is_unset_or_empty(value: str | None) -> None:
    env = {} if value is None else {"IMAGEGROUPS_METRICS_PORT": value}
    assert settings(**env).metrics_port is None


@pytest.mark.parametrize("value", ["0", "65536", "http"])
def test_a_metrics_port_outside_1_to_65535_is_refused(value: str) -> None:
    with pytest.raises(ValidationError, match="IMAGEGROUPS_METRICS_PORT"):
        settings(IMAGEGROUPS_METRICS_PORT=value)


def test_outside_a_worker_with_metrics_nothing_is_counted() -> None:
    # The CLI, the demo and these tests never switch counting on: every call is a no-op.
    assert type(root.state().counting.recorder) is Off


def test_metrics_listen_on_loopback_unless_an_address_is_given() -> None:
    assert settings().metrics_address == "127.0.0.1"
    assert settings(IMAGEGROUPS_METRICS_ADDRESS="0.0.0.0").metrics_address == "0.0.0.0"
