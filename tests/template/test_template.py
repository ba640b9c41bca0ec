"""Key properties of template.yaml, so that a careless edit fails a test.

Run by scripts/test with the project's .venv (cfn-lint's decoder reads the intrinsic
functions): .venv/bin/python -m unittest discover -s tests/template -v
"""

import json
import re
import unittest

from stack import TEMPLATE, load, transformed

FAMILIES = {"DmMessage": "dm-message", "DmConversation": "dm-conversation", "FollowEdge": "follow-edge"}
# The functions' metrics namespace, one per stack (MIRROR_METRICS_NAMESPACE).
NAMESPACE = {"Fn::Sub": "RealtimeMirror/${AWS::StackName}"}


class Template(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.t = load()
        cls.r = cls.t["Resources"]
        cls.globals = cls.t["Globals"]["Function"]

    def function(self, family):
        return self.r[f"{family}Function"]

    def test_each_family_has_a_queue_a_dead_letter_queue_and_a_function(self):
        for family, binary in FAMILIES.items():
            self.assertEqual(self.r[f"{family}Queue"]["Type"], "AWS::SQS::Queue")
            self.assertEqual(self.r[f"{family}DeadLetterQueue"]["Type"], "AWS::SQS::Queue")
            fn = self.function(family)
            self.assertEqual(fn["Type"], "AWS::Serverless::Function")
            self.assertEqual(fn["Metadata"]["BuildMethod"], "rust-cargolambda")
            self.assertEqual(fn["Metadata"]["BuildProperties"]["Binary"], binary)
        self.assertEqual(self.globals["Runtime"], "provided.al2023")
        self.assertEqual(self.globals["Handler"], "bootstrap")

    def test_redrive_to_the_dead_letter_queue_after_max_receive_count_receives_10_by_default(self):
        self.assertEqual(self.t["Parameters"]["MaxReceiveCount"]["Default"], 10)
        for family in FAMILIES:
            redrive = self.r[f"{family}Queue"]["Properties"]["RedrivePolicy"]
            self.assertEqual(redrive["maxReceiveCount"], {"Ref": "MaxReceiveCount"})
            self.assertEqual(redrive["deadLetterTargetArn"], {"Fn::GetAtt": [f"{family}DeadLetterQueue", "Arn"]})

    def test_visibility_timeout_is_at_least_six_function_timeouts(self):
        for family in FAMILIES:
            timeout = self.function(family)["Properties"].get("Timeout", self.globals["Timeout"])
            self.assertGreaterEqual(self.r[f"{family}Queue"]["Properties"]["VisibilityTimeout"], 6 * timeout)

    def test_queues_are_encrypted_and_dead_letters_kept_14_days(self):
        for family in FAMILIES:
            for name in (f"{family}Queue", f"{family}DeadLetterQueue"):
                self.assertIs(self.r[name]["Properties"]["SqsManagedSseEnabled"], True, name)
            self.assertEqual(self.r[f"{family}DeadLetterQueue"]["Properties"]["MessageRetentionPeriod"], 14 * 24 * 3600)

    def test_queue_events_report_batch_item_failures_under_a_concurrency_cap(self):
        for family in FAMILIES:
            event = self.function(family)["Properties"]["Events"]["Queue"]
            self.assertEqual(event["Type"], "SQS")
            props = event["Properties"]
            self.assertEqual(props["Queue"], {"Fn::GetAtt": [f"{family}Queue", "Arn"]})
            self.assertEqual(props["FunctionResponseTypes"], ["ReportBatchItemFailures"])
            self.assertEqual(props["ScalingConfig"]["MaximumConcurrency"], {"Ref": "MaximumConcurrency"})
            self.assertEqual(props["Enabled"], {"Fn::If": ["MirrorOn", True, False]})
        self.assertEqual(self.t["Parameters"]["MaximumConcurrency"]["Default"], 5)

    def test_each_function_may_read_only_its_queue_send_only_to_its_dlq_and_read_only_its_secret(self):
        """Checked on what SAM generates (samtranslator, offline), not only on what is written."""
        generated = transformed()
        resources = generated["Resources"]
        roles = {name for name, r in resources.items() if r["Type"] == "AWS::IAM::Role"}
        self.assertEqual(roles, {f"{family}FunctionRole" for family in FAMILIES} | {"MirrorCheckFunctionRole"})
        for family in FAMILIES:
            function = resources[f"{family}Function"]["Properties"]
            self.assertEqual(function["Role"], {"Fn::GetAtt": [f"{family}FunctionRole", "Arn"]})
            role = resources[f"{family}FunctionRole"]["Properties"]
            # No managed policy: SAM's SQS event would attach AWSLambdaSQSQueueExecutionRole
            # (every queue) and AWSLambdaBasicExecutionRole (every log group).
            self.assertNotIn("ManagedPolicyArns", role)
            statements = {}
            for policy in role["Policies"]:
                if "Fn::If" in policy:
                    policy = policy["Fn::If"][1]
                for statement in policy["PolicyDocument"]["Statement"]:
                    statements[statement["Sid"]] = (statement["Action"], statement["Resource"])
            self.assertEqual(statements, {
                "OwnQueue": (["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                              "sqs:GetQueueAttributes"], {"Fn::GetAtt": [f"{family}Queue", "Arn"]}),
                "OwnDeadLetterQueue": (["sqs:SendMessage", "sqs:GetQueueAttributes"],
                                       {"Fn::GetAtt": [f"{family}DeadLetterQueue", "Arn"]}),
                "DatabaseSecret": ("secretsmanager:GetSecretValue", {"Ref": "DatabaseSecretArn"}),
                "OwnLogGroup": (["logs:CreateLogStream", "logs:PutLogEvents"],
                                {"Fn::GetAtt": [f"{family}LogGroup", "Arn"]}),
                "VpcNetworkInterfaces": (["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces",
                                          "ec2:DescribeSubnets", "ec2:DeleteNetworkInterface",
                                          "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"], "*"),
                "DecryptTheSecretThroughSecretsManager": ("kms:Decrypt", {"Ref": "SecretKmsKeyArn"}),
                "RedisAuthSecret": ("secretsmanager:GetSecretValue", {"Ref": "RedisAuthSecretArn"}),
                "DecryptTheRedisSecretThroughSecretsManager": ("kms:Decrypt", {"Ref": "RedisSecretKmsKeyArn"}),
            })
            self.assertEqual(function["LoggingConfig"]["LogGroup"], {"Ref": f"{family}LogGroup"})
            self.assertEqual(resources[f"{family}LogGroup"]["Properties"]["RetentionInDays"],
                             {"Ref": "LogRetentionInDays"})
            mapping = resources[f"{family}FunctionQueue"]
            self.assertEqual(mapping["Type"], "AWS::Lambda::EventSourceMapping")
            self.assertEqual(mapping["Properties"]["EventSourceArn"], {"Fn::GetAtt": [f"{family}Queue", "Arn"]})
            self.assertEqual(mapping["Properties"]["FunctionResponseTypes"], ["ReportBatchItemFailures"])

    def test_realtime_delivery_is_off_by_default_tls_only_and_an_elasticache_option_admits_only_the_functions(self):
        params = self.t["Parameters"]
        self.assertEqual(params["RealtimeDelivery"]["Default"], "off")
        self.assertEqual(params["RealtimeDelivery"]["AllowedValues"], ["off", "existing", "elasticache"])
        # No credentials and no plain redis:// in the template: rediss:// only, token from a secret.
        pattern = re.compile(params["RedisUrl"]["AllowedPattern"])
        self.assertTrue(pattern.match("rediss://cache.example.com:6379"))
        self.assertFalse(pattern.match("redis://cache.example.com:6379"))
        self.assertFalse(pattern.match("rediss://:token@cache.example.com:6379"))
        env = self.globals["Environment"]["Variables"]
        self.assertEqual(env["MIRROR_REDIS_URL"]["Fn::If"][0], "CreateCache")
        self.assertEqual(env["MIRROR_REDIS_URL"]["Fn::If"][1],
                         {"Fn::Sub": "rediss://${Cache.PrimaryEndPoint.Address}:${Cache.PrimaryEndPoint.Port}"})
        self.assertEqual(env["MIRROR_REDIS_URL"]["Fn::If"][2], {"Fn::If": ["RealtimeOn", {"Ref": "RedisUrl"}, ""]})
        self.assertEqual(env["MIRROR_REDIS_AUTH_SECRET_ARN"], {"Fn::If": ["RealtimeOn", {"Ref": "RedisAuthSecretArn"}, ""]})
        self.assertEqual(env["MIRROR_STREAM_MAXLEN"], {"Ref": "StreamMaxLen"})
        cache = self.r["Cache"]
        self.assertEqual(cache["Condition"], "CreateCache")
        self.assertTrue(cache["Properties"]["TransitEncryptionEnabled"])
        self.assertIn("resolve:secretsmanager:${RedisAuthSecretArn}", json.dumps(cache["Properties"]["AuthToken"]))
        ingress = self.r["CacheSecurityGroup"]["Properties"]["SecurityGroupIngress"][:1]
        self.assertEqual((ingress[0]["FromPort"], ingress[0]["ToPort"]), (6379, 6379))
        self.assertEqual(ingress[0]["SourceSecurityGroupId"], {"Ref": "FunctionSecurityGroup"})
        self.assertNotIn("CidrIp", ingress[0])
        self.assertEqual(self.r["OutboxAgeAlarm"]["Condition"], "RealtimeOn")
        rules = self.t["Rules"]
        self.assertIn("ElastiCacheNeedsAVpcAndAnAuthToken", rules)
        self.assertIn("ExistingRedisNeedsItsUrl", rules)

    def test_with_realtime_delivery_on_the_outbox_is_swept_every_minute_and_its_age_alarmed_on(self):
        """Leftovers are delivered without traffic, and the alarm's metric comes every minute
        (the functions report it only when they run). Checked on SAM's output."""
        generated = transformed()["Resources"]
        rules = [r["Properties"] for r in generated.values() if r["Type"] == "AWS::Events::Rule"
                 and r["Properties"]["Description"] == "realtime-mirror outbox sweep"]
        self.assertEqual(len(rules), 1)
        sweep = rules[0]
        self.assertEqual(sweep["ScheduleExpression"], "rate(1 minute)")
        self.assertEqual(generated["OutboxSweepFunctionSchedule"]["Condition"], "RealtimeOn")
        self.assertEqual(sweep["Targets"][0]["Arn"], {"Fn::GetAtt": ["OutboxSweepFunction", "Arn"]})
        self.assertEqual(json.loads(sweep["Targets"][0]["Input"]), {"task": "drain"})
        alarm = self.r["OutboxAgeAlarm"]["Properties"]
        self.assertEqual((alarm["Namespace"], alarm["MetricName"], alarm["Statistic"]),
                         (NAMESPACE, "outbox_backlog_age_s", "Maximum"))
        self.assertEqual(alarm["Dimensions"], [{"Name": "Function", "Value": "mirror-check"}])
        self.assertEqual(alarm["Threshold"], {"Ref": "OutboxAgeAlarmSeconds"})
        self.assertEqual(alarm["Period"], 60)
        self.assertEqual(alarm["TreatMissingData"], "ignore")
        # The sweep reaches Redis as the functions do: its URL, its token's secret, its VPC.
        env = self.globals["Environment"]["Variables"]
        self.assertIn("MIRROR_REDIS_URL", env)
        role = self.r["MirrorCheckFunctionRole"]["Properties"]["Policies"]
        redis_policies = [p for p in role if isinstance(p, dict) and "Fn::If" in p
                          and p["Fn::If"][0] == "HasRedisSecret"]
        self.assertEqual(len(redis_policies), 1)

    def test_the_scheduled_check_prunes_applied_keys_older_than_the_retention_parameter(self):
        """The ledger of applied keys stays bounded without an operator (docs/contract.md)."""
        param = self.t["Parameters"]["AppliedKeysRetention"]
        self.assertEqual(param["Default"], "1d")
        pattern = re.compile(param["AllowedPattern"])
        for good in ("off", "14d", "36h", "90m"):
            self.assertTrue(pattern.match(good), good)
        for bad in ("14 days", "", "5s"):
            self.assertFalse(pattern.match(bad), bad)
        variables = self.r["MirrorCheckFunction"]["Properties"]["Environment"]["Variables"]
        self.assertEqual(variables["MIRROR_APPLIED_KEYS_RETENTION"], {"Ref": "AppliedKeysRetention"})

    def test_the_scheduled_self_check_runs_daily_by_default_reads_only_the_secret_and_alarms_on_any_inconsistency(self):
        """Checked on SAM's output too: the schedule becomes an EventBridge rule, disabled by
        CheckSchedule=off."""
        self.assertEqual(self.t["Parameters"]["CheckSchedule"]["Default"], "rate(1 day)")
        pattern = re.compile(self.t["Parameters"]["CheckSchedule"]["AllowedPattern"])
        for good in ("off", "rate(6 hours)", "cron(0 3 * * ? *)"):
            self.assertTrue(pattern.match(good), good)
        self.assertFalse(pattern.match("daily"))
        fn = self.r["MirrorCheckFunction"]
        self.assertEqual(fn["Metadata"]["BuildProperties"]["Binary"], "mirror-check")
        self.assertEqual(fn["Properties"]["Environment"]["Variables"]["MIRROR_CHECK_STUB_AGE"], {"Ref": "CheckStubAge"})
        generated = transformed()["Resources"]
        rules = [r for r in generated.values() if r["Type"] == "AWS::Events::Rule"
                 and r["Properties"]["Description"] == "realtime-mirror self-check"]
        self.assertEqual(len(rules), 1)
        props = rules[0]["Properties"]
        self.assertNotIn("Input", props["Targets"][0])
        self.assertEqual(props["ScheduleExpression"], {"Fn::If": ["CheckOn", {"Ref": "CheckSchedule"}, "rate(1 day)"]})
        self.assertEqual(props["State"], {"Fn::If": ["CheckOn", "ENABLED", "DISABLED"]})
        self.assertEqual(props["Targets"][0]["Arn"], {"Fn::GetAtt": ["MirrorCheckFunction", "Arn"]})
        role = generated["MirrorCheckFunctionRole"]["Properties"]
        self.assertNotIn("ManagedPolicyArns", role)
        sids = {st["Sid"]: st["Resource"] for st in role["Policies"][0]["PolicyDocument"]["Statement"]}
        self.assertEqual(sids, {
            "DatabaseSecret": {"Ref": "DatabaseSecretArn"},
            "OwnLogGroup": [{"Fn::GetAtt": ["MirrorCheckLogGroup", "Arn"]},
                            {"Fn::If": ["RealtimeOn", {"Fn::GetAtt": ["OutboxSweepLogGroup", "Arn"]}, {"Ref": "AWS::NoValue"}]}],
            "VpcNetworkInterfaces": "*",
        })
        alarm = self.r["MirrorCheckInconsistentAlarm"]["Properties"]
        self.assertEqual(alarm["Namespace"], NAMESPACE)
        self.assertEqual((alarm["MetricName"], alarm["Threshold"], alarm["ComparisonOperator"]),
                         ("inconsistent", 0, "GreaterThanThreshold"))
        self.assertEqual(alarm["Dimensions"], [{"Name": "Function", "Value": "mirror-check"}])
        self.assertEqual(self.r["MirrorCheckErrorsAlarm"]["Properties"]["MetricName"], "Errors")

    def test_credentials_come_from_secrets_manager_never_from_the_template(self):
        variables = dict(self.globals["Environment"]["Variables"])
        for family in FAMILIES:
            variables.update(self.function(family)["Properties"]["Environment"]["Variables"])
        self.assertEqual(variables["DATABASE_SECRET_ARN"], {"Ref": "DatabaseSecretArn"})
        self.assertNotIn("DATABASE_URL", variables)
        # No URL with user:password@, no password value anywhere.
        text = TEMPLATE.read_text()
        self.assertIsNone(re.search(r"://[^\s/@]+:[^\s/@]+@", text), "a URL with credentials")
        self.assertIsNone(re.search(r"(?i)password\s*[:=]\s*\S", text), "a password value")

    def test_alarms_cover_p95_latency_backlog_and_dead_letters(self):
        for family, binary in FAMILIES.items():
            latency = self.r[f"{family}LatencyAlarm"]["Properties"]
            self.assertEqual((latency["Namespace"], latency["MetricName"]), (NAMESPACE, "sql_mirror_latency_ms"))
            self.assertEqual(latency["ExtendedStatistic"], "p95")
            self.assertEqual(latency["Threshold"], {"Ref": "LatencyAlarmMilliseconds"})
            self.assertEqual(latency["Period"] * latency["EvaluationPeriods"], 15 * 60)
            self.assertEqual(latency["Dimensions"][0], {"Name": "Function", "Value": binary})
            backlog = self.r[f"{family}BacklogAlarm"]["Properties"]
            self.assertEqual((backlog["MetricName"], backlog["Threshold"]),
                             ("ApproximateNumberOfMessagesVisible", {"Ref": "BacklogAlarmMessages"}))
            dead = self.r[f"{family}DeadLetterAlarm"]["Properties"]
            self.assertEqual(dead["Dimensions"][0]["Value"], {"Fn::GetAtt": [f"{family}DeadLetterQueue", "QueueName"]})
            self.assertEqual((dead["Threshold"], dead["ComparisonOperator"]), (0, "GreaterThanThreshold"))

    def test_a_dashboard_charts_p50_and_p95_latency_backlog_and_dead_letters(self):
        body = self.r["MirrorDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        dashboard = json.loads(body)
        metrics = [m for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])]
        stats = {m[-1].get("stat") for m in metrics if m[1] == "sql_mirror_latency_ms"}
        self.assertEqual(stats, {"p50", "p95"})
        for family, binary in FAMILIES.items():
            self.assertTrue(any(binary in m for m in metrics if m[1] == "sql_mirror_latency_ms"), binary)
            self.assertIn(f"${{{family}DeadLetterQueue.QueueName}}", body)
            self.assertIn(f"${{{family}Queue.QueueName}}", body)

    def test_outputs_give_every_queue_url(self):
        for family in FAMILIES:
            self.assertEqual(self.t["Outputs"][f"{family}QueueUrl"]["Value"], {"Ref": f"{family}Queue"})
            self.assertEqual(self.t["Outputs"][f"{family}DeadLetterQueueUrl"]["Value"], {"Ref": f"{family}DeadLetterQueue"})

    def test_dead_letter_queues_outlive_the_stack(self):
        for family in FAMILIES:
            dlq = self.r[f"{family}DeadLetterQueue"]
            self.assertEqual(dlq["DeletionPolicy"], "Retain")
            self.assertEqual(dlq["UpdateReplacePolicy"], "Retain")

    def test_the_endpoint_comes_from_parameters_and_migrations_run_at_deploy_time(self):
        env = self.globals["Environment"]["Variables"]
        for variable, parameter in [("MIRROR_DB_HOST", "DatabaseHost"), ("MIRROR_DB_PORT", "DatabasePort"),
                                    ("MIRROR_DB_NAME", "DatabaseName"), ("MIRROR_STATEMENT_TIMEOUT", "StatementTimeout")]:
            self.assertEqual(env[variable], {"Ref": parameter})
        self.assertEqual(env["MIRROR_MIGRATE"], "false")

    def test_the_statement_timeout_and_deadline_margin_fit_in_the_function_timeout(self):
        env = self.globals["Environment"]["Variables"]
        default = self.t["Parameters"]["StatementTimeout"]["Default"]
        self.assertRegex(default, r"^[0-9]+s$")
        margin = env["MIRROR_DEADLINE_MARGIN"]
        self.assertLess(int(default[:-1]) + int(margin[:-1]), self.globals["Timeout"])

    def test_no_batch_over_10_without_a_window_and_the_window_fits_the_visibility_timeout(self):
        params = self.t["Parameters"]
        self.assertEqual(params["BatchSize"]["Default"], 10)
        self.assertEqual(params["MaximumBatchingWindowInSeconds"]["Default"], 0)
        rule = self.t["Rules"]["BatchOver10NeedsABatchingWindow"]
        self.assertEqual(rule["RuleCondition"], {"Fn::Equals": [{"Ref": "MaximumBatchingWindowInSeconds"}, "0"]})
        allowed = rule["Assertions"][0]["Assert"]["Fn::Contains"][0]
        self.assertEqual(allowed, [str(n) for n in range(1, 11)])
        for family in FAMILIES:
            visibility = self.r[f"{family}Queue"]["Properties"]["VisibilityTimeout"]
            self.assertGreaterEqual(visibility, self.globals["Timeout"] + params["MaximumBatchingWindowInSeconds"]["MaxValue"])


    def test_alarms_cover_queue_age_old_dead_letters_failed_records_errors_and_throttles_with_ok_actions(self):
        for family, binary in FAMILIES.items():
            expected = {
                f"{family}QueueAgeAlarm": ("AWS/SQS", "ApproximateAgeOfOldestMessage", f"{family}Queue"),
                f"{family}DeadLetterAgeAlarm": ("AWS/SQS", "ApproximateAgeOfOldestMessage", f"{family}DeadLetterQueue"),
                f"{family}FailedAlarm": (NAMESPACE, "failed", None),
                f"{family}ErrorsAlarm": ("AWS/Lambda", "Errors", None),
                f"{family}ThrottlesAlarm": ("AWS/Lambda", "Throttles", None),
            }
            for name, (namespace, metric, queue) in expected.items():
                props = self.r[name]["Properties"]
                self.assertEqual((props["Namespace"], props["MetricName"]), (namespace, metric), name)
                if queue:
                    self.assertEqual(props["Dimensions"][0]["Value"], {"Fn::GetAtt": [queue, "QueueName"]})
                if namespace == "AWS/Lambda":
                    self.assertEqual(props["Dimensions"][0]["Value"], {"Ref": f"{family}Function"})
            # A dead letter keeps its first enqueue time: alarm well before 14 days.
            self.assertLess(self.r[f"{family}DeadLetterAgeAlarm"]["Properties"]["Threshold"], 14 * 86400)
        topic = [{"Fn::If": ["HasAlarmTopic", {"Ref": "AlarmTopicArn"}, {"Ref": "AlarmTopic"}]}]
        for name, resource in self.r.items():
            if resource["Type"] == "AWS::CloudWatch::Alarm":
                self.assertEqual(resource["Properties"]["OKActions"], topic, name)
                self.assertEqual(resource["Properties"]["AlarmActions"], topic, name)


    def test_an_operator_policy_reaches_only_this_stacks_queues_and_is_an_output(self):
        statements = {st["Sid"]: st for st in self.r["OperatorPolicy"]["Properties"]["PolicyDocument"]["Statement"]}
        self.assertEqual(set(statements), {"DeadLetterQueues", "SourceQueues"})
        self.assertEqual(statements["DeadLetterQueues"]["Resource"],
                         [{"Fn::GetAtt": [f"{family}DeadLetterQueue", "Arn"]} for family in FAMILIES])
        self.assertIn("sqs:PurgeQueue", statements["DeadLetterQueues"]["Action"])
        self.assertIn("sqs:StartMessageMoveTask", statements["DeadLetterQueues"]["Action"])
        self.assertEqual(statements["SourceQueues"]["Resource"],
                         [{"Fn::GetAtt": [f"{family}Queue", "Arn"]} for family in FAMILIES])
        self.assertNotIn("sqs:PurgeQueue", statements["SourceQueues"]["Action"])
        outputs = self.t["Outputs"]
        self.assertEqual(outputs["OperatorPolicyArn"]["Value"], {"Ref": "OperatorPolicy"})
        for family in FAMILIES:
            self.assertEqual(outputs[f"{family}FunctionName"]["Value"], {"Ref": f"{family}Function"})
            self.assertEqual(outputs[f"{family}DeadLetterQueueArn"]["Value"],
                             {"Fn::GetAtt": [f"{family}DeadLetterQueue", "Arn"]})

    def test_metrics_and_alarms_of_two_stacks_stay_apart_and_every_alarm_is_named(self):
        env = self.globals["Environment"]["Variables"]
        self.assertEqual(env["MIRROR_METRICS_NAMESPACE"], NAMESPACE)
        body = self.r["MirrorDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        dashboard = json.loads(body)
        namespaces = {m[0] for w in dashboard["widgets"] for m in w["properties"].get("metrics", [])
                      if not m[0].startswith("AWS/") and m[0] != "..."}
        self.assertEqual(namespaces, {"RealtimeMirror/${AWS::StackName}"})
        for name, resource in self.r.items():
            if resource["Type"] == "AWS::CloudWatch::Alarm":
                props = resource["Properties"]
                self.assertIn("${AWS::StackName}", props["AlarmName"]["Fn::Sub"], name)
                namespaces = [props["Namespace"]] if "Namespace" in props else [
                    q["MetricStat"]["Metric"]["Namespace"] for q in props["Metrics"] if "MetricStat" in q]
                for namespace in namespaces:
                    self.assertTrue(namespace == NAMESPACE or namespace.startswith("AWS/"), f"{name}: {namespace}")
        for parameter, value in self.t["Parameters"].items():
            self.assertTrue(value.get("Description"), f"parameter {parameter} is described")

    def test_an_optional_vpc_id_creates_secrets_manager_and_sqs_endpoints_reachable_from_the_functions(self):
        self.assertEqual(self.t["Parameters"]["VpcId"]["Default"], "")
        self.assertEqual(self.t["Conditions"]["CreateEndpoints"], {"Fn::And": [
            {"Condition": "HasVpc"}, {"Fn::Equals": [{"Ref": "CreateVpcEndpoints"}, "true"]}]})
        for name, service in [("SecretsManagerEndpoint", "secretsmanager"), ("SqsEndpoint", "sqs")]:
            endpoint = self.r[name]
            self.assertEqual(endpoint["Condition"], "CreateEndpoints")
            props = endpoint["Properties"]
            self.assertEqual(props["ServiceName"], {"Fn::Sub": f"com.amazonaws.${{AWS::Region}}.{service}"})
            self.assertEqual((props["VpcEndpointType"], props["PrivateDnsEnabled"]), ("Interface", True))
            self.assertEqual(props["SubnetIds"], {"Ref": "EndpointSubnetIds"})
            self.assertEqual(props["SecurityGroupIds"], [{"Ref": "EndpointSecurityGroup"}])
        ingress = self.r["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
        self.assertEqual([(i["IpProtocol"], i["FromPort"], i["ToPort"], i["SourceSecurityGroupId"]) for i in ingress],
                         [("tcp", 443, 443, {"Ref": "FunctionSecurityGroup"})])
        # SAM's output: every function carries the stack's group only when the endpoints exist.
        out = transformed()["Resources"]
        for family in FAMILIES:
            groups = out[f"{family}Function"]["Properties"]["VpcConfig"]["SecurityGroupIds"]
            when, with_endpoints, without = groups["Fn::If"]
            self.assertEqual(when, "HasVpc")
            self.assertIn("${FunctionSecurityGroup}", json.dumps(with_endpoints))
            self.assertEqual(without, {"Fn::Split": [",", {"Ref": "SecurityGroupIds"}]})

    def test_reserved_concurrency_when_chosen_equals_the_maximum_concurrency(self):
        out = transformed()["Resources"]
        for family in FAMILIES:
            self.assertEqual(out[f"{family}Function"]["Properties"]["ReservedConcurrentExecutions"],
                             {"Fn::If": ["ReserveOn", {"Ref": "MaximumConcurrency"}, {"Ref": "AWS::NoValue"}]})
            mapping = next(r for r in out.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"
                           and r["Properties"]["FunctionName"] == {"Ref": f"{family}Function"})
            self.assertEqual(mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"], {"Ref": "MaximumConcurrency"})
        self.assertEqual(self.t["Parameters"]["ReserveConcurrency"]["Default"], "false")

    def test_chosen_sns_topics_and_eventbridge_rules_may_send_to_the_queues_and_nothing_else(self):
        policy = self.r["ProducerQueuePolicy"]
        self.assertEqual(policy["Condition"], "HasProducers")
        self.assertEqual(policy["Properties"]["Queues"], [{"Ref": f"{family}Queue"} for family in FAMILIES])
        (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
        self.assertEqual(statement["Action"], "sqs:SendMessage")
        self.assertEqual(statement["Principal"], {"Service": ["sns.amazonaws.com", "events.amazonaws.com"]})
        self.assertEqual(statement["Condition"], {"ArnEquals": {"aws:SourceArn": {"Ref": "ProducerSourceArns"}}})
        self.assertEqual(statement["Resource"], [{"Fn::GetAtt": [f"{family}Queue", "Arn"]} for family in FAMILIES])


if __name__ == "__main__":
    unittest.main()
