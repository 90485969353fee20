"""The Grafana dashboard in config/ stays in step with the metrics the gateway exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "myhug"


def test_the_grafana_dashboard_graphs_only_metrics_the_gateway_exposes() -> None:
    """Every metric a dashboard query names exists in the instruments or the database collector."""
    dashboard = json.loads((ROOT / "config" / "grafana-dashboard.json").read_text())
    exposed = set(re.findall(r'"(myhug_[a-z_]+)"', (PACKAGE / "instruments.py").read_text()
                             + (PACKAGE / "metrics.py").read_text()))
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\b(myhug_[a-z_]+?)(?:_total|_bucket|_count|_sum)?\b", target["expr"])}
    assert queried and queried <= exposed, queried - exposed
