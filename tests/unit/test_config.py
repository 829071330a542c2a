"""Typed configuration from YAML and the environment; errors name the file and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from extauthz import config
from extauthz.auth.types import ASYMMETRIC_ALGORITHMS
from extauthz.config import ConfigError

ISSUER = "https://login.example.com/realms/temporal"


def write(tmp_path: Path, text: str) -> Path:
    """A config file holding ``text``."""
    path = tmp_path / "extauthz.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> str:
    """The ConfigError message for a file holding ``text``."""
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, env={})
    message = str(info.value)
    assert message.startswith(str(path)), message  # every file error names the file
    return message


# --- environment only ------------------------------------------------------------------------

def test_defaults_without_file_or_environment() -> None:
    """No file and an empty environment: default listen address and no issuers."""
    s = config.load(None, env={})
    assert (s.listen, s.issuers, s.max_message_bytes) == ("127.0.0.1:9191", (), 4 * 1024 * 1024)
    with pytest.raises(ConfigError, match="TEMPORAL_AUTH_PROVIDER_URL"):
        config.require_issuers(s)


def test_provider_url_and_client_id_make_an_issuer() -> None:
    """TEMPORAL_AUTH_PROVIDER_URL is the issuer; TEMPORAL_AUTH_CLIENT_ID the audience."""
    s = config.load(None, env={"TEMPORAL_AUTH_PROVIDER_URL": ISSUER,
                               "TEMPORAL_AUTH_CLIENT_ID": "temporal-ui"})
    [issuer] = s.issuers
    assert (issuer.issuer, issuer.audiences) == (ISSUER, ("temporal-ui",))
    assert not issuer.allow_insecure_http


def test_extauthz_audience_takes_precedence_over_client_id() -> None:
    """EXTAUTHZ_AUDIENCE (comma-separated) wins over TEMPORAL_AUTH_CLIENT_ID."""
    s = config.load(None, env={"TEMPORAL_AUTH_PROVIDER_URL": ISSUER,
                               "TEMPORAL_AUTH_CLIENT_ID": "temporal-ui",
                               "EXTAUTHZ_AUDIENCE": " api://temporal , temporal-ui2 ,"})
    assert s.issuers[0].audiences == ("api://temporal", "temporal-ui2")


def test_provider_url_without_audience_checks_no_audience() -> None:
    """Without a client id or audience, the audience list is empty."""
    s = config.load(None, env={"TEMPORAL_AUTH_PROVIDER_URL": ISSUER})
    assert s.issuers[0].audiences == ()


def test_http_provider_url_is_refused_unless_allowed() -> None:
    """An http:// provider URL needs EXTAUTHZ_ALLOW_INSECURE_ISSUER=1."""
    env = {"TEMPORAL_AUTH_PROVIDER_URL": "http://127.0.0.1:8080"}
    with pytest.raises(ConfigError, match="allow_insecure_http"):
        config.load(None, env=env)
    s = config.load(None, env={**env, "EXTAUTHZ_ALLOW_INSECURE_ISSUER": "1"})
    assert s.issuers[0].allow_insecure_http


def test_extauthz_listen_overrides_the_file(tmp_path: Path) -> None:
    """EXTAUTHZ_LISTEN overrides `listen` from the file."""
    path = write(tmp_path, "listen: 127.0.0.1:7000\n")
    assert config.load(path, env={}).listen == "127.0.0.1:7000"
    s = config.load(path, env={"EXTAUTHZ_LISTEN": "0.0.0.0:9000"})
    assert (s.listen, s.host_port) == ("0.0.0.0:9000", ("0.0.0.0", 9000))


@pytest.mark.parametrize("listen", ["9191", "host:", ":9191", "host:99999", "host:port", "h:0"])
def test_bad_extauthz_listen_is_refused(listen: str) -> None:
    """A malformed EXTAUTHZ_LISTEN is an error naming the variable."""
    with pytest.raises(ConfigError, match="EXTAUTHZ_LISTEN"):
        config.load(None, env={"EXTAUTHZ_LISTEN": listen})


def test_ipv6_listen_is_parsed() -> None:
    """`[::1]:9191` splits into host ::1 and port 9191."""
    assert config.load(None, env={"EXTAUTHZ_LISTEN": "[::1]:9191"}).host_port == ("::1", 9191)


