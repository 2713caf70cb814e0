"""Lints everything under deploy/ against the Kubernetes schemas and against ddbcache itself.

  deploy/Dockerfile        hadolint; the config line it rewrites exists in config/ddbcache.toml,
                           and `ddbcache check-config` of the image's resulting config listens for
                           probes on all interfaces
  deploy/kubernetes/**     every file a kustomization names exists; each kustomization's objects
                           (rendered when kustomize or kubectl is on PATH, else its resources and
                           generated ConfigMaps without patches) validate against the schemas in
                           kubernetes-validate (--strict) for the oldest Kubernetes with native
                           sidecars and the newest known; selectors, ports, ConfigMaps and
                           ServiceAccounts refer to what exists; every ddbcache sidecar agrees with
                           its own effective config as `ddbcache check-config --json` reads it (its
                           file plus its DDBCACHE_* environment): probes on the admin port,
                           AWS_ENDPOINT_URL_DYNAMODB at its listen address, a memory limit of at
                           least the container memory check-config derives, a grace period above
                           shutdown_grace, a shared tier (fleet.shared) that is on sealed with a
                           key file mounted from a Secret (environment values from secretKeyRef
                           are read from the Secrets the kustomization defines, others count as
                           unset); every *.toml is a config check-config accepts; every
                           MutatingWebhookConfiguration can never block or loop: failurePolicy
                           Ignore, sideEffects None, a short timeout, reinvocationPolicy IfNeeded,
                           a namespaceSelector that matches neither kube-system nor the webhook's
                           own namespace, a Service that runs `ddbcache inject --serve`, and a CA
                           bundle (or cert-manager's annotation naming a Certificate for the
                           Service's name, whose Secret the webhook mounts)
  deploy/grafana/*.json    parses, and every query is valid PromQL

What the documentation and deploy/ name (DDBCACHE_* variables, metric names) is checked against
the code by the Rust tests in tests/docs.rs. scripts/lint-deploy.sh installs the tools and runs
this; scripts/test_lint_deploy.py tests it.
"""

import argparse
import base64
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import kubernetes_validate as kv
import promql_parser
import yaml

# Native sidecars are on by default from 1.29; 1.37 is the newest schema set the package ships.
K8S_VERSIONS = ["1.29.0", "1.37.0"]
# The line deploy/Dockerfile rewrites (admin port on all interfaces in the image's config).
IMAGE_ADMIN_LINE = 'admin_addr = "127.0.0.1:9000"'
IMAGE_ADMIN_ADDR = "0.0.0.0:9000"
# Custom resources kubernetes-validate has no schema for, checked by reference instead.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"), ("cert-manager.io/v1", "Certificate"),
        ("cert-manager.io/v1", "Issuer")}
CERTIFICATE_SPEC = {
    "secretName", "dnsNames", "issuerRef", "privateKey", "duration", "renewBefore",
    "renewBeforePercentage", "commonName", "ipAddresses", "uris", "emailAddresses", "usages",
    "isCA", "subject", "literalSubject", "secretTemplate", "keystores", "revisionHistoryLimit",
    "additionalOutputFormats", "nameConstraints", "otherNames", "encodeUsagesInRequest",
    "signatureAlgorithm"}
ISSUER_SPEC = {"selfSigned", "ca", "acme", "vault", "venafi"}
# The admission webhook: what `ddbcache inject --serve` answers on, and the longest a pod's
# creation may wait for it.
WEBHOOK_PATH = "/inject"
WEBHOOK_MAX_TIMEOUT = 5
CA_INJECTOR_ANNOTATION = "cert-manager.io/inject-ca-from"
# Namespaces no ddbcache webhook may ever match, besides its own.
PROTECTED_NAMESPACES = ["kube-system"]
SERVICE_MONITOR_SPEC = {
    "selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels",
    "sampleLimit", "targetLimit", "scrapeProtocols", "fallbackScrapeProtocol", "labelLimit",
    "labelNameLengthLimit", "labelValueLengthLimit", "keepDroppedTargets", "attachMetadata",
    "scrapeClass", "bodySizeLimit", "nativeHistogramBucketLimit",
    "nativeHistogramMinBucketFactor", "scrapeClassicHistograms",
    "convertClassicHistogramsToNHCB", "selectorMechanism", "serviceDiscoveryRole"}
