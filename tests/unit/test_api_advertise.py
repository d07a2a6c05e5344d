"""The URL a worker advertises to the others: never an unspecified address."""

from __future__ import annotations

import pytest

from streams.errors import TrustServiceError
from streams.settings import Settings
from streams.web.advertise import (
    check_advertised_url,
    default_advertised_url,
    is_loopback,
    is_unspecified,
    route_address,
)


def test_unspecified_addresses_are_recognised() -> None:
    for host in ("0.0.0.0", "::", "[::]", "", "0:0:0:0:0:0:0:0"):
        assert is_unspecified(host), host
    for host in ("127.0.0.1", "10.1.2.3", "::1", "scorer-1", "localhost"):
        assert not is_unspecified(host), host
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("scorer-1")


def test_a_configured_url_is_kept_without_its_trailing_slash() -> None:
    assert check_advertised_url("") == ""
    assert check_advertised_url("http://scorer-1:6066/") == "http://scorer-1:6066"
    assert check_advertised_url(" https://10.0.0.7:8443 ") == "https://10.0.0.7:8443"
    assert check_advertised_url("http://[fd00::7]:6066") == "http://[fd00::7]:6066"


@pytest.mark.parametrize(
    "url",
    [
        "http://0.0.0.0:6066",
        "http://[::]:6066",
        "https://0.0.0.0",
        "scorer-1:6066",
        "ftp://scorer-1:6066",
        "http://scorer-1:6066/api",
        "http://scorer-1:port",
        "http://",
    ],
)
def test_a_url_nobody_can_call_is_refused(url: str) -> None:
    with pytest.raises(ValueError):
        check_advertised_url(url)


def test_settings_refuse_an_unspecified_advertised_url_naming_the_variable() -> None:
    with pytest.raises((TrustServiceError, ValueError)) as refused:
        Settings(web_advertised_url="http://0.0.0.0:6066")
    assert "TRUST_WEB_ADVERTISED_URL" in str(refused.value) or "web_advertised_url" in str(
        refused.value
    )
    assert "0.0.0.0" in str(refused.value)
    ok = Settings(web_advertised_url="http://scorer-1:6066/")
    assert ok.web_advertised_url == "http://scorer-1:6066"


def test_the_default_is_the_bind_address_when_it_is_one() -> None:
    def no_route(_: str) -> str:
        raise AssertionError("not consulted")

    assert default_advertised_url("10.0.0.5", 6066, "b:9092", route=no_route) == (
        "http://10.0.0.5:6066"
    )
    assert default_advertised_url("::1", 7000, "b:9092", route=no_route) == "http://[::1]:7000"


def test_bound_to_every_interface_the_default_is_the_address_towards_the_brokers() -> None:
    asked: list[str] = []

    def route(servers: str) -> str | None:
        asked.append(servers)
        return "10.1.2.3"

    url = default_advertised_url("0.0.0.0", 6066, "kafka:9092,k2:9092", route=route)
    assert url == "http://10.1.2.3:6066" and asked == ["kafka:9092,k2:9092"]
    no_route = default_advertised_url(
        "::", 6066, "kafka:9092", route=lambda _: None, hostname=lambda: "scorer-7"
    )
    assert no_route == "http://scorer-7:6066"


def test_the_route_towards_a_local_broker_is_loopback_and_never_unspecified() -> None:
    assert route_address("127.0.0.1:19092") == "127.0.0.1"
    assert route_address("SASL_SSL://127.0.0.1:19093,other:9092") == "127.0.0.1"
