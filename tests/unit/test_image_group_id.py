"""Value objects: identifier rules of ImageGroupId and RoleName, stage names, terminal statuses."""

from __future__ import annotations

import pytest

from domain.model import (
    MAX_ID_LENGTH,
    ImageGroupId,
    ImageGroupStatus,
    InvalidValueError,
    RoleName,
    StageName,
)

S = ImageGroupStatus

#: Both identifier value objects obey the same rules; every case runs against each.
IDENTIFIER_TYPES = pytest.mark.parametrize(
    ("factory", "what"),
    [(ImageGroupId, "image_group_id"), (RoleName, "role")],
    ids=["ImageGroupId", "RoleName"],
)


# Accepted values ------------------------------------------------------------------------


@IDENTIFIER_TYPES
@pytest.mark.parametrize(
    "text",
    ["a", "x86_64-compute", "group 1 (nightly)", "Ünïcødé-名前", "a" * 128],
    ids=["one-char", "plain", "inner-space", "non-ascii", "128-chars"],
)
def test_identifier_accepts_valid_text_and_keeps_it(
    factory: type[ImageGroupId] | type[RoleName], what: str, text: str
) -> None:
    value = factory(text)

    assert value.value == text
    assert str(value) == text


def test_max_identifier_length_is_128() -> None:
    assert MAX_ID_LENGTH == 128


@IDENTIFIER_TYPES
def test_identifier_of_exactly_128_characters_is_accepted(
    factory: type[ImageGroupId] | type[RoleName], what: str
) -> None:
    assert len(factory("g" * 128).value) == 128


@IDENTIFIER_TYPES
def test_identifier_of_129_characters_is_rejected_naming_the_length_rule(
    factory: type[ImageGroupId] | type[RoleName], what: str
) -> None:
    with pytest.raises(InvalidValueError, match=r"at most 128 characters, got 129") as caught:
        factory("g" * 129)

    assert str(caught.value).startswith(what)


@IDENTIFIER_TYPES
def test_identifier_length_counts_characters_not_bytes(
    factory: type[ImageGroupId] | type[RoleName], what: str
) -> None:
    text = "é" * 128  # 256 bytes in UTF-8, still 128 characters

    assert factory(text).value == text


# Rejected values ------------------------------------------------------------------------


@IDENTIFIER_TYPES
@pytest.mark.parametrize(
    "text",
    ["", " ", "   ", "\t", "\n", "\r\n", " \t \n "],
    ids=["empty", "space", "spaces", "tab", "newline", "crlf", "mixed-whitespace"],
)
def test_empty_or_whitespace_only_identifier_is_rejected_as_blank(
    factory: type[ImageGroupId] | type[RoleName], what: str, text: str
) -> None:
    with pytest.raises(InvalidValueError, match=r"must not be empty or blank") as caught:
        factory(text)

    assert str(caught.value).startswith(what)


@IDENTIFIER_TYPES
@pytest.mark.parametrize(
    "text",
    [" group", "group ", " group ", "\tgroup", "group\n", "group\r"],
    ids=[
        "leading-space",
        "trailing-space",
        "both",
        "leading-tab",
        "trailing-newline",
        "trailing-cr",
    ],
)
def test_identifier_with_leading_or_trailing_whitespace_is_rejected(
    factory: type[ImageGroupId] | type[RoleName], what: str, text: str
) -> None:
    with pytest.raises(
        InvalidValueError, match=r"must not have leading or trailing whitespace"
    ) as caught:
        factory(text)

    assert str(caught.value).startswith(what)


@IDENTIFIER_TYPES
@pytest.mark.parametrize(
    ("text", "char", "position"),
    [
        ("gr\x00oup", "\x00", 2),
        ("gr\noup", "\n", 2),
        ("gr\toup", "\t", 2),
        ("gr\x7foup", "\x7f", 2),
        ("g\x1bx", "\x1b", 1),
        ("gr\x85oup", "\x85", 2),
        ("gr\u200boup", "\u200b", 2),
        ("\u200bgroup", "\u200b", 0),
        ("group\u200b", "\u200b", 5),
        ("\ufeffgroup", "\ufeff", 0),
        ("gr\u200doup", "\u200d", 2),
        ("gr\u2028oup", "\u2028", 2),
        ("gr\u2029oup", "\u2029", 2),
        ("\x00", "\x00", 0),
    ],
    ids=[
        "nul",
        "newline",
        "tab",
        "del",
        "escape",
        "next-line-c1",
        "zero-width-space-inside",
        "zero-width-space-leading",
        "zero-width-space-trailing",
        "byte-order-mark",
        "zero-width-joiner",
        "line-separator",
        "paragraph-separator",
        "nul-only",
    ],
)
def test_identifier_with_control_or_format_character_is_rejected_naming_char_and_position(
    factory: type[ImageGroupId] | type[RoleName],
    what: str,
    text: str,
    char: str,
    position: int,
) -> None:
    with pytest.raises(InvalidValueError, match=r"must not contain control characters") as caught:
        factory(text)

    message = str(caught.value)
    assert message.startswith(what)
    assert f"found {char!r} at position {position}" in message


