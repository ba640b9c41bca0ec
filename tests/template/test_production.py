"""What a stack deployed from template.yaml is, in each mode: properties of the stack
CloudFormation would create from SAM's transform for given parameter values (stack.py),
one test per rule of docs/deploying.md's "Production checklist".

Run by scripts/test: .venv/bin/python -m unittest discover -s tests/template -v
"""

import json
import re
import unittest

from stack import ELASTICACHE, EXISTING_REDIS, REDIS_SECRET, VPC, load, stack

QUEUE_FUNCTIONS = {"DmMessage": "dm-message", "DmConversation": "dm-conversation", "FollowEdge": "follow-edge"}
TOPIC = "arn:aws:sns:us-east-1:123456789012:oncall"


def statements(role):
    return [st for policy in role["Properties"]["Policies"] for st in policy["PolicyDocument"]["Statement"]]


def egress_of(s, group):
    """Every egress rule of the security group `group`: inline, and separate resources."""
    rules = list(s.resources[group]["Properties"].get("SecurityGroupEgress", []))
    for r in s.of_type("AWS::EC2::SecurityGroupEgress").values():
        if r["Properties"]["GroupId"] in ({"Ref": group}, {"Fn::GetAtt": [group, "GroupId"]}):
            rules.append(r["Properties"])
    return rules


