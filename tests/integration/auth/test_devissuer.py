"""The development issuer: HTTP endpoints, the CLI, the offline minting helper."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support_auth import config_for, running

from devkit import tokens
from devkit.issuer import DevIssuer
from devkit.procs import devkit_env


def post(url: str, data: bytes, content_type: str) -> dict[str, Any]:
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer: dict[str, Any] = json.loads(response.read())
    return answer


def test_refuses_a_non_loopback_host() -> None:
    """Binding anywhere but loopback needs an explicit opt-in."""
    with pytest.raises(ValueError, match="non-loopback"):
        DevIssuer("0.0.0.0")


async def test_mint_helper_tokens_verify(dev: DevIssuer) -> None:
    """``tokens.mint(url, claims)`` over HTTP: defaults iss/aud/exp, honours ``ttl``."""
    token = tokens.mint(dev.url, {"sub": "alice", "permissions": ["default:write"],
                                     "ttl": 120})
    async with running(config_for(dev)) as auth:
        verified = await auth.verify(token)
    assert verified.claims["permissions"] == ["default:write"]
    assert verified.claims["aud"] == "temporal"
    assert verified.expires_at - verified.claims["iat"] == 120


async def test_client_credentials_token_names_the_client(dev: DevIssuer) -> None:
    """``POST /token`` (client credentials): sub, client_id and azp are the client id."""
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "worker-1",
                                   "client_secret": "anything",
                                   "permissions": "default:worker,default:write"}).encode()
    answer = post(f"{dev.url}/token", form, "application/x-www-form-urlencoded")
    assert answer["token_type"] == "Bearer"
    async with running(config_for(dev)) as auth:
        verified = await auth.verify(answer["access_token"])
    assert verified.subject == "worker-1"
    assert (verified.claims["client_id"], verified.claims["azp"]) == ("worker-1", "worker-1")
    assert verified.claims["permissions"] == ["default:worker", "default:write"]


def test_token_endpoint_rejects_other_grants(dev: DevIssuer) -> None:
    """Only client credentials are supported."""
    form = urllib.parse.urlencode({"grant_type": "password", "client_id": "x"}).encode()
    with pytest.raises(urllib.error.HTTPError) as caught:
        post(f"{dev.url}/token", form, "application/x-www-form-urlencoded")
    assert caught.value.code == 400


async def test_rotate_endpoint_with_drop_old(fresh_dev: DevIssuer) -> None:
    """``POST /dev/rotate {"drop_old": true}`` publishes only the new key."""
    old = fresh_dev.current_kid
    answer = post(f"{fresh_dev.url}/dev/rotate", b'{"drop_old": true}', "application/json")
    assert answer["kid"] == fresh_dev.current_kid != old
    assert [k["kid"] for k in fresh_dev.jwks()["keys"]] == [answer["kid"]]


async def test_offline_mint_from_state_dir(tmp_path: Path) -> None:
    """Keys persist in the state dir; ``mint_offline`` signs tokens the server vouches for,
    and a restarted issuer keeps the same keys."""
    with DevIssuer(state_dir=tmp_path) as first:
        kid, url = first.current_kid, first.url
        token = tokens.mint_offline(tmp_path, {"sub": "offline"})
        async with running(config_for(first)) as auth:
            assert (await auth.verify(token)).subject == "offline"
    assert DevIssuer(state_dir=tmp_path, issuer=url).current_kid == kid
    assert (tmp_path / tokens.STATE_FILE).stat().st_mode & 0o077 == 0


def test_cli_serves_discovery_and_prints_its_url(tmp_path: Path) -> None:
    """``python -m devkit.issuer --port 0`` prints the URL and serves discovery."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "devkit.issuer", "--host", "127.0.0.1", "--port", "0",
         "--state-dir", str(tmp_path), "--alg", "ES256"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=devkit_env(),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        with urllib.request.urlopen(f"{url}/.well-known/openid-configuration", timeout=5) as r:
            document = json.loads(r.read())
        assert document["issuer"] == url
        assert document["jwks_uri"] == f"{url}/jwks.json"
        with urllib.request.urlopen(document["jwks_uri"], timeout=5) as r:
            assert json.loads(r.read())["keys"][0]["alg"] == "ES256"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=5)
    assert "DEVELOPMENT-ONLY" in err
