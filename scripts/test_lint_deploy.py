"""Tests of lint_deploy.py: each check reports the mistake it exists for, and the shipped deploy/
passes them all. Run by CI through `scripts/lint-deploy.sh --test`."""

import copy
import os
import pathlib

import pytest

import lint_deploy as ld

ROOT = pathlib.Path(__file__).resolve().parent.parent

# What `ddbcache check-config --json` prints for deploy/kubernetes/base/ddbcache.toml, trimmed to
# what the linter reads.
CONFIG = {
    "listen": {"addr": "127.0.0.1:8000", "admin_addr": "0.0.0.0:9000"},
    "server": {"shutdown_grace": 10.0},
    "derived": {"container_memory_bytes": 190 * 2**20,
                "container_memory_rule": "(item capacity + query capacity) x 1.25 + "
                                         "server.max_buffered_bytes + 2 ports x "
                                         "server.max_connections x 32KiB + 30MiB"},
}


def fixed_config(text, env):
    return copy.deepcopy(CONFIG)


def pod_objects(limit="192Mi", grace=45, app_endpoint="http://127.0.0.1:8000"):
    """A Deployment with a ddbcache sidecar, its ConfigMap, ServiceAccount and metrics Service."""
    probe = lambda path: {"httpGet": {"path": path, "port": "admin"}}  # noqa: E731
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "app"},
        "spec": {"selector": {"matchLabels": {"app": "a"}}, "template": {
            "metadata": {"labels": {"app": "a"}},
            "spec": {
                "serviceAccountName": "app",
                "terminationGracePeriodSeconds": grace,
                "volumes": [{"name": "cfg", "configMap": {"name": "ddbcache-config"}}],
                "initContainers": [{
                    "name": "ddbcache", "image": "ddbcache", "restartPolicy": "Always",
                    "ports": [{"name": "admin", "containerPort": 9000}],
                    "startupProbe": probe("/readyz"), "readinessProbe": probe("/readyz"),
                    "livenessProbe": probe("/healthz"),
                    "resources": {"limits": {"memory": limit}},
                    "volumeMounts": [{"name": "cfg", "mountPath": "/etc/ddbcache"}],
                }],
                "containers": [{"name": "app", "image": "app", "env": [
                    {"name": "AWS_ENDPOINT_URL_DYNAMODB", "value": app_endpoint}]}],
            }}},
    }
    return [
        deployment,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ddbcache-config"},
         "data": {"ddbcache.toml": "[cache.item]\ncapacity = \"64MiB\"\n"}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "metrics"},
         "spec": {"selector": {"app": "a"}, "ports": [{"name": "m", "port": 9000,
                                                       "targetPort": 9000}]}},
    ]


def test_a_consistent_pod_has_no_errors():
    objects = pod_objects()
    assert ld.reference_errors(objects) == []
    assert ld.sidecar_errors(objects, fixed_config) == []


def test_memory_below_what_check_config_derives_is_reported():
    errors = ld.sidecar_errors(pod_objects(limit="128Mi"), fixed_config)
    assert any("memory limit 128Mi is below the 190Mi" in e for e in errors), errors


def test_grace_period_must_cover_shutdown_grace():
    errors = ld.sidecar_errors(pod_objects(grace=10), fixed_config)
    assert any("terminationGracePeriodSeconds 10" in e for e in errors), errors


def test_app_must_point_at_the_sidecar():
    errors = ld.sidecar_errors(pod_objects(app_endpoint="http://localhost:8000"), fixed_config)
    assert any("AWS_ENDPOINT_URL_DYNAMODB=http://localhost:8000" in e for e in errors), errors


def test_a_config_check_config_rejects_is_reported():
    def rejects(text, env):
        raise ValueError("invalid config: listen.admin_addr: must differ")
    errors = ld.sidecar_errors(pod_objects(), rejects)
    assert any("rejects its config: invalid config" in e for e in errors), errors