SERVICE_MONITOR_ENDPOINT = {
    "port", "targetPort", "path", "scheme", "interval", "scrapeTimeout", "honorLabels",
    "relabelings", "metricRelabelings", "params", "tlsConfig", "bearerTokenSecret",
    "authorization", "basicAuth", "oauth2", "followRedirects", "enableHttp2", "proxyUrl",
    "honorTimestamps", "filterRunning", "trackTimestampsStaleness"}
PROBES = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}


class CheckConfig:
    """`ddbcache check-config --json`: ddbcache's own reading of a config file and environment."""

    def __init__(self, binary):
        self.binary = binary

    def __call__(self, text, env):
        """The effective config as JSON, or raises ValueError with ddbcache's message."""
        with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
            f.write(text)
            f.flush()
            run_env = {"PATH": "/usr/bin:/bin"}
            run_env.update({k: v for k, v in env.items() if k != "DDBCACHE_CONFIG"})
            r = subprocess.run([self.binary, "check-config", "--json", "--config", f.name],
                               env=run_env, capture_output=True, text=True)
        if r.returncode != 0:
            raise ValueError(r.stderr.strip())
        return json.loads(r.stdout)


def parse_quantity(value):
    """A Kubernetes memory quantity (`192Mi`, `1G`, `200000000`) in bytes."""
    m = re.fullmatch(r"([\d.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(value))
    if not m:
        raise ValueError(f"not a quantity: {value}")
    unit = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3,
            "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(float(m.group(1)) * unit)


def port_of(addr):
    return int(addr.rpartition(":")[2])


# --- kustomizations --------------------------------------------------------------------------

def load_kustomization(kdir):
    return yaml.safe_load((kdir / "kustomization.yaml").read_text()) or {}


def missing_files(kdir):
    doc = load_kustomization(kdir)
    named = list(doc.get("resources", []))
    named += [p["path"] for p in doc.get("patches", []) if "path" in p]
    for gen in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
        named += [f.split("=", 1)[-1] for f in gen.get("files", [])]
    return [f"{kdir}/kustomization.yaml: {n} does not exist" for n in named
            if not (kdir / n).exists()]


def unrendered(kdir):
    """Resources (recursively) and generated ConfigMaps; patches are not applied."""
    doc, objs = load_kustomization(kdir), []
    for name in doc.get("resources", []):
        path = (kdir / name).resolve()
        if path.is_dir() and (path / "kustomization.yaml").exists():
            objs += unrendered(path)
        elif path.is_file():
            objs += [o for o in yaml.safe_load_all(path.read_text()) if o]
    for gen in doc.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            key, _, src = f.rpartition("=")
            data[key or pathlib.Path(src).name] = (kdir / src).read_text()
        objs.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": gen["name"]}, "data": data})
    for gen in doc.get("secretGenerator", []):
        literals = dict(lit.split("=", 1) for lit in gen.get("literals", []))
        objs.append({"apiVersion": "v1", "kind": "Secret",
                     "metadata": {"name": gen["name"]}, "stringData": literals})
    return objs


def kustomization_objects(kdir):
    """The kustomization's objects, rendered by kustomize or kubectl when one is installed."""
    for renderer in (["kustomize", "build"], ["kubectl", "kustomize"]):
        if shutil.which(renderer[0]):
            out = subprocess.run(renderer + [str(kdir)], check=True, capture_output=True,
                                 text=True).stdout
            return [o for o in yaml.safe_load_all(out) if o]
    return unrendered(kdir)


def distinct(objects):
    seen, out = set(), []
    for o in objects:
        ident = json.dumps(o, sort_keys=True)
        if ident not in seen:
            seen.add(ident)
            out.append(o)
    return out


def name_of(o):
    return f"{o.get('kind')}/{o.get('metadata', {}).get('name')}"


def schema_errors(objects):
    errors = []
    for o in objects:
        for version in K8S_VERSIONS:
            try:
                kv.validate(o, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                errors.append(f"{name_of(o)}: not valid for Kubernetes {version}: {path}: "
                              f"{e.message}")
            except kv.SchemaNotFoundError as e:
                if (o.get("apiVersion"), o.get("kind")) not in CRDS:
                    errors.append(f"{name_of(o)}: {e.message}")
    return errors


# --- references between objects --------------------------------------------------------------

def of_kind(objects, *kinds):
    return [o for o in objects if o.get("kind") in kinds]


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def all_containers(pod_spec):
    return pod_spec.get("containers", []) + pod_spec.get("initContainers", [])


def reference_errors(objects):
    errors = []
    workloads = of_kind(objects, "Deployment", "StatefulSet", "DaemonSet")
    services = of_kind(objects, "Service")
    configmaps = {o["metadata"]["name"] for o in of_kind(objects, "ConfigMap")}
    accounts = {o["metadata"]["name"] for o in of_kind(objects, "ServiceAccount")}
    for sm in of_kind(objects, "ServiceMonitor"):
        spec = sm.get("spec", {})
        match = spec.get("selector", {}).get("matchLabels", {})
        if not match or not spec.get("endpoints"):
            errors.append(f"{name_of(sm)}: needs spec.selector.matchLabels and spec.endpoints")
            continue
        if set(spec) - SERVICE_MONITOR_SPEC:
            errors.append(f"{name_of(sm)}: unknown spec fields {sorted(set(spec) - SERVICE_MONITOR_SPEC)}")
        chosen = [s for s in services if selects(match, s["metadata"].get("labels", {}))]
        if not chosen:
            errors.append(f"{name_of(sm)}: selects no Service (matchLabels {match})")
        for ep in spec["endpoints"]:
            if set(ep) - SERVICE_MONITOR_ENDPOINT:
                errors.append(f"{name_of(sm)}: unknown endpoint fields "
                              f"{sorted(set(ep) - SERVICE_MONITOR_ENDPOINT)}")
            for s in chosen:
                if "port" in ep and ep["port"] not in [p.get("name") for p in s["spec"]["ports"]]:
                    errors.append(f"{name_of(sm)}: {name_of(s)} has no port named {ep['port']}")
    for svc in services:
        selector = svc["spec"].get("selector", {})
        pods = [w["spec"]["template"] for w in workloads
                if selects(selector, w["spec"]["template"]["metadata"].get("labels", {}))]
        if selector and not pods:
            errors.append(f"{name_of(svc)}: selects no pods (selector {selector})")
        for port in svc["spec"].get("ports", []):
            target = port.get("targetPort", port.get("port"))
            for pod in pods:
                regular = [p for c in pod["spec"].get("containers", []) for p in c.get("ports", [])]
                every = [p for c in all_containers(pod["spec"]) for p in c.get("ports", [])]
                if isinstance(target, int) and target not in [p["containerPort"] for p in every]:
                    errors.append(f"{name_of(svc)}: targetPort {target} is no container's port")
                elif not isinstance(target, int) and target not in [p.get("name") for p in regular]:
                    # Before Kubernetes 1.32 a Service cannot resolve the port names of init
                    # (sidecar) containers: use the number.
                    errors.append(f"{name_of(svc)}: targetPort {target} is not a port name of a "
                                  "regular container")
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        if pod.get("serviceAccountName") and pod["serviceAccountName"] not in accounts:
            errors.append(f"{name_of(w)}: ServiceAccount {pod['serviceAccountName']} is not defined")
        for vol in pod.get("volumes", []):
            if "configMap" in vol and vol["configMap"]["name"] not in configmaps:
                errors.append(f"{name_of(w)}: ConfigMap {vol['configMap']['name']} is not defined")
        for c in all_containers(pod):
            names = {p.get("name") for p in c.get("ports", [])}
            for probe in PROBES:
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str) and port not in names:
                    errors.append(f"{name_of(w)}: {c['name']} {probe} port {port} is not a port "
                                  "of that container")
    return errors


# --- the admission webhook -------------------------------------------------------------------

def selector_matches(selector, labels):
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects `labels`."""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        if not {"In": key in labels and labels[key] in values,
                "NotIn": key not in labels or labels[key] not in values,
                "Exists": key in labels,
                "DoesNotExist": key not in labels}[op]:
            return False
    return True


def opted_in_labels(selector, namespace):
    """The labels of `namespace` had it opted in every way `selector` asks for."""
    labels = {"kubernetes.io/metadata.name": namespace}
    labels.update(selector.get("matchLabels", {}))
    for e in selector.get("matchExpressions", []):
        if e["operator"] == "In" and e["key"] not in labels:
            labels[e["key"]] = e["values"][0]
        elif e["operator"] == "Exists" and e["key"] not in labels:
            labels[e["key"]] = "true"
    return labels


def runs_inject_serve(container):
    args = container.get("command", []) + container.get("args", [])
    return "inject" in args and "--serve" in args


def webhook_errors(objects):
    """Each MutatingWebhookConfiguration against what a webhook that never gets in the way needs."""
    errors = []
    services = {o["metadata"]["name"]: o for o in of_kind(objects, "Service")}
    certificates = {o["metadata"]["name"]: o for o in of_kind(objects, "Certificate")}
    issuers = {o["metadata"]["name"] for o in of_kind(objects, "Issuer")}
    workloads = of_kind(objects, "Deployment", "StatefulSet", "DaemonSet")
    for name, cert in certificates.items():
        spec = cert.get("spec", {})
        if set(spec) - CERTIFICATE_SPEC:
            errors.append(f"Certificate/{name}: unknown spec fields {sorted(set(spec) - CERTIFICATE_SPEC)}")
        issuer = spec.get("issuerRef", {})
        if issuer.get("kind", "Issuer") == "Issuer" and issuer.get("name") not in issuers:
            errors.append(f"Certificate/{name}: Issuer {issuer.get('name')} is not defined")
    for issuer in of_kind(objects, "Issuer"):
        unknown = set(issuer.get("spec", {})) - ISSUER_SPEC
        if unknown:
            errors.append(f"{name_of(issuer)}: unknown spec fields {sorted(unknown)}")
    for mwc in of_kind(objects, "MutatingWebhookConfiguration"):
        annotations = mwc["metadata"].get("annotations", {})
        for hook in mwc.get("webhooks", []):
            where = f"{name_of(mwc)} {hook.get('name')}"
            expected = {"failurePolicy": "Ignore", "sideEffects": "None",
                        "reinvocationPolicy": "IfNeeded"}
            for key, value in expected.items():
                if hook.get(key) != value:
                    errors.append(f"{where}: {key} is {hook.get(key)}, not {value}")
            if hook.get("timeoutSeconds", 10) > WEBHOOK_MAX_TIMEOUT:
                errors.append(f"{where}: timeoutSeconds {hook.get('timeoutSeconds', 10)} is over "
                              f"{WEBHOOK_MAX_TIMEOUT}: every pod creation may wait that long")
            if "v1" not in hook.get("admissionReviewVersions", []):
                errors.append(f"{where}: admissionReviewVersions lacks v1")
            ref = hook.get("clientConfig", {}).get("service")
            if not ref:
                errors.append(f"{where}: clientConfig names no Service")
                continue
            own = ref.get("namespace", "default")
            selector = hook.get("namespaceSelector")
            for namespace in PROTECTED_NAMESPACES + [own]:
                if selector is None or selector_matches(selector,
                                                        opted_in_labels(selector, namespace)):
                    errors.append(f"{where}: namespaceSelector matches {namespace} (even labelled "
                                  "to opt in, it must not)")
            if ref.get("path") != WEBHOOK_PATH:
                errors.append(f"{where}: path {ref.get('path')} is not {WEBHOOK_PATH}")
            svc = services.get(ref["name"])
            if svc is None:
                errors.append(f"{where}: Service {ref['name']} is not defined")
                continue
            port = ref.get("port", 443)
            if port not in [p["port"] for p in svc["spec"].get("ports", [])]:
                errors.append(f"{where}: Service {ref['name']} has no port {port}")
            pods = [w["spec"]["template"]["spec"] for w in workloads
                    if selects(svc["spec"].get("selector", {}),
                               w["spec"]["template"]["metadata"].get("labels", {}))]
            if not any(runs_inject_serve(c) for pod in pods for c in pod.get("containers", [])):
                errors.append(f"{where}: Service {ref['name']} selects no `ddbcache inject "
                              "--serve` container")
            if hook.get("clientConfig", {}).get("caBundle"):
                continue
            source = annotations.get(CA_INJECTOR_ANNOTATION, "")
            cert = certificates.get(source.rpartition("/")[2])
            if cert is None:
                errors.append(f"{where}: no caBundle, and {CA_INJECTOR_ANNOTATION} "
                              f"({source or 'absent'}) names no Certificate defined here")
                continue
            dns = f"{ref['name']}.{own}.svc"
            if source != f"{own}/{cert['metadata']['name']}":
                errors.append(f"{where}: {CA_INJECTOR_ANNOTATION} {source} is not in the "
                              f"Service's namespace {own}")
            if dns not in cert["spec"].get("dnsNames", []):
                errors.append(f"{name_of(cert)}: dnsNames lack {dns}, the name the API server "
                              "calls")
            secret = cert["spec"].get("secretName")
            if not any(v.get("secret", {}).get("secretName") == secret
                       for pod in pods for v in pod.get("volumes", [])):
                errors.append(f"{name_of(cert)}: the webhook mounts no Secret {secret}")
    return errors


# --- the ddbcache sidecar against its own config ---------------------------------------------

def mounted_config(pod, container, configmaps):
    """The text of the config file the container reads, from the ConfigMap mounted there."""
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    path = env.get("DDBCACHE_CONFIG", "/etc/ddbcache/ddbcache.toml")
    mounts = {m["name"]: m["mountPath"].rstrip("/") for m in container.get("volumeMounts", [])}
    for vol in pod.get("volumes", []):
        cm = configmaps.get(vol.get("configMap", {}).get("name"))
        mount = mounts.get(vol["name"])
        if cm and mount and path.startswith(mount + "/"):
            return path, cm.get("data", {}).get(path[len(mount) + 1:])
    return path, None


def secret_values(objects):
    """The Secrets among `objects`: name -> {key: value}, from data (base64) and stringData."""
    out = {}
    for s in of_kind(objects, "Secret"):
        values = {k: base64.b64decode(v).decode() for k, v in (s.get("data") or {}).items()}
        values.update(s.get("stringData") or {})
        out[s["metadata"]["name"]] = values
    return out


def container_env(container, secrets):
    """The container's environment as far as the manifests say: values, and secretKeyRef values
    from the Secrets defined alongside (one created elsewhere reads as unset)."""
    env = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            env[e["name"]] = secrets.get(ref.get("name"), {}).get(ref.get("key"), "")
        else:
            env[e["name"]] = e.get("value", "")
    return env


def secret_mounted(pod, container, path):
    """Whether `path` is in the container's mount of a Secret volume (the innermost mount
    that holds it)."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    holding = [m for m in container.get("volumeMounts", [])
               if path == m["mountPath"].rstrip("/")
               or path.startswith(m["mountPath"].rstrip("/") + "/")]
    if not holding:
        return False
    inner = max(holding, key=lambda m: len(m["mountPath"].rstrip("/")))
    return "secret" in volumes.get(inner["name"], {})


