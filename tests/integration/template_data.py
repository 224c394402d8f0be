"""template.yaml as data for the guard-rail tests: resources, properties, and `Fn::If`
decided for given condition values, as CloudFormation would."""

from __future__ import annotations

import json
import re
from typing import Any

from .test_template import load_template


def resources() -> dict[str, Any]:
    resources: dict[str, Any] = load_template()["Resources"]
    return resources


def props(name: str) -> dict[str, Any]:
    properties: dict[str, Any] = resources()[name]["Properties"]
    return properties


def resolve(value: Any, conditions: dict[str, bool]) -> Any:
    """`value` with every `Fn::If` decided by `conditions` (a branch left out is dropped)."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, when_true, when_false = value["Fn::If"]
            return resolve(when_true if conditions[name] else when_false, conditions)
        return {
            key: resolve(item, conditions)
            for key, item in value.items()
            if resolve(item, conditions) != {"Ref": "AWS::NoValue"}
        }
    if isinstance(value, list):
        items = [resolve(item, conditions) for item in value]
        return [item for item in items if item != {"Ref": "AWS::NoValue"}]
    return value


def parameter_default(name: str) -> Any:
    return load_template()["Parameters"][name]["Default"]


def conditions_used(value: Any) -> set[str]:
    """The conditions whose `Fn::If` appear in `value`."""
    text = json.dumps(value)
    return set(re.findall(r'"Fn::If": \["([A-Za-z0-9]+)"', text))