def shared_tier_config(key_file="/etc/ddbcache-shared/key"):
    """check-config's answer for a sidecar with the shared tier on, and what it was asked."""
    asked = []

    def check(text, env):
        asked.append(env)
        cfg = copy.deepcopy(CONFIG)
        cfg["fleet"] = {"shared": {"enabled": True}}
        if key_file:
            cfg["fleet"]["shared"]["key_file"] = key_file
        return cfg
    return check, asked


def test_an_enabled_tier_needs_its_key_file_mounted_from_a_secret():
    objects = pod_objects()
    pod = objects[0]["spec"]["template"]["spec"]
    sidecar = pod["initContainers"][0]
    check, _ = shared_tier_config()
    errors = ld.sidecar_errors(objects, check)
    assert any("key_file /etc/ddbcache-shared/key is not in a mounted Secret" in e
               for e in errors), errors

    pod["volumes"].append({"name": "key", "secret": {"secretName": "shared-key"}})
    sidecar["volumeMounts"].append({"name": "key", "mountPath": "/etc/ddbcache-shared"})
    assert ld.sidecar_errors(objects, check) == []

    # The same file from a ConfigMap (readable by anyone who can read ConfigMaps) is not a key.
    pod["volumes"][-1] = {"name": "key", "configMap": {"name": "ddbcache-config"}}
    errors = ld.sidecar_errors(objects, check)
    assert any("is not in a mounted Secret" in e for e in errors), errors

    check, _ = shared_tier_config(key_file=None)
    errors = ld.sidecar_errors(objects, check)
    assert any("fleet.shared is on without fleet.shared.key_file" in e for e in errors), errors


def test_a_secret_in_a_configmap_mount_counts_only_where_it_is_mounted():
    objects = pod_objects()
    pod = objects[0]["spec"]["template"]["spec"]
    pod["volumes"].append({"name": "key", "secret": {"secretName": "shared-key"}})
    pod["initContainers"][0]["volumeMounts"].append(
        {"name": "key", "mountPath": "/etc/ddbcache/shared"})
    check, _ = shared_tier_config(key_file="/etc/ddbcache/shared/key")
    assert ld.sidecar_errors(objects, check) == []
    # Beside the Secret's mount, inside the ConfigMap's: not from the Secret.
    check, _ = shared_tier_config(key_file="/etc/ddbcache/shared-key")
    errors = ld.sidecar_errors(objects, check)
    assert any("is not in a mounted Secret" in e for e in errors), errors


def test_secret_key_refs_are_read_from_the_secrets_defined_alongside():
    objects = pod_objects()
    objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "bus"},
                    "data": {"redis-url": "cmVkaXM6Ly9idXM6NjM3OQ=="}})
    objects[0]["spec"]["template"]["spec"]["initContainers"][0]["env"] = [
        {"name": "DDBCACHE_FLEET_REDIS_URL",
         "valueFrom": {"secretKeyRef": {"name": "bus", "key": "redis-url"}}},
        {"name": "DDBCACHE_FLEET_CHANNEL",
         "valueFrom": {"secretKeyRef": {"name": "made-elsewhere", "key": "channel"}}},
    ]
    asked = []
    ld.sidecar_errors(objects, lambda text, env: asked.append(env) or fixed_config(text, env))
    assert asked == [{"DDBCACHE_FLEET_REDIS_URL": "redis://bus:6379",
                      "DDBCACHE_FLEET_CHANNEL": ""}]


def test_unrendered_kustomization_generates_its_secrets(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "secretGenerator:\n  - name: bus\n    literals:\n      - redis-url=redis://bus:6379\n")
    secrets = ld.secret_values(ld.unrendered(tmp_path))
    assert secrets == {"bus": {"redis-url": "redis://bus:6379"}}


def test_dangling_references_are_reported():
    objects = pod_objects()
    objects[3]["spec"]["selector"] = {"app": "other"}
    objects[3]["spec"]["ports"][0]["targetPort"] = "admin"
    del objects[2]
    errors = ld.reference_errors(objects)
    assert any("selects no pods" in e for e in errors), errors
    assert any("ServiceAccount app is not defined" in e for e in errors), errors


