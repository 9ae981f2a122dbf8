"""`imagegroups --help` at every level: each option explained, defaults and choices shown."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from domain import STAGE_ALIASES, StageName
from workers.cli.main import build_parser, main


def parsers(
    parser: argparse.ArgumentParser | None = None,
) -> Iterator[argparse.ArgumentParser]:
    """The top-level parser and every sub-parser below it, depth first."""
    parser = parser or build_parser()
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from parsers(sub)


def arguments(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action._choices_actions  # each sub-command's line in the listing
        else:
            yield action


def _name(action: argparse.Action) -> str:
    return "/".join(action.option_strings) or str(action.metavar or action.dest)


def test_the_walk_reaches_every_command() -> None:
    progs = {p.prog for p in parsers()}

    assert "imagegroups db downgrade" in progs
    assert "imagegroups publish stage-finished" in progs
    assert "imagegroups dead-letters replay" in progs
    assert len(progs) >= 20


def test_every_option_argument_and_command_has_help() -> None:
    missing = [
        f"{parser.prog} {_name(action)}"
        for parser in parsers()
        for action in arguments(parser)
        if not (action.help or "").strip()
    ]

    assert missing == []


def test_every_default_worth_showing_is_printed_in_the_help() -> None:
    unshown = []
    for parser in parsers():
        text = " ".join(parser.format_help().split())
        for action in arguments(parser):
            default = action.default
            if default is None or default is False or default == [] or not action.option_strings:
                continue
            if default is argparse.SUPPRESS:
                continue
            if f"(default: {default})" not in text:
                unshown.append(f"{parser.prog} {_name(action)}={default!r}")

    assert unshown == []


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (["list"], ["(default: 50)", "(default: 0)"]),
        (["simulate"], ["(default: 0.0)", "(default: 0)", "(default: 8)"]),
        (["demo"], ["(default: 10)"]),
    ],
)
def test_numeric_defaults_appear_in_the_command_help(
    argv: list[str], shown: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--help"]) == 0

    out = " ".join(capsys.readouterr().out.split())
    assert all(default in out for default in shown), out


def _stage_option() -> argparse.Action:
    [finished] = [p for p in parsers() if p.prog.endswith("publish stage-finished")]
    [stage] = [a for a in finished._actions if "--stage" in a.option_strings]
    return stage


def test_the_stage_choices_are_the_domains_stage_names_and_aliases() -> None:
    stage = _stage_option()

    assert list(stage.choices or []) == [s.value for s in StageName] + list(STAGE_ALIASES)
    assert all(name in (stage.help or "") for name in StageName.spellings())
    assert "restart (= pxe-boot)" in (stage.help or "")


def test_an_unknown_stage_is_a_usage_error_that_lists_every_valid_stage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    job = "0b7f3c2e-4f57-4a43-9d7e-5b2a1c0d9e11"
    argv = ["publish", "stage-finished", "--job-id", job, "--stage", "bogus", "--outcome", "failed"]

    assert main(argv) == 2

    err = capsys.readouterr().err
    assert "argument --stage: invalid choice: 'bogus'" in err
    assert all(f"'{name}'" in err for name in StageName.spellings())


def test_a_job_id_that_is_not_a_uuid_is_a_usage_error_naming_the_option(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["publish", "catalog-parsed", "--job-id", "job-1", "--catalog", "c.json"]

    assert main(argv) == 2

    assert "argument --job-id: not a UUID: 'job-1'" in capsys.readouterr().err
