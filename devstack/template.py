"""Reads template.yaml (CloudFormation tags included) so the local table has the deployed schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"


class _CfnLoader(yaml.SafeLoader):  # type: ignore[misc]
    """A YAML loader that keeps `!Ref`, `!Sub`, `!GetAtt`, ... as `{"Fn": value}` mappings."""


def _tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        assert isinstance(node, yaml.MappingNode)
        value = loader.construct_mapping(node, deep=True)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        return {"Fn::GetAtt": value.split(".", 1)}
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _tag)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CfnLoader)  # noqa: S506
    assert isinstance(data, dict)
    return data


def table_definition(path: Path = TEMPLATE) -> dict[str, Any]:
    """The `Table` resource's Properties: keys, attributes, billing mode and TTL."""
    return dict(load_template(path)["Resources"]["Table"]["Properties"])


def create_table(client: Any, table_name: str, path: Path = TEMPLATE) -> None:
    """Create the single table exactly as template.yaml defines it (idempotent)."""
    props = table_definition(path)
    existing = client.list_tables().get("TableNames", [])
    if table_name not in existing:
        client.create_table(
            TableName=table_name,
            KeySchema=props["KeySchema"],
            AttributeDefinitions=props["AttributeDefinitions"],
            BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"),
        )
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        client.update_time_to_live(TableName=table_name, TimeToLiveSpecification=ttl)