def test_service_monitor_needs_a_matching_service_port():
    objects = pod_objects() + [{
        "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
        "metadata": {"name": "sm"},
        "spec": {"selector": {"matchLabels": {"nothing": "here"}},
                 "endpoints": [{"port": "m", "path": "/metrics", "scrap": "30s"}]}}]
    errors = ld.reference_errors(objects)
    assert any("selects no Service" in e for e in errors), errors
    assert any("unknown endpoint fields ['scrap']" in e for e in errors), errors


def test_schemas_catch_unknown_fields():
    objects = pod_objects()
    objects[0]["spec"]["template"]["spec"]["initContainers"][0]["restartPolcy"] = "Always"
    errors = ld.schema_errors([objects[0]])
    assert any("restartPolcy" in e for e in errors), errors


def test_invalid_promql_is_reported():
    dashboard = {"panels": [{"title": "p", "targets": [{"expr": "sum(rate(x[5m])"}]}]}
    assert len(ld.promql_errors(dashboard)) == 1
    dashboard["panels"][0]["targets"][0]["expr"] = "sum(rate(x[$__rate_interval]))"
    assert ld.promql_errors(dashboard) == []


def test_unrendered_kustomization_generates_its_configmap(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        "resources: [sa.yaml]\nconfigMapGenerator:\n  - name: c\n    files: [ddbcache.toml]\n")
    (tmp_path / "sa.yaml").write_text("apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: s}\n")
    (tmp_path / "ddbcache.toml").write_text("[log]\nlevel = \"debug\"\n")
    objects = ld.unrendered(tmp_path)
    assert [o["kind"] for o in objects] == ["ServiceAccount", "ConfigMap"]
    assert objects[1]["data"] == {"ddbcache.toml": "[log]\nlevel = \"debug\"\n"}
    (tmp_path / "kustomization.yaml").write_text("resources: [gone.yaml]\n")
    assert ld.missing_files(tmp_path) != []


def test_quantities():
    assert ld.parse_quantity("192Mi") == 192 * 2**20
    assert ld.parse_quantity("1G") == 10**9
    with pytest.raises(ValueError):
        ld.parse_quantity("lots")


def webhook_objects():
    """`ddbcache inject --serve` behind a Service, its configuration, and its certificate."""
    return [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
         "metadata": {"name": "inject",
                      "annotations": {"cert-manager.io/inject-ca-from": "sys/hook"}},
         "webhooks": [{
             "name": "inject.ddbcache.io", "admissionReviewVersions": ["v1"],
             "clientConfig": {"service": {"name": "hook", "namespace": "sys", "path": "/inject",
                                          "port": 443}},
             "namespaceSelector": {
                 "matchLabels": {"ddbcache.io/inject": "enabled"},
                 "matchExpressions": [{"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                       "values": ["kube-system", "sys"]}]},
             "failurePolicy": "Ignore", "sideEffects": "None", "timeoutSeconds": 5,
             "reinvocationPolicy": "IfNeeded"}]},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hook"},
         "spec": {"selector": {"app": "hook"}, "ports": [{"port": 443, "targetPort": "https"}]}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "hook"},
         "spec": {"selector": {"matchLabels": {"app": "hook"}}, "template": {
             "metadata": {"labels": {"app": "hook"}},
             "spec": {"containers": [{"name": "webhook", "image": "ddbcache",
                                      "args": ["inject", "--serve"],
                                      "ports": [{"name": "https", "containerPort": 8443}]}],
                      "volumes": [{"name": "tls", "secret": {"secretName": "hook-tls"}}]}}}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Certificate", "metadata": {"name": "hook"},
         "spec": {"secretName": "hook-tls", "dnsNames": ["hook.sys.svc"],
                  "issuerRef": {"name": "self", "kind": "Issuer"}}},
        {"apiVersion": "cert-manager.io/v1", "kind": "Issuer", "metadata": {"name": "self"},
         "spec": {"selfSigned": {}}},
    ]


def test_a_webhook_that_never_gets_in_the_way_has_no_errors():
    assert ld.webhook_errors(webhook_objects()) == []
    assert ld.reference_errors(webhook_objects()) == []