def test_file_issuers_win_over_the_provider_url(tmp_path: Path) -> None:
    """When the file lists issuers, TEMPORAL_AUTH_PROVIDER_URL does not add or replace one."""
    path = write(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n")
    s = config.load(path, env={"TEMPORAL_AUTH_PROVIDER_URL": "https://other.example"})
    assert [i.issuer for i in s.issuers] == [ISSUER]


# --- YAML file -------------------------------------------------------------------------------

def test_full_issuer_is_read(tmp_path: Path) -> None:
    """Every issuer key is read into IssuerConfig with its type."""
    path = write(tmp_path, f"""
listen: 127.0.0.1:9300
max_message_bytes: 1048576
issuers:
  - issuer: {ISSUER}
    audiences: [temporal]
    jwks_uris: ["file:///etc/jwks.json"]
    algorithms: [RS256, ES256]
    leeway_seconds: 30
    max_token_bytes: 8192
    required_typ: at+jwt
    claims:
      permissions_claim: roles
      permissions_regex: '(?P<namespace>[\\w-]+):(?P<role>\\w+)'
      subject_claim: email
""")
    s = config.load(path, env={})
    [i] = s.issuers
    assert s.listen == "127.0.0.1:9300" and s.max_message_bytes == 1048576
    assert (i.audiences, i.jwks_uris, i.algorithms) == (
        ("temporal",), ("file:///etc/jwks.json",), ("RS256", "ES256"))
    assert (i.leeway_seconds, i.max_token_bytes, i.required_typ) == (30.0, 8192, "at+jwt")
    assert isinstance(i.leeway_seconds, float)
    assert (i.claims.permissions_claim, i.claims.subject_claim) == ("roles", "email")
    assert i.claims.permissions_regex == r"(?P<namespace>[\w-]+):(?P<role>\w+)"
    assert s.source == str(path)


def test_default_algorithms_are_asymmetric_only(tmp_path: Path) -> None:
    """An issuer without `algorithms` allows only asymmetric algorithms."""
    s = config.load(write(tmp_path, f"issuers: [{{issuer: '{ISSUER}'}}]\n"), env={})
    assert s.issuers[0].algorithms == ASYMMETRIC_ALGORITHMS
    assert not any(a.startswith("HS") or a == "none" for a in s.issuers[0].algorithms)


def test_unknown_issuer_key_names_file_and_key_path(tmp_path: Path) -> None:
    """A misspelt key (`leewy_seconds`) is an error naming `issuers[0].leewy_seconds`."""
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n    leewy_seconds: 5\n")
    assert "issuers[0].leewy_seconds: unknown key" in message
    assert "leeway_seconds" in message  # the known keys are listed


def test_unknown_key_in_second_issuer_names_its_index(tmp_path: Path) -> None:
    """The index in the key path is the offending issuer's."""
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n"
                         "  - issuer: https://b.example\n    audience: x\n")
    assert "issuers[1].audience: unknown key" in message


def test_unknown_top_level_and_claims_keys(tmp_path: Path) -> None:
    """Unknown keys at the top and under `claims` are named with their path."""
    assert "listn: unknown key" in load_error(tmp_path, "listn: 1.2.3.4:5\n")
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n"
                         "    claims: {permission_claim: roles}\n")
    assert "issuers[0].claims.permission_claim: unknown key" in message


@pytest.mark.parametrize(("yaml_text", "key"), [
    ("issuers:\n  - issuer: {i}\n    leeway_seconds: soon\n", "issuers[0].leeway_seconds"),
    ("issuers:\n  - issuer: {i}\n    max_token_bytes: 1.5\n", "issuers[0].max_token_bytes"),
    ("issuers:\n  - issuer: {i}\n    max_token_bytes: true\n", "issuers[0].max_token_bytes"),
    ("issuers:\n  - issuer: {i}\n    allow_insecure_http: 'yes'\n",
     "issuers[0].allow_insecure_http"),
    ("issuers:\n  - issuer: {i}\n    audiences: [1, 2]\n", "issuers[0].audiences"),
    ("issuers:\n  - issuer: {i}\n    claims: nope\n", "issuers[0].claims"),
    ("issuers:\n  - issuer: {i}\n    leeway_seconds: -1\n", "issuers[0].leeway_seconds"),
    ("issuers:\n  - issuer: {i}\n    fetch_timeout_seconds: 0\n",
     "issuers[0].fetch_timeout_seconds"),
    ("issuers:\n  - issuer: 42\n", "issuers[0].issuer"),
    ("issuers:\n  - audiences: [x]\n", "issuers[0].issuer"),
    ("issuers:\n  - just-a-string\n", "issuers[0]"),
    ("issuers: {{issuer: {i}}}\n", "issuers"),
    ("max_message_bytes: '4MiB'\n", "max_message_bytes"),
    ("max_message_bytes: 0\n", "max_message_bytes"),
    ("listen: 9191\n", "listen"),
    ("listen: 'nohost'\n", "listen"),
])
def test_wrong_types_name_the_key(tmp_path: Path, yaml_text: str, key: str) -> None:
    """A value of the wrong type or range is an error naming its key path."""
    message = load_error(tmp_path, yaml_text.format(i=ISSUER))
    assert f": {key}:" in message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    """A YAML document that is not a mapping is refused."""
    assert "expected a mapping" in load_error(tmp_path, text)


