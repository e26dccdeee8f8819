"""Read template.yaml and resolve the intrinsic functions the embedded stack needs.

The embedded stack reads resource names and settings from the template, so there is no
second copy of them. moto's CloudFormation cannot deploy a SAM template, so this resolves
``Ref``, ``Fn::Sub``, ``Fn::GetAtt``, ``Fn::Join``, ``Fn::If`` and ``Fn::Equals`` itself,
for the resource types the stack creates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"
DEFAULT_STACK_NAME = "fraud-detection"
DEFAULT_REGION = "us-east-1"
DEFAULT_ACCOUNT_ID = "123456789012"  # moto's account
NO_VALUE = object()
"""What ``Ref: AWS::NoValue`` resolves to: the property or list item it stands for is dropped."""


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns ``!Ref x`` into ``{"Ref": x}`` and ``!Sub s`` into ``{"Fn::Sub": s}``."""


def _construct_tag(loader: _CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if tag_suffix == "Ref" else f"Fn::{tag_suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


_CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        return yaml.load(handle, Loader=_CfnLoader)


class UnresolvableError(ValueError):
    """The template uses something the embedded stack cannot resolve."""


@dataclass
class ResolvedStack:
    """A template with its parameters and pseudo parameters bound."""

    template: dict[str, Any]
    stack_name: str = DEFAULT_STACK_NAME
    region: str = DEFAULT_REGION
    account_id: str = DEFAULT_ACCOUNT_ID
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    queue_urls: dict[str, str] = field(default_factory=dict)
    """Queue URLs as the endpoint reports them (set by the provisioner), by logical id."""

    def __post_init__(self) -> None:
        self.parameters = {
            name: str(self.parameter_overrides.get(name, spec.get("Default", "")))
            for name, spec in self.template.get("Parameters", {}).items()
        }
        self.pseudo = {
            "AWS::StackName": self.stack_name,
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
        }

    @property
    def resources(self) -> dict[str, Any]:
        """The resources this stack creates: those whose ``Condition`` holds."""
        return {
            name: spec
            for name, spec in self.template["Resources"].items()
            if "Condition" not in spec or self.condition(spec["Condition"])
        }

    def of_type(self, resource_type: str) -> list[str]:
        return [name for name, spec in self.resources.items() if spec["Type"] == resource_type]

    def properties(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id].get("Properties", {})

    # -- physical names and attributes ---------------------------------------------------
    def physical_name(self, logical_id: str) -> str:
        spec = self.resources[logical_id]
        props = spec.get("Properties", {})
        name_property = {
            "AWS::S3::Bucket": "BucketName",
            "AWS::SQS::Queue": "QueueName",
            "AWS::DynamoDB::Table": "TableName",
            "AWS::ECR::Repository": "RepositoryName",
            "AWS::IAM::Role": "RoleName",
            "AWS::Serverless::Function": "FunctionName",
        }.get(spec["Type"])
        if name_property and name_property in props:
            return str(self.resolve(props[name_property]))
        # CloudFormation's generated names look like this; good enough for the emulator.
        return f"{self.stack_name}-{logical_id}"

    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.parameters:
            return self.parameters[name]
        if name not in self.resources:
            raise UnresolvableError(f"Ref to unknown name {name}")
        resource_type = self.resources[name]["Type"]
        if resource_type == "AWS::SQS::Queue":
            return self.queue_url(name)
        if resource_type == "AWS::Serverless::LayerVersion":
            return f"arn:aws:lambda:{self.region}:{self.account_id}:layer:{self.physical_name(name)}:1"
        return self.physical_name(name)

    def queue_url(self, logical_id: str) -> str:
        if logical_id in self.queue_urls:
            return self.queue_urls[logical_id]
        return f"https://sqs.{self.region}.amazonaws.com/{self.account_id}/{self.physical_name(logical_id)}"

    def get_att(self, logical_id: str, attribute: str) -> str:
        resource_type = self.resources[logical_id]["Type"]
        name = self.physical_name(logical_id)
        arns = {
            "AWS::S3::Bucket": f"arn:aws:s3:::{name}",
            "AWS::SQS::Queue": f"arn:aws:sqs:{self.region}:{self.account_id}:{name}",
            "AWS::DynamoDB::Table": f"arn:aws:dynamodb:{self.region}:{self.account_id}:table/{name}",
            "AWS::IAM::Role": f"arn:aws:iam::{self.account_id}:role/{name}",
            "AWS::ECR::Repository": f"arn:aws:ecr:{self.region}:{self.account_id}:repository/{name}",
        }
        if attribute == "Arn" and resource_type in arns:
            return arns[resource_type]
        if resource_type == "AWS::SQS::Queue" and attribute == "QueueName":
            return name
        if resource_type == "AWS::SQS::Queue" and attribute == "QueueUrl":
            return self.queue_url(logical_id)
        if resource_type == "AWS::ECR::Repository" and attribute == "RepositoryUri":
            return f"{self.account_id}.dkr.ecr.{self.region}.amazonaws.com/{name}"
        raise UnresolvableError(f"Fn::GetAtt {logical_id}.{attribute} is not emulated")

    # -- intrinsic functions -----------------------------------------------------------
    def _sub(self, template: str, variables: dict[str, Any]) -> str:
        def replace(match: re.Match[str]) -> str:
            token = match.group(1)
            if token.startswith("!"):
                return "${" + token[1:] + "}"
            if token in variables:
                return str(self.resolve(variables[token]))
            if "." in token and token.split(".", 1)[0] in self.resources:
                logical_id, attribute = token.split(".", 1)
                return self.get_att(logical_id, attribute)
            return self.ref(token)

        return re.sub(r"\$\{([^}]+)\}", replace, template)

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.template["Conditions"][name]))

    def resolve(self, value: Any) -> Any:
        """Resolve every intrinsic function inside ``value``."""
        if isinstance(value, list):
            return [item for item in (self.resolve(item) for item in value) if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(argument)
            if key == "Fn::Sub":
                if isinstance(argument, list):
                    return self._sub(argument[0], argument[1])
                return self._sub(argument, {})
            if key == "Fn::GetAtt":
                logical_id, attribute = argument if isinstance(argument, list) else argument.split(".", 1)
                return self.get_att(logical_id, attribute)
            if key == "Fn::Join":
                return str(argument[0]).join(str(self.resolve(part)) for part in argument[1])
            if key == "Fn::Equals":
                return str(self.resolve(argument[0])) == str(self.resolve(argument[1]))
            if key == "Fn::Not":
                return not self.resolve(argument[0])
            if key == "Fn::If":
                return self.resolve(argument[1] if self.condition(argument[0]) else argument[2])
            if key == "Condition":
                return self.condition(argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def function_environment(self, logical_id: str) -> dict[str, str]:
        """A function's environment: Globals first, then the function's own variables."""
        global_vars = self.template.get("Globals", {}).get("Function", {}).get("Environment", {})
        own_vars = self.properties(logical_id).get("Environment", {})
        merged = {**global_vars.get("Variables", {}), **own_vars.get("Variables", {})}
        env = {name: str(self.resolve(value)) for name, value in merged.items()}
        # LocalEndpointUrl left empty: botocore ignores an empty AWS_ENDPOINT_URL, so on AWS the
        # function has no endpoint override. In-process, an empty value would instead replace
        # the emulator endpoint the caller set: leave it out, which means the same.
        if env.get("AWS_ENDPOINT_URL") == "":
            del env["AWS_ENDPOINT_URL"]
        return env

    def outputs(self) -> dict[str, str]:
        """The template's Outputs whose ``Condition`` (if any) holds."""
        return {
            name: str(self.resolve(spec["Value"]))
            for name, spec in self.template.get("Outputs", {}).items()
            if "Condition" not in spec or self.condition(spec["Condition"])
        }