@IDENTIFIER_TYPES
@pytest.mark.parametrize(
    ("value", "type_name"),
    [(None, "NoneType"), (42, "int"), (b"group", "bytes"), (["group"], "list"), (1.5, "float")],
    ids=["none", "int", "bytes", "list", "float"],
)
def test_non_string_identifier_is_rejected_naming_its_type(
    factory: type[ImageGroupId] | type[RoleName], what: str, value: object, type_name: str
) -> None:
    with pytest.raises(InvalidValueError, match=rf"must be a string, got {type_name}$") as caught:
        factory(value)  # type: ignore[arg-type]

    assert str(caught.value).startswith(what)


@IDENTIFIER_TYPES
def test_invalid_identifier_error_is_a_value_error(
    factory: type[ImageGroupId] | type[RoleName], what: str
) -> None:
    with pytest.raises(ValueError, match=what):
        factory("")


# Equality -------------------------------------------------------------------------------


def test_identifiers_with_the_same_text_are_equal_and_hash_alike() -> None:
    assert ImageGroupId("g-1") == ImageGroupId("g-1")
    assert hash(ImageGroupId("g-1")) == hash(ImageGroupId("g-1"))
    assert ImageGroupId("g-1") != ImageGroupId("g-2")
    assert RoleName("compute") == RoleName("compute")
    assert RoleName("compute") != RoleName("login")


def test_identifier_is_immutable() -> None:
    group_id = ImageGroupId("g-1")

    with pytest.raises(AttributeError):
        group_id.value = "g-2"  # type: ignore[misc]

    assert group_id.value == "g-1"


# StageName.parse ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("build-image", StageName.BUILD_IMAGE),
        ("build-image-x86_64", StageName.BUILD_IMAGE_X86_64),
        ("build-image-aarch64", StageName.BUILD_IMAGE_AARCH64),
        ("deploy", StageName.DEPLOY),
        ("pxe-boot", StageName.PXE_BOOT),
        ("validate", StageName.VALIDATE),
    ],
)
def test_stage_name_parses_each_documented_spelling(text: str, expected: StageName) -> None:
    assert StageName.parse(text) is expected


def test_stage_name_restart_is_an_alias_of_pxe_boot() -> None:
    assert StageName.parse("restart") is StageName.PXE_BOOT


def test_stage_names_are_exactly_the_documented_ones() -> None:
    assert {s.value for s in StageName} == {
        "build-image",
        "build-image-x86_64",
        "build-image-aarch64",
        "deploy",
        "pxe-boot",
        "validate",
    }


@pytest.mark.parametrize(
    "text",
    ["", "deploying", "Deploy", "DEPLOY", " deploy", "pxe_boot", "Restart", "build"],
)
def test_unknown_stage_name_is_rejected_listing_the_known_ones(text: str) -> None:
    with pytest.raises(InvalidValueError, match=r"unknown stage") as caught:
        StageName.parse(text)

    message = str(caught.value)
    assert repr(text) in message
    for known in ("deploy", "pxe-boot", "validate", "build-image", "restart"):
        assert known in message


@pytest.mark.parametrize(
    ("stage", "is_build"),
    [
        (StageName.BUILD_IMAGE, True),
        (StageName.BUILD_IMAGE_X86_64, True),
        (StageName.BUILD_IMAGE_AARCH64, True),
        (StageName.DEPLOY, False),
        (StageName.PXE_BOOT, False),
        (StageName.VALIDATE, False),
    ],
)
def test_only_build_image_stages_are_build_stages(stage: StageName, is_build: bool) -> None:
    assert stage.is_build() is is_build


# ImageGroupStatus -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "terminal"),
    [
        (S.BUILT, False),
        (S.DEPLOYING, False),
        (S.DEPLOYED, False),
        (S.RESTARTING, False),
        (S.RESTARTED, False),
        (S.VALIDATING, False),
        (S.PASSED, True),
        (S.FAILED, True),
        (S.CLEANED, True),
    ],
)
def test_status_is_terminal_exactly_for_passed_failed_and_cleaned(
    status: ImageGroupStatus, terminal: bool
) -> None:
    assert status.is_terminal() is terminal


def test_statuses_are_exactly_the_documented_nine() -> None:
    assert [s.value for s in ImageGroupStatus] == [
        "BUILT",
        "DEPLOYING",
        "DEPLOYED",
        "RESTARTING",
        "RESTARTED",
        "VALIDATING",
        "PASSED",
        "FAILED",
        "CLEANED",
    ]
