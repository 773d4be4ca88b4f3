"""The monitoring component's alerts, tested the way Prometheus users test them.

    .venv/bin/pytest -q deploy/tests/test_alerts.py      (scripts/test.sh runs it)

`promtool check rules` on the PrometheusRule's groups, then `promtool test rules`
on deploy/tests/alerts.test.yaml: every alert fires when it should and stays
silent on a quiet night, a fresh install and a rollout. promtool comes from
Debian's `prometheus` package (scripts/setup-system.sh installs it). A mutated
rule must make the unit tests fail, so they cannot pass vacuously. Every alert
links its section of docs/runbook.md, and that section says what the alert
means, how to confirm it and what to do.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULE = ROOT / "deploy" / "k8s" / "components" / "monitoring" / "prometheusrule.yaml"
UNIT_TESTS = Path(__file__).resolve().parent / "alerts.test.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"


def promtool() -> str:
    found = shutil.which("promtool")
    if not found:
        pytest.fail("promtool not found: scripts/setup-system.sh installs Debian's `prometheus` package")
    return found


def groups() -> list[dict]:
    return yaml.safe_load(RULE.read_text())["spec"]["groups"]


def alerts() -> list[dict]:
    return [r for g in groups() for r in g["rules"] if "alert" in r]


def run_unit_tests(tmp_path: Path, rule_groups: list[dict]) -> subprocess.CompletedProcess:
    """The unit tests against `rule_groups`, written where alerts.test.yaml expects them."""
    (tmp_path / "taskcast.rules.yaml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    shutil.copy(UNIT_TESTS, tmp_path / "alerts.test.yaml")
    return subprocess.run([promtool(), "test", "rules", "alerts.test.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_rules_pass_promtool_check(tmp_path):
    path = tmp_path / "taskcast.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups()}, sort_keys=False))
    out = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout, out.stdout


def test_every_alert_passes_its_unit_tests(tmp_path):
    out = run_unit_tests(tmp_path, groups())
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_every_alert_is_tested_firing_and_silent():
    names = [t["name"] for t in yaml.safe_load(UNIT_TESTS.read_text())["tests"]]
    fires = " ".join(part for n in names for part in n.split("|") if part.strip().startswith("fires:"))
    silent = " ".join(part for n in names for part in n.split("|") if part.strip().startswith("silent:"))
    for a in alerts():
        assert re.search(rf"\b{a['alert']}\b", fires), f"no test shows {a['alert']} firing"
        assert re.search(rf"\b{a['alert']}\b", silent), f"no test shows {a['alert']} staying silent"
    # The situations the issue names.
    for situation in ("quiet night", "fresh install", "rollout"):
        assert situation in silent, situation


@pytest.mark.parametrize("mutation", ["stall on any pending task", "no model without for",
                                      "pending tasks summed over trainer replicas"])
def test_unit_tests_catch_a_broken_rule(tmp_path, mutation):
    """The unit tests fail on the rule as it was before the quiet-night fix, on
    an alert that no longer waits out a rollout, and on one that adds up what
    both of prod's trainer replicas export."""
    gs = groups()
    rules = {r["alert"]: r for g in gs for r in g["rules"] if "alert" in r}
    if mutation == "stall on any pending task":
        rules["TaskcastTrainingStalled"]["expr"] = (
            "(max by (namespace) (taskcast_trainer_pending_tasks) > 0) unless on (namespace) "
            "(sum by (namespace) (increase(taskcast_trainer_runs_started_total[6h])) > 0)")
        expected = "quiet night"
    elif mutation == "pending tasks summed over trainer replicas":
        expr = rules["TaskcastTrainingStalled"]["expr"]
        assert "max by (namespace) (taskcast_trainer_pending_tasks)" in expr
        rules["TaskcastTrainingStalled"]["expr"] = expr.replace(
            "max by (namespace) (taskcast_trainer_pending_tasks)", "sum by (namespace) (taskcast_trainer_pending_tasks)")
        expected = "two trainer replicas"
    else:
        del rules["TaskcastInferenceNoModel"]["for"]
        expected = "TaskcastInferenceNoModel"
    out = run_unit_tests(tmp_path, gs)
    assert out.returncode != 0, out.stdout
    assert expected in out.stdout + out.stderr, out.stdout + out.stderr


def runbook_sections() -> dict[str, str]:
    """`## Alertname` sections of the runbook, by GitHub-style anchor."""
    text = RUNBOOK.read_text()
    parts = re.split(r"^## ", text, flags=re.M)[1:]
    return {p.splitlines()[0].strip().lower(): p for p in parts}


def test_every_alert_links_its_runbook_section():
    sections = runbook_sections()
    for a in alerts():
        url = a["annotations"].get("runbook_url", "")
        anchor = a["alert"].lower()
        assert url == f"docs/runbook.md#{anchor}", (a["alert"], url)
        assert anchor in sections, f"docs/runbook.md has no section `## {a['alert']}`"
        body = sections[anchor]
        for part in ("**Meaning.**", "**Confirm.**", "**Act.**"):
            assert part in body, f"runbook section {a['alert']} lacks {part}"