def test_empty_file_is_the_defaults(tmp_path: Path) -> None:
    """An empty YAML file means all defaults."""
    assert config.load(write(tmp_path, ""), env={}).issuers == ()


def test_invalid_yaml_is_an_error(tmp_path: Path) -> None:
    """YAML that does not parse is an error naming the file."""
    assert "not valid YAML" in load_error(tmp_path, "issuers: [\n")


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A file that cannot be read is an error naming it."""
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.yaml", env={})


def test_http_issuer_refused_unless_allowed(tmp_path: Path) -> None:
    """An http:// issuer is refused; `allow_insecure_http: true` permits it (dev only)."""
    message = load_error(tmp_path, "issuers:\n  - issuer: http://127.0.0.1:8080\n")
    assert "issuers[0].issuer" in message and "allow_insecure_http" in message
    path = write(tmp_path, "issuers:\n  - issuer: http://127.0.0.1:8080\n"
                 "    allow_insecure_http: true\n")
    assert config.load(path, env={}).issuers[0].allow_insecure_http


@pytest.mark.parametrize("uri", ["http://keys.example/jwks", "ftp://x/jwks", "/etc/jwks.json"])
def test_insecure_jwks_uri_refused(tmp_path: Path, uri: str) -> None:
    """jwks_uris must be https:// or file:// (http:// only with allow_insecure_http)."""
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n    jwks_uris: ['{uri}']\n")
    assert "issuers[0].jwks_uris[0]" in message


def test_file_issuer_url_is_refused(tmp_path: Path) -> None:
    """The issuer itself may not be a file:// URL."""
    assert "issuers[0].issuer" in load_error(tmp_path, "issuers:\n  - issuer: file:///x\n")


def test_duplicate_issuer_is_refused(tmp_path: Path) -> None:
    """The same issuer listed twice is an error."""
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n  - issuer: {ISSUER}\n")
    assert "issuers:" in message and "twice" in message


@pytest.mark.parametrize("pattern", [
    "(?P<namespace>[a-z+", "(?P<namespace>\\w+):(\\w+)", "(?P<role>\\w+)",
])
def test_bad_permissions_regex_is_refused(tmp_path: Path, pattern: str) -> None:
    """A regex that does not compile or lacks a named group names `claims.permissions_regex`."""
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n"
                         f"    claims:\n      permissions_regex: '{pattern}'\n")
    assert "issuers[0].claims.permissions_regex:" in message


@pytest.mark.parametrize("pattern", [
    "(?P<namespace>\\w+)(?=:):(?P<role>\\w+)", "(?P<namespace>\\w+):(?P<role>\\w+)\\Z",
])
def test_permissions_regex_go_refuses_is_refused(tmp_path: Path, pattern: str) -> None:
    """A regex Python compiles but Go (Temporal's regexp) refuses names the file and the key."""
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n"
                         f"    claims:\n      permissions_regex: '{pattern}'\n")
    assert "issuers[0].claims.permissions_regex: not a valid Go (RE2) regular expression" \
        in message


def test_permissions_regex_in_go_syntax_is_accepted(tmp_path: Path) -> None:
    """Go syntax Python lacks (`\\z`, `\\pL`, `[[:alpha:]]`) loads, as Temporal takes it."""
    pattern = r"^(?P<namespace>[[:alpha:]\pL-]+)\.(?P<role>\w+)\z"
    path = write(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n"
                 f"    claims:\n      permissions_regex: '{pattern}'\n")
    assert config.load(path, env={}).issuers[0].claims.permissions_regex == pattern


