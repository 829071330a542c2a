"""The chart's ``values.schema.json`` embeds the policy's JSON Schema exported by
``extauthz.rules.schema`` under ``extauthz.policy`` (and ``extauthz.policyCheck.tests`` stays a
free-form table). Regenerate after a loader change:

    .venv/bin/python tests/deploy/chartschema.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from extauthz.rules.schema import policy_schema

CHART_SCHEMA = Path(__file__).resolve().parents[2] / "helm" / "temporal-extauthz" / \
    "values.schema.json"


def chart_schema_text(current: dict[str, Any]) -> str:
    """``current`` with the exported policy schema embedded, as the file's text."""
    out = json.loads(json.dumps(current))
    out["properties"]["extauthz"]["properties"]["policy"] = policy_schema()
    return json.dumps(out, indent=2, ensure_ascii=False) + "\n"


def main() -> None:
    """Rewrite values.schema.json with the current export."""
    CHART_SCHEMA.write_text(chart_schema_text(json.loads(CHART_SCHEMA.read_text())))


if __name__ == "__main__":
    main()