class Network(unittest.TestCase):
    def test_vpc_endpoints_are_a_choice_of_their_own(self):
        with_endpoints = stack(**VPC)
        self.assertEqual(len(with_endpoints.of_type("AWS::EC2::VPCEndpoint")), 2)
        # A VPC that has its own private-DNS endpoints: the stack's VPC resources (the cache,
        # the functions' group) without endpoints of its own.
        without = stack(**ELASTICACHE, CreateVpcEndpoints="false")
        self.assertEqual(without.of_type("AWS::EC2::VPCEndpoint"), {})
        self.assertIn("FunctionSecurityGroup", without.resources)
        self.assertIn("Cache", without.resources)
        self.assertNotIn("EndpointSecurityGroup", without.resources)

    def test_endpoints_take_their_own_subnets_one_per_zone_and_a_rule_requires_them(self):
        s = stack(**VPC, EndpointSubnetIds="subnet-0a1b2c3d")
        for endpoint in s.of_type("AWS::EC2::VPCEndpoint").values():
            self.assertEqual(endpoint["Properties"]["SubnetIds"], ["subnet-0a1b2c3d"])
        rule = load()["Rules"]["EndpointsNeedOneSubnetPerZone"]
        self.assertEqual(rule["RuleCondition"], {"Fn::And": [
            {"Fn::Not": [{"Fn::Equals": [{"Ref": "VpcId"}, ""]}]},
            {"Fn::Equals": [{"Ref": "CreateVpcEndpoints"}, "true"]}]})
        (assertion,) = rule["Assertions"]
        self.assertEqual(assertion["Assert"], {"Fn::Not": [{"Fn::Contains": [{"Ref": "EndpointSubnetIds"}, ""]}]})
        self.assertIn("one subnet per Availability Zone", assertion["AssertDescription"])

    def test_a_function_has_at_most_five_security_groups(self):
        param = load()["Parameters"]["SecurityGroupIds"]
        pattern = re.compile(param["AllowedPattern"])
        four = ",".join(f"sg-0123abc{i}" for i in range(4))
        self.assertTrue(pattern.fullmatch(four))
        self.assertFalse(pattern.fullmatch(four + ",sg-0123abc9"))
        self.assertIn("at most 4", param["ConstraintDescription"])
        s = stack(**VPC, SecurityGroupIds=four)
        for name, fn in s.of_type("AWS::Lambda::Function").items():
            groups = fn["Properties"]["VpcConfig"]["SecurityGroupIds"]
            self.assertLessEqual(len(groups), 5, name)
            self.assertIn({"Ref": "FunctionSecurityGroup"}, groups, name)

    def test_function_egress_is_only_https_postgres_and_redis(self):
        for given in ({**VPC}, {**ELASTICACHE}, {**EXISTING_REDIS, **VPC}, {**ELASTICACHE, "CreateVpcEndpoints": "false",
                                                 "DatabaseSecurityGroupId": "sg-0dbdbdbd", "DatabasePort": "6432"}):
            s = stack(**given)
            rules = egress_of(s, "FunctionSecurityGroup")
            ports = sorted((r["IpProtocol"], int(r["FromPort"]), int(r["ToPort"])) for r in rules)
            expected = [("tcp", 443, 443), ("tcp", int(given.get("DatabasePort", 5432)), int(given.get("DatabasePort", 5432)))]
            if given.get("RealtimeDelivery"):
                expected.append(("tcp", 6379, 6379))
            self.assertEqual(ports, sorted(expected), given)
            for r in rules:
                port = int(r["FromPort"])
                if port == 6379 and s.condition("CreateCache"):
                    self.assertEqual(r["DestinationSecurityGroupId"], {"Fn::GetAtt": ["CacheSecurityGroup", "GroupId"]})
                if port == 443 and s.condition("CreateEndpoints"):
                    self.assertEqual(r["DestinationSecurityGroupId"], {"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]})
                if port != 443 and port != 6379 and "DatabaseSecurityGroupId" in given:
                    self.assertEqual(r["DestinationSecurityGroupId"], given["DatabaseSecurityGroupId"])

    def test_endpoints_admit_only_this_stacks_secrets_and_queues(self):
        s = stack(**EXISTING_REDIS, **VPC)
        secrets = s.resources["SecretsManagerEndpoint"]["Properties"]["PolicyDocument"]["Statement"]
        self.assertEqual([(st["Action"], st["Resource"]) for st in secrets],
                         [("secretsmanager:GetSecretValue", [s.params["DatabaseSecretArn"], REDIS_SECRET])])
        sqs = s.resources["SqsEndpoint"]["Properties"]["PolicyDocument"]["Statement"]
        resources = [r for st in sqs for r in st["Resource"]]
        self.assertEqual(sorted(json.dumps(r) for r in resources), sorted(
            json.dumps({"Fn::GetAtt": [f"{f}{q}", "Arn"]}) for f in QUEUE_FUNCTIONS for q in ("Queue", "DeadLetterQueue")))
        self.assertNotIn("*", json.dumps([st["Action"] for st in sqs + secrets]))


class Alarms(unittest.TestCase):
    def test_every_alarm_notifies_a_topic_the_stack_creates_when_none_is_given(self):
        s = stack(AlarmEmail="oncall@example.com")
        self.assertIn("AlarmTopic", s.of_type("AWS::SNS::Topic"))
        (subscription,) = s.of_type("AWS::SNS::Subscription").values()
        self.assertEqual((subscription["Properties"]["Protocol"], subscription["Properties"]["Endpoint"]),
                         ("email", "oncall@example.com"))
        self.assertEqual(subscription["Properties"]["TopicArn"], {"Ref": "AlarmTopic"})
        for name, alarm in s.alarms().items():
            self.assertEqual(alarm["Properties"]["AlarmActions"], [{"Ref": "AlarmTopic"}], name)
            self.assertEqual(alarm["Properties"]["OKActions"], [{"Ref": "AlarmTopic"}], name)
        given = stack(AlarmTopicArn=TOPIC)
        self.assertEqual(given.of_type("AWS::SNS::Topic"), {})
        for name, alarm in given.alarms().items():
            self.assertEqual(alarm["Properties"]["AlarmActions"], [TOPIC], name)

    def scheduled(self, s):
        """The scheduled tasks: (function, its schedule rule) for each."""
        rules = s.of_type("AWS::Events::Rule")
        tasks = {}
        for rule_name, rule in rules.items():
            target = rule["Properties"]["Targets"][0]["Arn"]["Fn::GetAtt"][0]
            tasks[target] = rule_name
        return tasks

    def test_silence_and_failed_deliveries_of_each_scheduled_task_alarm(self):
        s = stack(**EXISTING_REDIS)
        tasks = self.scheduled(s)
        self.assertEqual(set(tasks), {"MirrorCheckFunction", "OutboxSweepFunction"})
        alarms = s.alarms().values()
        for function, rule in tasks.items():
            silent = [a["Properties"] for a in alarms if a["Properties"]["MetricName"] == "Invocations"
                      and a["Properties"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]]
            self.assertEqual(len(silent), 1, function)
            (silent,) = silent
            self.assertEqual((silent["Namespace"], silent["ComparisonOperator"], silent["Threshold"],
                              silent["TreatMissingData"]), ("AWS/Lambda", "LessThanThreshold", 1, "breaching"))
            failed = [a["Properties"] for a in alarms if a["Properties"]["MetricName"] == "FailedInvocations"
                      and a["Properties"]["Dimensions"] == [{"Name": "RuleName", "Value": {"Ref": rule}}]]
            self.assertEqual(len(failed), 1, rule)
            self.assertEqual(failed[0]["Namespace"], "AWS/Events")
            errors = [a["Properties"] for a in alarms if a["Properties"]["MetricName"] == "Errors"
                      and a["Properties"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": function}}]]
            self.assertEqual(len(errors), 1, function)
        # The sweep's silence is noticed within minutes; the check's within a day and a bit.
        sweep = next(a["Properties"] for a in alarms if a["Properties"]["MetricName"] == "Invocations"
                     and a["Properties"]["Dimensions"][0]["Value"] == {"Ref": "OutboxSweepFunction"})
        self.assertLessEqual(sweep["Period"] * sweep["EvaluationPeriods"], 600)
        check = next(a["Properties"] for a in alarms if a["Properties"]["MetricName"] == "Invocations"
                     and a["Properties"]["Dimensions"][0]["Value"] == {"Ref": "MirrorCheckFunction"})
        self.assertEqual(check["Period"] * int(check["EvaluationPeriods"]), 26 * 3600)
        # Off, the check's silence does not alarm.
        off = stack(CheckSchedule="off")
        self.assertFalse(any(a["Properties"]["MetricName"] == "Invocations" for a in off.alarms().values()))

    def test_the_stacks_cache_alarms_on_memory_evictions_and_cpu(self):
        s = stack(**ELASTICACHE)
        metrics = {}
        for name, alarm in s.alarms().items():
            props = alarm["Properties"]
            for query in props.get("Metrics", []):
                stat = query.get("MetricStat")
                if stat and stat["Metric"]["Namespace"] == "AWS/ElastiCache":
                    metrics.setdefault(stat["Metric"]["MetricName"], set()).update(
                        json.dumps(d["Value"]) for d in stat["Metric"]["Dimensions"])
        self.assertEqual(set(metrics), {"DatabaseMemoryUsagePercentage", "Evictions", "EngineCPUUtilization"})
        for metric, nodes in metrics.items():
            # Both nodes: the primary may be either after a failover.
            self.assertEqual(nodes, {json.dumps({"Fn::Sub": "${Cache}-001"}), json.dumps({"Fn::Sub": "${Cache}-002"})}, metric)
        self.assertFalse(any("AWS/ElastiCache" in json.dumps(a) for a in stack(**EXISTING_REDIS).alarms().values()))


class Scheduled(unittest.TestCase):
    def test_scheduled_tasks_are_never_retried_and_the_sweep_runs_in_a_function_of_its_own(self):
        s = stack(**EXISTING_REDIS)
        configs = {c["Properties"]["FunctionName"]["Ref"]: c["Properties"]
                   for c in s.of_type("AWS::Lambda::EventInvokeConfig").values()}
        self.assertEqual(set(configs), {"MirrorCheckFunction", "OutboxSweepFunction"})
        for function, config in configs.items():
            self.assertEqual(config["MaximumRetryAttempts"], 0, function)
        self.assertLessEqual(configs["OutboxSweepFunction"]["MaximumEventAgeInSeconds"], 60)
        self.assertLessEqual(configs["MirrorCheckFunction"]["MaximumEventAgeInSeconds"], 900)
        sweep = s.resources["OutboxSweepFunction"]["Properties"]
        self.assertLessEqual(sweep["Timeout"], 60)
        rules = {r["Properties"]["Description"]: r["Properties"] for r in s.of_type("AWS::Events::Rule").values()}
        self.assertEqual(rules["realtime-mirror outbox sweep"]["Targets"][0]["Arn"],
                         {"Fn::GetAtt": ["OutboxSweepFunction", "Arn"]})
        self.assertNotIn("OutboxSweepFunction", stack().resources)

    def test_the_self_check_has_a_time_budget_inside_the_function_timeout(self):
        s = stack()
        fn = s.resources["MirrorCheckFunction"]["Properties"]
        budget = fn["Environment"]["Variables"]["MIRROR_CHECK_BUDGET"]
        self.assertRegex(budget, r"^[0-9]+m$")
        # Minutes left after the budget for pruning and the reply.
        self.assertLessEqual(int(budget[:-1]) * 60 + 120, fn["Timeout"])


class Queues(unittest.TestCase):
    def test_dead_letter_queues_take_only_their_own_source_queue(self):
        s = stack()
        for family, binary in QUEUE_FUNCTIONS.items():
            queue = s.resources[f"{family}Queue"]["Properties"]
            self.assertEqual(queue["QueueName"], {"Fn::Sub": f"mirror-prod-{binary}"})
            allow = s.resources[f"{family}DeadLetterQueue"]["Properties"]["RedriveAllowPolicy"]
            self.assertEqual(allow, {"redrivePermission": "byQueue", "sourceQueueArns": [
                {"Fn::Sub": f"arn:aws:sqs:us-east-1:123456789012:mirror-prod-{binary}"}]})

    def test_source_queues_outlive_the_stack(self):
        template = load()
        for family in QUEUE_FUNCTIONS:
            queue = template["Resources"][f"{family}Queue"]
            self.assertEqual((queue["DeletionPolicy"], queue["UpdateReplacePolicy"]), ("Retain", "Retain"), family)

    def test_receives_ride_out_a_half_hour_outage_and_visibility_covers_six_timeouts_and_the_window(self):
        template = load()
        params = template["Parameters"]
        timeout = template["Globals"]["Function"]["Timeout"]
        for family in QUEUE_FUNCTIONS:
            visibility = template["Resources"][f"{family}Queue"]["Properties"]["VisibilityTimeout"]
            self.assertGreaterEqual(visibility, 6 * timeout + params["MaximumBatchingWindowInSeconds"]["MaxValue"])
            self.assertGreaterEqual(params["MaxReceiveCount"]["Default"] * visibility, 30 * 60)


class Realtime(unittest.TestCase):
    def test_the_cache_auth_token_reads_the_secret_as_the_functions_do(self):
        expected = {
            "plain": f"{{{{resolve:secretsmanager:{REDIS_SECRET}}}}}",
            "authToken": f"{{{{resolve:secretsmanager:{REDIS_SECRET}:SecretString:authToken}}}}",
            "password": f"{{{{resolve:secretsmanager:{REDIS_SECRET}:SecretString:password}}}}",
        }
        for form, reference in expected.items():
            s = stack(**ELASTICACHE, RedisAuthSecretForm=form)
            self.assertEqual(s.resources["Cache"]["Properties"]["AuthToken"], {"Fn::Sub": reference}, form)
            for fn in s.of_type("AWS::Lambda::Function").values():
                self.assertEqual(fn["Properties"]["Environment"]["Variables"]["MIRROR_REDIS_AUTH_SECRET_FORM"], form)

    def test_the_stacks_cache_never_evicts_and_announces_stream_writes(self):
        s = stack(**ELASTICACHE)
        (group,) = s.of_type("AWS::ElastiCache::ParameterGroup").values()
        self.assertEqual(group["Properties"]["Properties"], {"maxmemory-policy": "noeviction",
                                                             "notify-keyspace-events": "Kt"})
        family = group["Properties"]["CacheParameterGroupFamily"]
        cache = s.resources["Cache"]["Properties"]
        self.assertEqual(cache["CacheParameterGroupName"], {"Ref": "CacheParameterGroup"})
        self.assertEqual(family, "valkey" + cache["EngineVersion"].split(".")[0])

    def test_streams_expire_by_age_by_default(self):
        self.assertEqual(load()["Parameters"]["StreamMaxAge"]["Default"], "7d")
        for fn in stack(**EXISTING_REDIS).of_type("AWS::Lambda::Function").values():
            self.assertEqual(fn["Properties"]["Environment"]["Variables"]["MIRROR_STREAM_MAX_AGE"], "7d")

    def test_a_stream_consumer_group_reaches_the_cache_whose_endpoint_and_group_are_outputs(self):
        s = stack(**ELASTICACHE, StreamConsumerSecurityGroupId="sg-0c0c0c0c")
        ingress = s.resources["CacheSecurityGroup"]["Properties"]["SecurityGroupIngress"] + [
            r["Properties"] for r in s.of_type("AWS::EC2::SecurityGroupIngress").values()
            if r["Properties"]["GroupId"] == {"Fn::GetAtt": ["CacheSecurityGroup", "GroupId"]}]
        sources = sorted(json.dumps(i["SourceSecurityGroupId"]) for i in ingress)
        self.assertEqual(sources, sorted([json.dumps({"Ref": "FunctionSecurityGroup"}), json.dumps("sg-0c0c0c0c")]))
        self.assertTrue(all((i["FromPort"], i["ToPort"]) == (6379, 6379) for i in ingress))
        self.assertEqual(s.outputs["CacheEndpoint"]["Value"],
                         {"Fn::Sub": "rediss://${Cache.PrimaryEndPoint.Address}:${Cache.PrimaryEndPoint.Port}"})
        self.assertEqual(s.outputs["CacheSecurityGroupId"]["Value"], {"Ref": "CacheSecurityGroup"})
        alone = stack(**ELASTICACHE)
        self.assertEqual(alone.of_type("AWS::EC2::SecurityGroupIngress"), {})
        self.assertNotIn("CacheEndpoint", stack().outputs)

    def test_the_redis_secret_may_have_a_kms_key_of_its_own(self):
        key = "arn:aws:kms:us-east-1:123456789012:key/1111aaaa-2222-bbbb-3333-cccc4444dddd"
        s = stack(**EXISTING_REDIS, RedisSecretKmsKeyArn=key)
        for name, role in s.of_type("AWS::IAM::Role").items():
            keys = [st["Resource"] for st in statements(role) if st["Action"] == "kms:Decrypt"]
            self.assertEqual(keys, [key], name)
        self.assertEqual(load()["Parameters"]["RedisSecretKmsKeyArn"]["Default"], "")


class Figures(unittest.TestCase):
    def test_the_dashboard_states_the_connection_budget_of_every_function_from_the_parameters(self):
        s = stack(MaximumConcurrency="7", MaxConnectionsPerInstance="3", BacklogAlarmMessages="500")
        body = s.resources["MirrorDashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
        dashboard = json.loads(body)
        texts = " ".join(w["properties"].get("markdown", "") for w in dashboard["widgets"])
        self.assertIn("3 queue functions × 7 executions × 3 connections", texts)
        self.assertIn("mirror-check: 1 execution × 3 connections", texts)
        titles = " ".join(w["properties"].get("title", "") for w in dashboard["widgets"])
        self.assertNotIn("1,000", titles)
        self.assertIn("alarm above 500", titles)

    def test_every_function_is_built_for_x86_64(self):
        # arm64 cannot be built here (docs/deploying.md says why): the template must not offer it.
        for name, fn in stack(**EXISTING_REDIS).of_type("AWS::Lambda::Function").items():
            self.assertEqual(fn["Properties"]["Architectures"], ["x86_64"], name)


if __name__ == "__main__":
    unittest.main()
