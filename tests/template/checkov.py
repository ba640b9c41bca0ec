"""Checkov on the stacks template.yaml makes (stack.py: SAM's transform, then the conditions
of each mode decided), so that every resource a mode creates is checked as it is created.

Run by scripts/test: .venv/bin/python tests/template/checkov.py. Fails on any failed check
not in checkov-skips.txt, and on a skip that no mode needs any more.
"""

import json
import pathlib
import subprocess
import sys
import tempfile

from stack import ELASTICACHE, EXISTING_REDIS, VPC, stack

HERE = pathlib.Path(__file__).resolve().parent
MODES = {
    "default": {},
    "vpc-endpoints": {**VPC, "EndpointSubnetIds": "subnet-0a1b2c3d"},
    "elasticache": {**ELASTICACHE, "EndpointSubnetIds": "subnet-0a1b2c3d", "AlarmEmail": "oncall@example.com",
                    "StreamConsumerSecurityGroupId": "sg-0c0c0c0c"},
    "existing-redis-no-endpoints": {**EXISTING_REDIS, **VPC, "CreateVpcEndpoints": "false",
                                    "AlarmTopicArn": "arn:aws:sns:us-east-1:123456789012:oncall"},
}


def skips():
    lines = (HERE / "checkov-skips.txt").read_text().splitlines()
    return {line.split()[0]: line.split(None, 1)[1] for line in lines if line.strip() and not line.startswith("#")}


def main():
    skipped = skips()
    checkov = HERE.parents[1] / ".venv-checkov" / "bin" / "checkov"
    if not checkov.exists():
        sys.exit(f"{checkov} is missing: scripts/dev-tools installs it")
    failed, used = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        for mode, params in MODES.items():
            s = stack(**params)
            path = pathlib.Path(tmp) / f"{mode}.json"
            path.write_text(json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": s.resources}))
            run = subprocess.run([str(checkov), "-f", str(path), "--framework", "cloudformation", "--skip-download",
                                  "--output", "json", "--quiet"], capture_output=True, text=True)
            if run.returncode not in (0, 1):
                sys.exit(f"checkov failed to run on mode {mode}: {run.stderr[-2000:]}")
            report = json.loads(run.stdout) if run.stdout.strip() else {}
            results = report.get("results", {})
            summary = report.get("summary", {})
            if summary.get("parsing_errors"):
                sys.exit(f"checkov could not parse the stack of mode {mode}")
            for check in results.get("failed_checks", []):
                if check["check_id"] in skipped:
                    used.add(check["check_id"])
                else:
                    failed.append(f"{mode}: {check['check_id']} {check['check_name']} - {check['resource']}")
            print(f"checkov: mode {mode}: {len(s.resources)} resources, {summary.get('passed', 0)} checks passed, "
                  f"{summary.get('failed', 0)} failed, of which {len(resources_failed(results, skipped))} "
                  "are skipped (checkov-skips.txt)", flush=True)
    unused = set(skipped) - used
    for line in failed:
        print(f"checkov: FAILED {line}", file=sys.stderr)
    for check in sorted(unused):
        print(f"checkov: {check} is skipped but fails on no mode: take it out of checkov-skips.txt", file=sys.stderr)
    sys.exit(1 if failed or unused else 0)


def resources_failed(results, skipped):
    return [c for c in results.get("failed_checks", []) if c["check_id"] in skipped]


if __name__ == "__main__":
    main()
