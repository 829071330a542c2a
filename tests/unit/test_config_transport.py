"""`transport`, `http_listen` and `http_path_prefix`: defaults, environment, validation."""

from __future__ import annotations

import pytest

from extauthz.config import ConfigError, Settings, apply_env, from_mapping


def test_defaults_are_grpc_only() -> None:
    """Without settings the server speaks gRPC only; HTTP would listen on 127.0.0.1:9192."""
    s = Settings()
    assert (s.transport, s.serves_grpc, s.serves_http) == ("grpc", True, False)
    assert (s.http_listen, s.http_path_prefix) == ("127.0.0.1:9192", "/check")


@pytest.mark.parametrize(("transport", "grpc", "http"),
                         [("grpc", True, False), ("http", False, True), ("BOTH", True, True)])
def test_transport_from_file(transport: str, grpc: bool, http: bool) -> None:
    """`transport` selects the listeners (case-insensitive)."""
    s = from_mapping({"transport": transport, "http_listen": "0.0.0.0:8080"}, "c.yaml")
    assert (s.serves_grpc, s.serves_http, s.http_listen) == (grpc, http, "0.0.0.0:8080")


def test_environment_overrides() -> None:
    """EXTAUTHZ_TRANSPORT and EXTAUTHZ_HTTP_LISTEN override the file."""
    s = apply_env(Settings(), {"EXTAUTHZ_TRANSPORT": "http",
                               "EXTAUTHZ_HTTP_LISTEN": "127.0.0.1:1234"})
    assert (s.transport, s.http_listen) == ("http", "127.0.0.1:1234")


@pytest.mark.parametrize(("data", "message"), [
    ({"transport": "rest"}, "transport: expected one of grpc, http, both"),
    ({"transport": "http", "http_listen": "nope"}, "http_listen: expected host:port"),
    ({"transport": "http", "http_path_prefix": "check"}, "http_path_prefix"),
    ({"transport": "http", "http_path_prefix": "/check/"}, "http_path_prefix"),
    ({"transport": "http", "http_path_prefix": "/healthz"}, "http_path_prefix"),
])
def test_invalid_transport_settings_name_the_key(data: dict[str, object], message: str) -> None:
    """Bad values are refused with the file and the key in the message."""
    with pytest.raises(ConfigError, match=message):
        from_mapping(data, "c.yaml")


@pytest.mark.parametrize("transport", ["http", "both"])
def test_tls_applies_to_the_http_listener_too(transport: str) -> None:
    """The `tls` block is accepted with the HTTP transport: both listeners serve it."""
    s = from_mapping({"transport": transport, "tls": {"cert_file": "c", "key_file": "k"}},
                     "c.yaml")
    assert s.transport == transport
    assert s.tls.enabled
