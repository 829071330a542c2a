"""The IdP recipes (examples/idp/<idp>/): each table passes through `extauthz test`'s
pipeline, its principals are the claims fixtures verbatim, and each fixture's kind is right."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from extauthz.claims import ClaimMapper, ClaimMapping, overage_note, principal_kind
from extauthz.cli import main
from extauthz.config import load
from extauthz.rules.tabletest import run_file

REPO = Path(__file__).resolve().parents[2]
IDP_ROOT = REPO / "examples" / "idp"
IDPS = ("keycloak", "okta", "entra", "auth0", "dex", "google")
KINDS = {"human": "human", "service": "service", "webui": "human", "overage": "human"}


def fixtures(idp: str) -> dict[str, dict[str, Any]]:
    return {p.stem.removeprefix("claims-"): json.loads(p.read_text())
            for p in sorted((IDP_ROOT / idp).glob("claims-*.json"))}


def test_every_idp_has_a_recipe() -> None:
    """Each IdP directory holds a config, a policy, a table and the three token shapes."""
    assert sorted(p.name for p in IDP_ROOT.iterdir() if p.is_dir()) == sorted(IDPS)
    for idp in IDPS:
        names = {p.name for p in (IDP_ROOT / idp).iterdir()}
        assert {"config.yaml", "policy.yaml", "policy.tests.yaml", "claims-human.json",
                "claims-service.json", "claims-webui.json"} <= names, idp


@pytest.mark.parametrize("idp", IDPS)
def test_table_passes_through_extauthz_test(idp: str, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    """`extauthz test examples/idp/<idp>/policy.tests.yaml` passes every case."""
    table = IDP_ROOT / idp / "policy.tests.yaml"
    assert main(["test", str(table)]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and " 0 failed" in out
    _, results = run_file(table)
    assert len(results) >= 11
    # the table exercises every shape both ways: something allowed and something denied
    for who in ("human", "service", "webui"):
        data = yaml.safe_load(table.read_text())
        mine = [c["expect"] for c in data["cases"] if c["principal"] == who]
        assert {"allow", "deny"} <= set(mine), (idp, who)


@pytest.mark.parametrize("idp", IDPS)
def test_table_principals_are_the_fixtures(idp: str) -> None:
    """The table's principals are the claims-*.json files, not drifted copies."""
    table = yaml.safe_load((IDP_ROOT / idp / "policy.tests.yaml").read_text())
    for name, claims in fixtures(idp).items():
        assert table["principals"][name] == claims, (idp, name)


@pytest.mark.parametrize("idp", IDPS)
def test_fixture_kinds(idp: str) -> None:
    """The client-credentials fixture is a service; the user and Web UI tokens are human."""
    mapper = ClaimMapper(ClaimMapping())
    for name, claims in fixtures(idp).items():
        assert principal_kind(claims) == KINDS[name], (idp, name)
        assert mapper.principal(claims, claims["iss"]).kind == KINDS[name], (idp, name)


@pytest.mark.parametrize("idp", IDPS)
def test_config_snippet_is_valid(idp: str) -> None:
    """The recipe's config loads (with its policy) and names the fixtures' issuer."""
    settings = load(IDP_ROOT / idp / "config.yaml", env={})
    issuers = {i.issuer for i in settings.issuers}
    assert {c["iss"] for c in fixtures(idp).values()} == issuers


def test_entra_overage_denial_names_the_cause(capsys: pytest.CaptureFixture[str]) -> None:
    """An Entra user in groups overage is denied with a reason that says why and what to do."""
    _, results = run_file(IDP_ROOT / "entra" / "policy.tests.yaml")
    (overage,) = [r for r in results if "overage" in r.name]
    assert overage.decision is not None and not overage.decision.allowed
    message = overage.decision.message
    assert message.startswith('subject "zA1sX2dC3fV4gB5hN6jM7kL8pO9iU0yT1rE2wQ3aS4d" has no role')
    assert "groups overage" in message and "_claim_names.groups" in message
    assert overage_note(fixtures("entra")["overage"]) in message
    # a user who is simply not in the group gets the plain reason, without the overage text
    others = [r for r in results if r.decision is not None and not r.decision.allowed
              and r is not overage]
    assert others and all("overage" not in r.decision.message for r in others if r.decision)