def sidecar_errors(objects, check_config):
    """`check_config(text, env)` gives the effective config as check-config --json prints it."""
    errors, sidecars = [], 0
    configmaps = {o["metadata"]["name"]: o for o in of_kind(objects, "ConfigMap")}
    secrets = secret_values(objects)
    for w in of_kind(objects, "Deployment", "StatefulSet", "DaemonSet"):
        pod = w["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []):
            if c["name"] != "ddbcache":
                continue
            sidecars += 1
            where = f"{name_of(w)}: ddbcache"
            if c.get("restartPolicy") != "Always":
                errors.append(f"{where}: needs restartPolicy: Always (a native sidecar)")
            for probe, path in PROBES.items():
                if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                    errors.append(f"{where}: {probe} should be an httpGet of {path}")
            path, text = mounted_config(pod, c, configmaps)
            if text is None:
                errors.append(f"{where}: no mounted ConfigMap provides {path}")
                continue
            env = container_env(c, secrets)
            try:
                cfg = check_config(text, env)
            except ValueError as e:
                errors.append(f"{where}: ddbcache check-config rejects its config: {e}")
                continue
            admin, listen = cfg["listen"]["admin_addr"], cfg["listen"]["addr"]
            ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for probe in PROBES:
                port = c.get(probe, {}).get("httpGet", {}).get("port")
                if port is not None and ports.get(port, port) != port_of(admin):
                    errors.append(f"{where}: {probe} port {port} is not admin_addr's port "
                                  f"{port_of(admin)}")
            if admin.rpartition(":")[0] not in ("0.0.0.0", "[::]"):
                errors.append(f"{where}: admin_addr {admin} is unreachable for the kubelet's "
                              "probes and Prometheus (use 0.0.0.0)")
            for app in pod.get("containers", []):
                url = {e["name"]: e.get("value") for e in app.get("env", [])}.get(
                    "AWS_ENDPOINT_URL_DYNAMODB")
                if url != f"http://{listen}":
                    errors.append(f"{name_of(w)}: {app['name']} has AWS_ENDPOINT_URL_DYNAMODB="
                                  f"{url}, not http://{listen} (the sidecar's listen.addr)")
            needed = cfg["derived"]["container_memory_bytes"]
            limit = c.get("resources", {}).get("limits", {}).get("memory")
            if limit is None or parse_quantity(limit) < needed:
                errors.append(f"{where}: memory limit {limit} is below the "
                              f"{-(-needed // 2**20)}Mi check-config gives for its config "
                              f"({cfg['derived']['container_memory_rule']})")
            shared = cfg.get("fleet", {}).get("shared", {})
            if shared.get("enabled"):
                key = shared.get("key_file")
                if not key:
                    errors.append(f"{where}: fleet.shared is on without fleet.shared.key_file: "
                                  "its entries in Redis are table data; seal them with a key "
                                  "mounted from a Secret")
                elif not secret_mounted(pod, c, key):
                    errors.append(f"{where}: fleet.shared.key_file {key} is not in a mounted "
                                  "Secret volume")
            grace = pod.get("terminationGracePeriodSeconds", 30)
            if grace <= cfg["server"]["shutdown_grace"]:
                errors.append(f"{where}: terminationGracePeriodSeconds {grace} does not cover "
                              f"shutdown_grace ({cfg['server']['shutdown_grace']}s)")
    if not sidecars:
        errors.append("no ddbcache sidecar (an init container named ddbcache) found")
    return errors


# --- dashboards -------------------------------------------------------------------------------

def dashboard_queries(dashboard):
    def panels(items):
        for p in items:
            yield p
            yield from panels(p.get("panels", []))
    queries = [(p.get("title", "?"), t["expr"]) for p in panels(dashboard.get("panels", []))
               for t in p.get("targets", []) if t.get("expr")]
    for var in dashboard.get("templating", {}).get("list", []):
        q = var.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q or "")
        if var.get("type") == "query" and m:
            queries.append((f"variable {var['name']}", m.group(1)))
    return queries


