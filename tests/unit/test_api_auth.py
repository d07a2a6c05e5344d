"""Bearer tokens: who may read, who may change."""

from __future__ import annotations

from pydantic import SecretStr

from streams.web.auth import Tokens


def _tokens(read: str = "", admin: str = "") -> Tokens:
    return Tokens(read=SecretStr(read), admin=SecretStr(admin))


def test_reads_are_open_without_a_read_token() -> None:
    for tokens in (_tokens(), _tokens(admin="adm")):
        assert not tokens.reads_protected
        assert tokens.check_read(None) is None
        assert tokens.check_read("Bearer anything") is None


def test_with_a_read_token_reads_need_it_or_the_admin_token() -> None:
    tokens = _tokens(read="r-token", admin="a-token")
    assert tokens.check_read("Bearer r-token") is None
    assert tokens.check_read("Bearer a-token") is None
    for header in (None, "", "r-token", "Basic r-token", "Bearer", "Bearer r-toke", "Bearer x"):
        denied = tokens.check_read(header)
        assert denied is not None and denied.status == 401, header
    assert "TRUST_API_READ_TOKEN" in tokens.check_read(None).message  # type: ignore[union-attr]


def test_an_unset_admin_token_never_matches_an_empty_bearer() -> None:
    tokens = _tokens(read="r-token")
    assert tokens.check_read("Bearer ") is not None
    assert tokens.check_admin("Bearer ").status == 403  # type: ignore[union-attr]


def test_changes_need_the_admin_token() -> None:
    tokens = _tokens(read="r-token", admin="a-token")
    assert tokens.check_admin("Bearer a-token") is None
    assert tokens.check_admin(None).status == 401  # type: ignore[union-attr]
    assert tokens.check_admin("Bearer r-token").status == 403  # type: ignore[union-attr]
    disabled = _tokens(read="r-token").check_admin("Bearer r-token")
    assert disabled is not None and disabled.status == 403 and "disabled" in disabled.message
