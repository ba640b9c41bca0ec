"""scripts/deploy-cargo-lambda, the deployment path without SAM, run for real against an
emulator of Lambda, IAM and SQS (moto's server, MIRROR_TEST_SQS_ENDPOINT, started by
scripts/test) with the AWS CLI and cargo-lambda from the project's .venv.

The functions uploaded are the workspace's own binaries (target/debug, stripped): scripts/test
builds them first.
"""

import json
import os
import re
import pathlib
import subprocess
import tempfile
import time
import unittest

import boto3

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "deploy-cargo-lambda"
FUNCTIONS = ["dm-message", "dm-conversation", "follow-edge"]
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:mirror-db-AbCdEf"


def endpoint():
    url = os.environ.get("MIRROR_TEST_SQS_ENDPOINT")
    if not url:
        raise AssertionError("MIRROR_TEST_SQS_ENDPOINT is not set: run scripts/test, which starts moto")
    return url


def aws_env():
    return {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }


def client(service):
    return boto3.client(service, endpoint_url=endpoint(), **{
        "aws_access_key_id": "test", "aws_secret_access_key": "test", "region_name": "us-east-1"})


class DeployWithCargoLambda(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.lambda_dir = tempfile.TemporaryDirectory()
        for function in FUNCTIONS + ["mirror-check"]:
            binary = ROOT / "target" / "debug" / function
            if not binary.exists():
                raise AssertionError(f"{binary} is missing: cargo build --workspace --bins first")
            (pathlib.Path(cls.lambda_dir.name) / function).mkdir()
            subprocess.run(["strip", "-o", f"{cls.lambda_dir.name}/{function}/bootstrap", str(binary)], check=True)

    @classmethod
    def tearDownClass(cls):
        cls.lambda_dir.cleanup()

    def deploy(self, stack, **settings):
        env = dict(os.environ)
        env.update(aws_env())
        env["PATH"] = f"{ROOT / '.venv' / 'bin'}:{env['PATH']}"
        env.update({
            "AWS_ENDPOINT_URL": endpoint(),
            "MIRROR_STACK": stack,
            "DATABASE_SECRET_ARN": SECRET,
            "SUBNET_IDS": "subnet-0a1b2c3d,subnet-4e5f6a7b",
            "SECURITY_GROUP_IDS": "sg-0123abcd",
            "MIRROR_DB_HOST": "mirror.cluster-abc.us-east-1.rds.amazonaws.com",
            "LAMBDA_DIR": self.lambda_dir.name,
        })
        env.update({k: str(v) for k, v in settings.items()})
        return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)

    def queue_names(self, stack):
        urls = client("sqs").list_queues(QueueNamePrefix=stack).get("QueueUrls", [])
        return sorted(url.rsplit("/", 1)[1] for url in urls)

    def mappings(self, name):
        return client("lambda").list_event_source_mappings(FunctionName=name)["EventSourceMappings"]

    def test_each_function_gets_its_queues_a_scoped_role_and_a_trigger_and_each_scheduled_task_its_schedule(self):
        stack = f"cl{int(time.time() * 1000)}"
        run = self.deploy(stack, MAX_RECEIVE_COUNT=7, RESERVE_CONCURRENCY="true", MAXIMUM_CONCURRENCY=4,
                          STATEMENT_CACHE="false", MIRROR_REDIS_URL="rediss://cache.example.internal:6379",
                          CHECK_SCHEDULE="rate(6 hours)", APPLIED_KEYS_RETENTION="2d")
        self.assertEqual(run.returncode, 0, run.stderr[-4000:])
        sqs, lam, iam = client("sqs"), client("lambda"), client("iam")
        self.assertEqual(self.queue_names(stack), sorted(f"{stack}-{f}{s}" for f in FUNCTIONS for s in ["", "-dlq"]))
        for function in FUNCTIONS:
            name = f"{stack}-{function}"
            queue_url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            dlq_url = sqs.get_queue_url(QueueName=f"{name}-dlq")["QueueUrl"]
            queue = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
            dlq = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["All"])["Attributes"]
            self.assertEqual(json.loads(queue["RedrivePolicy"]),
                             {"deadLetterTargetArn": dlq["QueueArn"], "maxReceiveCount": 7})
            self.assertEqual(queue["VisibilityTimeout"], "330")
            self.assertEqual(dlq["MessageRetentionPeriod"], "1209600")

            config = lam.get_function_configuration(FunctionName=name)
            self.assertEqual((config["Runtime"], config["Handler"], config["Timeout"], config["MemorySize"]),
                             ("provided.al2023", "bootstrap", 30, 256))
            self.assertEqual(config["VpcConfig"]["SubnetIds"], ["subnet-0a1b2c3d", "subnet-4e5f6a7b"])
            self.assertEqual(config["VpcConfig"]["SecurityGroupIds"], ["sg-0123abcd"])
            env = config["Environment"]["Variables"]
            self.assertEqual(env["DATABASE_SECRET_ARN"], SECRET)
            self.assertEqual((env["MIRROR_DLQ_URL"], env["MIRROR_SOURCE_QUEUE_URL"]), (dlq_url, queue_url))
            self.assertEqual((env["MIRROR_MIGRATE"], env["MIRROR_METRICS_NAMESPACE"]), ("false", f"RealtimeMirror/{stack}"))
            self.assertEqual(env["MIRROR_DB_HOST"], "mirror.cluster-abc.us-east-1.rds.amazonaws.com")
            self.assertEqual(env["MIRROR_STATEMENT_CACHE"], "false")
            self.assertEqual(lam.get_function_concurrency(FunctionName=name)["ReservedConcurrentExecutions"], 4)

            self.assertEqual(config["Role"], iam.get_role(RoleName=name)["Role"]["Arn"])
            policy = iam.get_role_policy(RoleName=name, PolicyName="mirror")["PolicyDocument"]
            if isinstance(policy, str):
                policy = json.loads(policy)
            resources = {st["Sid"]: st["Resource"] for st in policy["Statement"]}
            self.assertEqual(resources["OwnQueue"], queue["QueueArn"])
            self.assertEqual(resources["OwnDeadLetterQueue"], dlq["QueueArn"])
            self.assertEqual(resources["DatabaseSecret"], SECRET)
            self.assertNotIn("*", [r for sid, r in resources.items() if sid != "VpcNetworkInterfaces"])

            (mapping,) = self.mappings(name)
            self.assertEqual(mapping["EventSourceArn"], queue["QueueArn"])
            self.assertEqual(mapping["FunctionResponseTypes"], ["ReportBatchItemFailures"])
            self.assertEqual((mapping["BatchSize"], mapping["ScalingConfig"]["MaximumConcurrency"]), (10, 4))

        self.assert_the_scheduled_tasks_are_deployed_on_their_schedules_and_never_retried(stack, run)

        # Run again with other settings: everything is updated in place, nothing doubled.
        again = self.deploy(stack, MAX_RECEIVE_COUNT=7, BATCH_SIZE=100, BATCHING_WINDOW=5, MAXIMUM_CONCURRENCY=6,
                            MIRROR_REDIS_URL="rediss://cache.example.internal:6379", CHECK_SCHEDULE="off")
        self.assertEqual(again.returncode, 0, again.stderr[-4000:])
        check = f"{stack}-mirror-check"
        self.assertEqual(client("events").describe_rule(Name=check)["State"], "DISABLED")
        self.assertEqual(len(json.loads(client("lambda").get_policy(FunctionName=check)["Policy"])["Statement"]), 1)
        for function in FUNCTIONS:
            (mapping,) = self.mappings(f"{stack}-{function}")
            self.assertEqual((mapping["BatchSize"], mapping["MaximumBatchingWindowInSeconds"],
                              mapping["ScalingConfig"]["MaximumConcurrency"]), (100, 5, 6))
        self.assertEqual(len(self.queue_names(stack)), 6)

    def assert_the_scheduled_tasks_are_deployed_on_their_schedules_and_never_retried(self, stack, run):
        """mirror-check on CHECK_SCHEDULE and, with Redis, outbox-sweep every minute: never
        retried, invoked only by their rules. Part of the first test, which deploys them."""
        self.assertIn("not created here", run.stderr)
        lam, events = client("lambda"), client("events")
        check, sweep = f"{stack}-mirror-check", f"{stack}-outbox-sweep"
        config = lam.get_function_configuration(FunctionName=check)
        self.assertEqual(config["Timeout"], 900)
        env = config["Environment"]["Variables"]
        self.assertEqual((env["MIRROR_APPLIED_KEYS_RETENTION"], env["MIRROR_CHECK_BUDGET"], env["MIRROR_STREAM_MAX_AGE"]),
                         ("2d", "12m", "7d"))
        self.assertEqual(env["DATABASE_SECRET_ARN"], SECRET)
        self.assertEqual(lam.get_function_configuration(FunctionName=sweep)["Timeout"], 60)
        for function, expression, age, payload in [(check, "rate(6 hours)", 600, None),
                                                   (sweep, "rate(1 minute)", 60, {"task": "drain"})]:
            rule = events.describe_rule(Name=function)
            self.assertEqual((rule["ScheduleExpression"], rule["State"]), (expression, "ENABLED"))
            (target,) = events.list_targets_by_rule(Rule=function)["Targets"]
            self.assertEqual(target["Arn"], lam.get_function_configuration(FunctionName=function)["FunctionArn"])
            self.assertEqual(json.loads(target["Input"]) if "Input" in target else None, payload)
            invoke = lam.get_function_event_invoke_config(FunctionName=function)
            self.assertEqual((invoke["MaximumRetryAttempts"], invoke["MaximumEventAgeInSeconds"]), (0, age))
            policy = json.loads(lam.get_policy(FunctionName=function)["Policy"])
            (statement,) = policy["Statement"]
            self.assertEqual(statement["Principal"], {"Service": "events.amazonaws.com"})
            self.assertEqual(statement["Condition"]["ArnLike"]["AWS:SourceArn"], rule["Arn"])

    def test_a_dry_run_prints_every_call_and_makes_none(self):
        stack = f"dry{int(time.time() * 1000)}"
        run = self.deploy(stack, DRY_RUN=1)
        self.assertEqual(run.returncode, 0, run.stderr[-4000:])
        for function in FUNCTIONS:
            name = f"{stack}-{function}"
            self.assertIn(f"+ cargo lambda deploy {name} ", run.stderr)
            self.assertIn(f"create-event-source-mapping --function-name {name} ", run.stderr)
            self.assertIn("--function-response-types ReportBatchItemFailures --scaling-config MaximumConcurrency=5",
                          run.stderr)
            # moto keeps no RedriveAllowPolicy: the call itself is checked. Each dead-letter
            # queue admits only its own queue (printed shell-quoted, the quotes escaped).
            self.assertRegex(run.stderr, rf"set-queue-attributes --queue-url \S+/{name}-dlq .{{0,120}}RedriveAllowPolicy"
                             rf".{{0,60}}byQueue.{{0,60}}sourceQueueArns.{{0,30}}arn:aws:sqs:us-east-1:123456789012:{name}\\")
        self.assertEqual(self.queue_names(stack), [])

    def test_realtime_delivery_settings_reach_the_functions_and_plain_redis_is_refused(self):
        stack = f"rt{int(time.time() * 1000)}"
        secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:redis-token"
        run = self.deploy(stack, DRY_RUN=1, MIRROR_REDIS_URL="rediss://cache.example.internal:6379",
                          MIRROR_REDIS_AUTH_SECRET_ARN=secret, MIRROR_STREAM_MAXLEN="5000")
        self.assertEqual(run.returncode, 0, run.stderr[-4000:])
        self.assertIn("MIRROR_REDIS_URL=rediss://cache.example.internal:6379", run.stderr)
        self.assertIn(f"MIRROR_REDIS_AUTH_SECRET_ARN={secret}", run.stderr)
        self.assertIn("MIRROR_STREAM_MAXLEN=5000", run.stderr)
        # The dry run prints each call shell-quoted: the policy's quotes come escaped.
        self.assertRegex(run.stderr, r"RedisAuthSecret.{0,80}secretsmanager:GetSecretValue.{0,40}" + re.escape(secret))
        plain = self.deploy(stack, MIRROR_REDIS_URL="redis://cache.example.internal:6379")
        self.assertEqual(plain.returncode, 2)
        self.assertIn("must be rediss://", plain.stderr)
        self.assertEqual(self.queue_names(stack), [])

    def test_settings_aws_refuses_are_refused_before_any_call(self):
        stack = f"bad{int(time.time() * 1000)}"
        run = self.deploy(stack, BATCH_SIZE=100)
        self.assertEqual(run.returncode, 2)
        self.assertIn("BATCH_SIZE 100 needs BATCHING_WINDOW of at least 1", run.stderr)
        missing = self.deploy(stack, DATABASE_SECRET_ARN="")
        self.assertEqual(missing.returncode, 2)
        self.assertIn("DATABASE_SECRET_ARN is not set", missing.stderr)
        self.assertEqual(self.queue_names(stack), [])


if __name__ == "__main__":
    unittest.main()