def promql_errors(dashboard):
    errors = []
    for where, expr in dashboard_queries(dashboard):
        try:
            promql_parser.parse(re.sub(r"\$__(rate_interval|interval|range)", "5m", expr))
        except ValueError as e:
            errors.append(f"{where}: {e}: {expr}")
    return errors


# --- the whole of deploy/ ---------------------------------------------------------------------

def lint(root, check_config, say=print):
    root = pathlib.Path(root)
    deploy = root / "deploy"
    errors = []

    hadolint = pathlib.Path(sys.executable).parent / "hadolint"
    say("hadolint deploy/Dockerfile")
    r = subprocess.run([str(hadolint), str(deploy / "Dockerfile")], capture_output=True, text=True)
    if r.returncode != 0:
        errors.append(f"deploy/Dockerfile: hadolint:\n{r.stdout}{r.stderr}")
    reference = (root / "config/ddbcache.toml").read_text()
    if IMAGE_ADMIN_LINE not in reference.splitlines():
        errors.append(f"config/ddbcache.toml has no line '{IMAGE_ADMIN_LINE}', which "
                      "deploy/Dockerfile rewrites")
    else:
        image = reference.replace(IMAGE_ADMIN_LINE, f'admin_addr = "{IMAGE_ADMIN_ADDR}"')
        try:
            if check_config(image, {})["listen"]["admin_addr"] != IMAGE_ADMIN_ADDR:
                errors.append("the image's default config does not listen on "
                              f"{IMAGE_ADMIN_ADDR} for probes")
        except ValueError as e:
            errors.append(f"ddbcache check-config rejects the image's default config: {e}")

    objects = []
    for kfile in sorted((deploy / "kubernetes").rglob("kustomization.yaml")):
        say(f"kustomization {kfile.parent.relative_to(root)}")
        missing = missing_files(kfile.parent)
        errors += missing
        if not missing:
            objects += kustomization_objects(kfile.parent)
    objects = distinct(objects)
    say(f"kubernetes-validate --strict ({', '.join(K8S_VERSIONS)}) of {len(objects)} objects, "
        "references, webhooks, and ddbcache sidecars against check-config")
    errors += schema_errors(objects) + reference_errors(objects)
    errors += webhook_errors(objects)
    errors += sidecar_errors(objects, check_config)
    for toml in sorted((deploy / "kubernetes").rglob("*.toml")):
        try:
            check_config(toml.read_text(), {})
        except ValueError as e:
            errors.append(f"{toml.relative_to(root)}: {e}")

    for path in sorted((deploy / "grafana").glob("*.json")):
        say(f"dashboard {path.relative_to(root)}")
        try:
            errors += [f"{path.relative_to(root)}: {e}"
                       for e in promql_errors(json.loads(path.read_text()))]
        except json.JSONDecodeError as e:
            errors.append(f"{path.relative_to(root)}: not JSON: {e}")
    return list(dict.fromkeys(errors))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="the repository")
    parser.add_argument("--ddbcache", required=True, help="a built ddbcache binary")
    args = parser.parse_args(argv)
    errors = lint(args.root, CheckConfig(args.ddbcache), say=lambda m: print(f"lint-deploy: {m}"))
    if errors:
        print("\n".join(errors), file=sys.stderr)
        return 1
    print("lint-deploy: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