@pytest.mark.parametrize("alg", ["HS256", "HS512", "none", "rs256"])
def test_symmetric_or_none_algorithm_is_refused(tmp_path: Path, alg: str) -> None:
    """HS256 (or none, or an unknown spelling) in `algorithms` is refused."""
    message = load_error(tmp_path, f"issuers:\n  - issuer: {ISSUER}\n"
                         f"    algorithms: [RS256, {alg}]\n")
    assert "issuers[0].algorithms" in message and alg in message


@pytest.mark.parametrize("size", [1024, 4 * 1024 * 1024, 4 * 1024 * 1024 + 5])
def test_grpc_max_receive_bytes_too_small_is_refused(tmp_path: Path, size: int) -> None:
    """grpc_max_receive_bytes must exceed max_message_bytes + 5 (framing)."""
    message = load_error(tmp_path, f"grpc_max_receive_bytes: {size}\n")
    assert ": grpc_max_receive_bytes:" in message


def test_grpc_max_receive_bytes_above_the_message_limit_is_accepted(tmp_path: Path) -> None:
    """A receive limit above the message limit plus framing is fine."""
    path = write(tmp_path, "max_message_bytes: 1000\ngrpc_max_receive_bytes: 2000\n")
    s = config.load(path, env={})
    assert (s.max_message_bytes, s.grpc_max_receive_bytes) == (1000, 2000)


# --- issuer key-set bounds and subject fallback ------------------------------------------------

def issuer_yaml(**keys: object) -> str:
    """One issuer with ``keys`` set (YAML flow values)."""
    lines = "".join(f"    {name}: {value}\n" for name, value in keys.items())
    return f"issuers:\n  - issuer: {ISSUER}\n{lines}"


def test_refresh_bounds_fetch_cap_and_rsa_floor_are_read(tmp_path: Path) -> None:
    """The four key-set settings reach IssuerConfig with their types."""
    s = config.load(write(tmp_path, issuer_yaml(
        min_refresh_interval_seconds=10, refresh_interval_seconds=60,
        max_refresh_interval_seconds=600, max_fetch_bytes=65536, min_rsa_bits=3072)), env={})
    [i] = s.issuers
    assert (i.min_refresh_interval_seconds, i.refresh_interval_seconds,
            i.max_refresh_interval_seconds) == (10.0, 60.0, 600.0)
    assert isinstance(i.min_refresh_interval_seconds, float)
    assert (i.max_fetch_bytes, i.min_rsa_bits) == (65536, 3072)


def test_key_set_settings_default_when_absent(tmp_path: Path) -> None:
    """Without the keys, the IssuerConfig defaults hold (30 s .. 1 h, 1 MiB, RSA-2048)."""
    [i] = config.load(write(tmp_path, issuer_yaml()), env={}).issuers
    assert (i.min_refresh_interval_seconds, i.max_refresh_interval_seconds,
            i.max_fetch_bytes, i.min_rsa_bits) == (30.0, 3600.0, 1024 * 1024, 2048)


@pytest.mark.parametrize(("keys", "key"), [
    ({"min_refresh_interval_seconds": 0}, "min_refresh_interval_seconds"),
    ({"max_refresh_interval_seconds": -5}, "max_refresh_interval_seconds"),
    ({"max_fetch_bytes": 0}, "max_fetch_bytes"),
    ({"max_fetch_bytes": "1MiB"}, "max_fetch_bytes"),
    ({"max_fetch_bytes": 1.5}, "max_fetch_bytes"),
    ({"min_rsa_bits": "big"}, "min_rsa_bits"),
    ({"min_refresh_interval_seconds": "soon"}, "min_refresh_interval_seconds"),
])
def test_key_set_settings_must_be_positive_numbers(
    tmp_path: Path, keys: dict[str, object], key: str
) -> None:
    """Zero, negative or mistyped values are errors naming the issuer's key path."""
    assert f": issuers[0].{key}:" in load_error(tmp_path, issuer_yaml(**keys))