def test_a_webhook_that_could_block_or_loop_is_reported():
    objects = webhook_objects()
    hook = objects[0]["webhooks"][0]
    hook.update(failurePolicy="Fail", sideEffects="Unknown", timeoutSeconds=30)
    del hook["reinvocationPolicy"]
    errors = ld.webhook_errors(objects)
    for expected in ["failurePolicy is Fail", "sideEffects is Unknown", "timeoutSeconds 30",
                     "reinvocationPolicy is None"]:
        assert any(expected in e for e in errors), (expected, errors)


def test_a_namespace_selector_that_reaches_kube_system_or_its_own_namespace_is_reported():
    objects = webhook_objects()
    selector = objects[0]["webhooks"][0]["namespaceSelector"]
    selector["matchExpressions"][0]["values"] = ["kube-system"]
    errors = ld.webhook_errors(objects)
    assert [e for e in errors if "matches" in e] == [
        "MutatingWebhookConfiguration/inject inject.ddbcache.io: namespaceSelector matches sys "
        "(even labelled to opt in, it must not)"], errors
    del selector["matchExpressions"]
    errors = ld.webhook_errors(objects)
    assert any("matches kube-system" in e for e in errors), errors
    del objects[0]["webhooks"][0]["namespaceSelector"]
    assert any("matches kube-system" in e for e in ld.webhook_errors(objects))


def test_selector_operators():
    labels = {"a": "1", "b": "2"}
    assert ld.selector_matches({"matchLabels": {"a": "1"}}, labels)
    assert not ld.selector_matches({"matchLabels": {"a": "2"}}, labels)
    assert ld.selector_matches({"matchExpressions": [{"key": "a", "operator": "In",
                                                      "values": ["1", "3"]}]}, labels)
    assert not ld.selector_matches({"matchExpressions": [{"key": "b", "operator": "NotIn",
                                                          "values": ["2"]}]}, labels)
    assert ld.selector_matches({"matchExpressions": [{"key": "c", "operator": "DoesNotExist"}]},
                               labels)
    assert not ld.selector_matches({"matchExpressions": [{"key": "c", "operator": "Exists"}]},
                                   labels)


def test_a_certificate_the_api_server_cannot_use_is_reported():
    objects = webhook_objects()
    objects[3]["spec"]["dnsNames"] = ["hook.default.svc"]
    objects[3]["spec"]["secretName"] = "elsewhere"
    objects[3]["spec"]["dnsName"] = "typo"
    errors = ld.webhook_errors(objects)
    assert any("dnsNames lack hook.sys.svc" in e for e in errors), errors
    assert any("mounts no Secret elsewhere" in e for e in errors), errors
    assert any("unknown spec fields ['dnsName']" in e for e in errors), errors
    objects[0]["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] = "sys/missing"
    errors = ld.webhook_errors(objects)
    assert any("names no Certificate" in e for e in errors), errors
    # A CA bundle set by hand needs no Certificate.
    objects[0]["webhooks"][0]["clientConfig"]["caBundle"] = "LS0t"
    errors = ld.webhook_errors(objects)
    assert not any("names no Certificate" in e or "dnsNames" in e for e in errors), errors


def test_a_webhook_service_that_runs_something_else_is_reported():
    objects = webhook_objects()
    objects[2]["spec"]["template"]["spec"]["containers"][0]["args"] = ["run"]
    objects[0]["webhooks"][0]["clientConfig"]["service"]["path"] = "/mutate"
    errors = ld.webhook_errors(objects)
    assert any("selects no `ddbcache inject --serve` container" in e for e in errors), errors
    assert any("path /mutate is not /inject" in e for e in errors), errors


@pytest.mark.skipif(not os.environ.get("LINT_DDBCACHE"), reason="LINT_DDBCACHE names a built ddbcache")
def test_the_shipped_deploy_directory_is_clean():
    assert ld.lint(ROOT, ld.CheckConfig(os.environ["LINT_DDBCACHE"]), say=lambda m: None) == []
