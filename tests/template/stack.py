"""The template as SAM deploys it, and the stack CloudFormation would make of it for given
parameter values: the tests of tests/template check properties of what is really created.

`transformed()` runs SAM's own transform (aws-sam-translator, offline). `stack(params)`
then evaluates the conditions for those parameter values, drops the resources whose
condition is false, and resolves every `Fn::If` and `AWS::NoValue`, as CloudFormation does
before it creates anything. References to parameters are resolved too; everything else
(`Fn::GetAtt`, `Ref` to a resource, `Fn::Sub` of a resource) is left as written.
"""

import functools
import json
import os
import pathlib
import re

from cfnlint.decode import decode

TEMPLATE = pathlib.Path(__file__).resolve().parents[2] / "template.yaml"

# Parameters without a default: what every stack needs.
REQUIRED = {
    "DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:mirror-db-AbCdEf",
    "SubnetIds": "subnet-0a1b2c3d,subnet-4e5f6a7b",
    "SecurityGroupIds": "sg-0123abcd",
}
VPC = {"VpcId": "vpc-0123abcd"}
REDIS_SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:redis-token-AbCdEf"
ELASTICACHE = {**VPC, "RealtimeDelivery": "elasticache", "RedisAuthSecretArn": REDIS_SECRET}
EXISTING_REDIS = {"RealtimeDelivery": "existing", "RedisUrl": "rediss://cache.example.internal:6379",
                  "RedisAuthSecretArn": REDIS_SECRET}
NO_VALUE = object()


def load():
    template, matches = decode(str(TEMPLATE))
    assert not matches, matches
    return template


@functools.lru_cache(maxsize=1)
def _transformed_json():
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from samtranslator.translator.transform import transform

    class ManagedPolicies:
        # AWS managed policies are named by fixed ARNs: no IAM call is needed.
        def load(self):
            return {}

    template = json.loads(json.dumps(load()))
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://bucket/{name}.zip"
    return json.dumps(transform(template, {}, ManagedPolicies()))


def transformed():
    """The template as SAM deploys it: samtranslator's transform, offline, each CodeUri
    replaced by an s3:// placeholder as `sam build` would."""
    return json.loads(_transformed_json())


def parameter_values(template, given):
    values = {}
    for name, spec in template["Parameters"].items():
        value = given.get(name, spec.get("Default"))
        if value is None:
            raise AssertionError(f"parameter {name} has no default: give it")
        value = str(value)
        if spec["Type"].startswith("List<") or spec["Type"] == "CommaDelimitedList":
            value = value.split(",")
        values[name] = value
    values.update({"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012",
                   "AWS::Partition": "aws", "AWS::StackName": "mirror-prod"})
    return values


class Stack:
    """The resources, outputs and rules of the transformed template for one set of values."""

    def __init__(self, given):
        template = transformed()
        unknown = set(given) - set(template["Parameters"])
        assert not unknown, f"no such parameters: {unknown}"
        self.params = parameter_values(template, given)
        self.template = template
        self.conditions = {}
        for name in template.get("Conditions", {}):
            self.condition(name)
        self.resources = self._present(template["Resources"])
        self.outputs = self._present(template.get("Outputs", {}))

    def condition(self, name):
        if name not in self.conditions:
            self.conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self.conditions[name]

    def _present(self, section):
        return {name: self.resolve(body) for name, body in section.items()
                if "Condition" not in body or self.condition(body["Condition"])}

    def value(self, node):
        """A condition's or parameter expression's value."""
        if isinstance(node, list):
            return [self.value(n) for n in node]
        if not isinstance(node, dict):
            return node
        if len(node) != 1:
            return {k: self.value(v) for k, v in node.items()}
        (fn, arg), = node.items()
        if fn == "Ref":
            return self.params.get(arg, node)
        if fn == "Condition":
            return self.condition(arg)
        if fn == "Fn::Equals":
            a, b = self.value(arg)
            return str(a) == str(b)
        if fn == "Fn::Not":
            return not self.value(arg[0])
        if fn == "Fn::And":
            return all(self.value(a) for a in arg)
        if fn == "Fn::Or":
            return any(self.value(a) for a in arg)
        if fn == "Fn::If":
            return self.value(arg[1] if self.condition(arg[0]) else arg[2])
        if fn == "Fn::Join":
            sep, items = self.value(arg)
            return sep.join(str(i) for i in items)
        if fn == "Fn::Split":
            sep, text = self.value(arg)
            if isinstance(text, dict) and isinstance(text.get("Fn::Sub"), str):
                # A list with a resource in it: "${Name}" stands for {"Ref": Name}.
                return [{"Ref": item[2:-1]} if re.fullmatch(r"\$\{[A-Za-z0-9]+\}", item) else item
                        for item in text["Fn::Sub"].split(sep)]
            return text.split(sep) if isinstance(text, str) else node
        if fn == "Fn::Select":
            index, items = self.value(arg)
            return items[int(index)]
        return {fn: self.value(arg)}

    def resolve(self, node):
        """`node` with every Fn::If decided, AWS::NoValue dropped, parameters substituted."""
        if isinstance(node, list):
            items = [self.resolve(n) for n in node]
            return [i for i in items if i is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Fn::If":
                return self.resolve(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Ref" and arg == "AWS::NoValue":
                return NO_VALUE
            if fn == "Ref" and arg in self.params:
                return self.params[arg]
            if fn in ("Fn::Split", "Fn::Join", "Fn::Select"):
                done = self.value({fn: self.resolve(arg)})
                return done
            if fn == "Fn::Sub" and isinstance(arg, str):
                return {"Fn::Sub": self._substitute(arg, {})}
            if fn == "Fn::Sub":
                text, names = arg
                names = {k: self.resolve(v) for k, v in names.items()}
                return {"Fn::Sub": self._substitute(text, names)}
        out = {}
        for key, value in node.items():
            value = self.resolve(value)
            if value is not NO_VALUE:
                out[key] = value
        return out

    def _substitute(self, text, names):
        def one(match):
            name = match.group(1)
            value = names.get(name, self.params.get(name))
            if isinstance(value, (str, int)):
                return str(value)
            if isinstance(value, list):
                return ",".join(value)
            return match.group(0)
        done = re.sub(r"\$\{([A-Za-z0-9_:.]+)\}", one, text)
        return done

    def of_type(self, kind):
        return {name: r for name, r in self.resources.items() if r["Type"] == kind}

    def alarms(self):
        return self.of_type("AWS::CloudWatch::Alarm")


def stack(**given):
    """The stack for REQUIRED plus `given`."""
    return Stack({**REQUIRED, **given})