@pytest.mark.parametrize(("keys", "key"), [
    ({"min_refresh_interval_seconds": 600}, "min_refresh_interval_seconds"),
    ({"max_refresh_interval_seconds": 60}, "max_refresh_interval_seconds"),
    ({"refresh_interval_seconds": 5, "min_refresh_interval_seconds": 10},
     "min_refresh_interval_seconds"),
    ({"refresh_interval_seconds": 7200, "max_refresh_interval_seconds": 3600},
     "max_refresh_interval_seconds"),
    ({"min_refresh_interval_seconds": 100, "max_refresh_interval_seconds": 50,
      "refresh_interval_seconds": 70}, "min_refresh_interval_seconds"),
])
def test_refresh_interval_must_lie_between_min_and_max(
    tmp_path: Path, keys: dict[str, object], key: str
) -> None:
    """min <= refresh_interval <= max, or an error naming the bound that was set and the
    interval it conflicts with."""
    message = load_error(tmp_path, issuer_yaml(**keys))
    assert f": issuers[0].{key}:" in message
    detail = message.split(f"{key}:", 1)[1]
    assert "refresh_interval_seconds" in detail or "max_refresh_interval_seconds" in detail


@pytest.mark.parametrize(("refresh", "low", "high"), [
    (1, 1.0, 3600.0), (0.5, 0.5, 3600.0), (7200, 30.0, 7200.0), (300, 30.0, 3600.0),
])
def test_unset_bounds_follow_a_refresh_interval_outside_the_defaults(
    tmp_path: Path, refresh: float, low: float, high: float
) -> None:
    """`refresh_interval_seconds: 1` alone (tests, short-lived keys) is valid: the unset
    minimum follows it down (and an unset maximum follows it up)."""
    [i] = config.load(write(tmp_path, issuer_yaml(refresh_interval_seconds=refresh)),
                      env={}).issuers
    assert (i.min_refresh_interval_seconds, i.refresh_interval_seconds,
            i.max_refresh_interval_seconds) == (low, float(refresh), high)


def test_refresh_interval_equal_to_both_bounds_is_accepted(tmp_path: Path) -> None:
    """The bounds are inclusive."""
    [i] = config.load(write(tmp_path, issuer_yaml(
        min_refresh_interval_seconds=60, refresh_interval_seconds=60,
        max_refresh_interval_seconds=60)), env={}).issuers
    assert i.refresh_interval_seconds == 60.0


@pytest.mark.parametrize("bits", [1024, 2047, 0, -1])
def test_min_rsa_bits_below_2048_is_refused_and_says_never(tmp_path: Path, bits: int) -> None:
    """RSA keys under 2048 bits can never be allowed: the error names the key and says so."""
    message = load_error(tmp_path, issuer_yaml(min_rsa_bits=bits))
    assert ": issuers[0].min_rsa_bits:" in message
    assert "2048" in message and "never" in message


def test_min_rsa_bits_above_the_largest_loadable_key_is_refused(tmp_path: Path) -> None:
    """A floor no RSA key can meet (above 16384 bits) would silently drop every RSA key."""
    message = load_error(tmp_path, issuer_yaml(min_rsa_bits=32768))
    assert ": issuers[0].min_rsa_bits:" in message and "16384" in message


def test_subject_fallback_defaults_to_client_id_then_azp(tmp_path: Path) -> None:
    """Without `claims.subject_fallback`, a token without `sub` is named by client_id, azp."""
    [i] = config.load(write(tmp_path, issuer_yaml()), env={}).issuers
    assert i.claims.subject_fallback == ("client_id", "azp")


@pytest.mark.parametrize(("value", "expected"), [
    ("[]", ()), ("[appid]", ("appid",)), ("[azp, client_id]", ("azp", "client_id")),
])
def test_subject_fallback_is_read(tmp_path: Path, value: str, expected: tuple[str, ...]) -> None:
    """`[]` requires the subject claim; a list is tried in order."""
    [i] = config.load(write(tmp_path, issuer_yaml(claims=f"{{subject_fallback: {value}}}")),
                      env={}).issuers
    assert i.claims.subject_fallback == expected


@pytest.mark.parametrize(("claims", "key"), [
    ("{subject_fallback: [client_id, 7]}", "claims.subject_fallback"),
    ("{subject_fallback: {a: b}}", "claims.subject_fallback"),
    ("{subject_fallback: [client_id, '']}", "claims.subject_fallback[1]"),
    ("{subject_claim: ''}", "claims.subject_claim"),
])
def test_bad_subject_fallback_names_the_key(tmp_path: Path, claims: str, key: str) -> None:
    """A non-string or empty claim name is an error naming the key path."""
    assert f": issuers[0].{key}:" in load_error(tmp_path, issuer_yaml(claims=claims))
