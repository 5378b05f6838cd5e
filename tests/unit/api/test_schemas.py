"""Request validation: repository references, Spec Kit names and branch names."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from services.api.schemas import RunCreate
from shared.names import branch_name, repository_ref, spec_kit_name


@pytest.mark.parametrize(
    "value",
    [
        "acme/shop",
        "a/b",
        "Acme-Corp/shop.web_2",
        "https://git.example.com/acme/shop.git",
        "file:///srv/git/shop.git",
    ],
)
def test_repository_accepts_slugs_and_git_urls(value: str) -> None:
    assert repository_ref(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "acme",
        "-acme/shop",
        "acme/-",
        "acme/..",
        "acme/.",
        "acme/shop/x",
        " acme/shop",
        "acme/shop\n",
        "git@github.com:acme/shop.git",
        "ssh://git.example/acme",
        "http://git.example/acme",
        "ext::sh -c x",
        "https://user:secret@git.example/acme",
        "https:///nohost",
        "file://host/srv/x",
        "file:relative",
        "https://git.example/a/../b",
        "https://git.example/a?x=1",
        "acme/shop\x00",
    ],
)
def test_repository_rejects_everything_else(value: str) -> None:
    with pytest.raises(ValueError, match="repository"):
        repository_ref(value)


@pytest.mark.parametrize("value", ["042-checkout", "T001", "v1.2_3", "_x"])
def test_spec_kit_names_accepted(value: str) -> None:
    assert spec_kit_name(value, "featureKey") == value


@pytest.mark.parametrize(
    "value", ["", ".", "..", ".hidden", "-x", "a/b", "a\\b", "a b", "é", "a" * 129]
)
def test_spec_kit_names_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="featureKey"):
        spec_kit_name(value, "featureKey")


@given(st.text(max_size=200))
def test_accepted_names_cannot_escape_a_folder(value: str) -> None:
    try:
        spec_kit_name(value, "taskId")
    except ValueError:
        return
    assert "/" not in value
    assert "\\" not in value
    assert value not in (".", "..")
    assert not value.startswith("-")


@pytest.mark.parametrize("value", ["main", "release/1.2", "feature/x-y", "v1"])
def test_branch_names_accepted(value: str) -> None:
    assert branch_name(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-f",
        "a..b",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "a\\b",
        "a b",
        "main.lock",
        "a/.x",
        "a/",
        "/a",
        "a.",
        "a@{1}",
        "@",
        "a//b",
        "x" * 256,
    ],
)
def test_branch_names_rejected(value: str) -> None:
    with pytest.raises(ValueError, match="baseBranch"):
        branch_name(value)


def test_run_create_is_camel_case_and_strict() -> None:
    body = RunCreate.model_validate(
        {"repository": "acme/shop", "featureKey": "042-x", "publishMode": "draft"}
    )
    assert (body.feature_key, body.publish_mode) == ("042-x", "draft")
    with pytest.raises(ValidationError):
        RunCreate.model_validate({"repository": "acme/shop", "feature_key": "042-x"})
