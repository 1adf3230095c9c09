"""The operator's RBAC: least privilege, never Secrets, and the two variants agree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

RBAC = Path(__file__).resolve().parents[2] / "deploy" / "rbac"


def rules(file: str) -> list[dict[str, Any]]:
    return list(yaml.safe_load((RBAC / file).read_text())["rules"])


def test_no_rule_grants_secrets_or_wildcards() -> None:
    for file in ("cluster_role.yaml", "role.yaml"):
        for rule in rules(file):
            assert "secrets" not in rule["resources"], file
            assert "*" not in rule["resources"] and "*" not in rule["verbs"], file


def test_the_namespaced_role_is_the_cluster_role_without_cluster_scoped_rules() -> None:
    cluster_scoped = {
        "namespaces",
        "customresourcedefinitions",
        "clusterkopfpeerings",
        "clusterrolebindings",
        "clusterroles",
    }
    namespaced = [
        rule for rule in rules("cluster_role.yaml") if not set(rule["resources"]) & cluster_scoped
    ]
    assert namespaced == rules("role.yaml")


def test_pods_are_only_read() -> None:
    (pods,) = [rule for rule in rules("role.yaml") if rule["resources"] == ["pods"]]
    assert pods["verbs"] == ["get", "list", "watch"]
