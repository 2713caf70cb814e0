#!/usr/bin/env bash
# Lints everything under deploy/; runs from any directory, and offline once the tools are in.
#
#   deploy/Dockerfile               hadolint; the config line it rewrites is in config/ddbcache.toml
#   deploy/kubernetes/**            every file a kustomization names exists. Each kustomization's
#                                   objects (its rendered output when kustomize or kubectl is on
#                                   PATH; else its resources and generated ConfigMaps, without
#                                   patches) validate against the Kubernetes schemas shipped in
#                                   kubernetes-validate (--strict: no unknown fields), for the
#                                   oldest Kubernetes with native sidecars on by default and the
#                                   newest known. A kind with no schema fails, except the
#                                   ServiceMonitor CRD, which is checked by reference instead.
#                                   Across all of them: selectors, port names and numbers, the
#                                   ConfigMap and ServiceAccount a pod names, and the ddbcache
#                                   sidecar against its own config (probes on the admin port,
#                                   AWS_ENDPOINT_URL_DYNAMODB at its listen address, memory from
#                                   the cache capacities, grace period above shutdown_grace)
#   deploy/kubernetes/**/ddbcache.toml, DDBCACHE_* names
#                                   parse; every DDBCACHE_* name in deploy/ is read by src/; when
#                                   a built ddbcache binary exists, `ddbcache check-config`
#                                   accepts each sidecar's effective config (its file plus its
#                                   DDBCACHE_* environment) and the image's default config
#   deploy/grafana/*.json           parses; every query is valid PromQL; every ddbcache_* metric
#                                   it names is registered in src/metrics.rs
#
# Tools: pinned in scripts/requirements-lint.txt, installed into .venv (created if missing, with
# python3 >= 3.11 or $PYTHON) and reinstalled only when that file changes.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
requirements="$root/scripts/requirements-lint.txt"
python="${PYTHON:-python3}"
# Native sidecars are on by default from 1.29; 1.37 is the newest schema set the package ships.
k8s_versions=(1.29.0 1.37.0)
# The line deploy/Dockerfile rewrites (admin port on all interfaces in the image's config).
image_admin_line='admin_addr = "127.0.0.1:9000"'

say() { printf 'lint-deploy: %s\n' "$*"; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

install_tools() {
    # (Re)create it when missing or broken, e.g. after the system python changed version.
    if ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
        if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "lint-deploy: needs python3 >= 3.11 (tomllib), or PYTHON set to one" >&2
            exit 1
        fi
        say "creating .venv"
        "$python" -m venv --clear "$venv"
    fi
    local stamp="$venv/.ddbcache-lint" sum
    sum="$(sha256sum "$requirements" | cut -d' ' -f1)"
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$sum" && -x "$venv/bin/hadolint" \
        && -x "$venv/bin/kubernetes-validate" ]]; then
        return
    fi
    say "installing lint tools into .venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    printf '%s\n' "$sum" >"$stamp"
}

lint_dockerfile() {
    say "hadolint deploy/Dockerfile"
    "$venv/bin/hadolint" "$root/deploy/Dockerfile"
    if ! grep -qxF "$image_admin_line" "$root/config/ddbcache.toml"; then
        echo "config/ddbcache.toml has no line '$image_admin_line', which deploy/Dockerfile rewrites" >&2
        exit 1
    fi
}

# The newest built ddbcache binary, or nothing (building one is the core's business, not this
# script's). An older binary than the sources may lag behind a newly added key.
find_binary() {
    local bin="" candidate
    for candidate in "$root/target/release/ddbcache" "$root/target/debug/ddbcache"; do
        if [[ -x "$candidate" && ( -z "$bin" || "$candidate" -nt "$bin" ) ]]; then bin="$candidate"; fi
    done
    printf '%s' "$bin"
}

lint_manifests() {
    local render=() dir n=0 args=()
    if command -v kustomize >/dev/null 2>&1; then
        render=(kustomize build)
    elif command -v kubectl >/dev/null 2>&1; then
        render=(kubectl kustomize)
    else
        say "no kustomize or kubectl on PATH: kustomizations checked without their patches"
    fi
    while IFS= read -r dir; do
        if ((${#render[@]})); then
            n=$((n + 1))
            say "${render[*]} ${dir#"$root"/}"
            "${render[@]}" "$dir" >"$tmp/rendered-$n.yaml"
            args+=("$dir=$tmp/rendered-$n.yaml")
        else
            args+=("$dir=")
        fi
    done < <(find "$root/deploy/kubernetes" -name kustomization.yaml -printf '%h\n' | sort)

    say "kubernetes-validate --strict (${k8s_versions[*]}) and cross-references"
    "$venv/bin/python" - "$root" "${k8s_versions[*]}" "$(find_binary)" "${args[@]}" <<'PY'
import json, os, pathlib, re, subprocess, sys, tempfile, tomllib
import yaml
import kubernetes_validate as kv

root = pathlib.Path(sys.argv[1])
versions = sys.argv[2].split()
binary = sys.argv[3]
pairs = [a.split("=", 1) for a in sys.argv[4:]]
errors = []

def rel(p):
    return str(pathlib.Path(p).resolve().relative_to(root))

# --- kustomizations: named files exist; objects without a renderer --------------------------
def load_kustomization(kdir):
    return yaml.safe_load((kdir / "kustomization.yaml").read_text()) or {}

def check_names(kdir):
    doc = load_kustomization(kdir)
    named = list(doc.get("resources", []))
    named += [p["path"] for p in doc.get("patches", []) if "path" in p]
    for gen in doc.get("configMapGenerator", []) + doc.get("secretGenerator", []):
        named += [f.split("=", 1)[-1] for f in gen.get("files", [])]
    for name in named:
        if not (kdir / name).exists():
            errors.append(f"{rel(kdir)}/kustomization.yaml: {name} does not exist")

def unrendered(kdir):
    """Resources (recursively) and generated ConfigMaps; patches are not applied."""
    doc, objs = load_kustomization(kdir), []
    for name in doc.get("resources", []):
        path = (kdir / name).resolve()
        if path.is_dir() and (path / "kustomization.yaml").exists():
            objs += unrendered(path)
        elif path.is_file():
            objs += [(rel(path), o) for o in yaml.safe_load_all(path.read_text()) if o]
    for gen in doc.get("configMapGenerator", []):
        data = {}
        for f in gen.get("files", []):
            key, _, src = f.rpartition("=")
            data[key or pathlib.Path(src).name] = (kdir / src).read_text()
        objs.append((f"{rel(kdir)} configMapGenerator", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]},
            "data": data}))
    return objs

objects = []  # (where, object), over every kustomization
for kdir, rendered in pairs:
    kdir = pathlib.Path(kdir)
    check_names(kdir)
    if errors:
        continue
    if rendered:
        where = f"{rel(kdir)} (rendered)"
        objects += [(where, o) for o in yaml.safe_load_all(pathlib.Path(rendered).read_text()) if o]
    else:
        objects += unrendered(kdir)

# --- schemas -------------------------------------------------------------------------------
# Custom resources kubernetes-validate has no schema for, checked by reference further down.
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
seen = set()
for where, o in objects:
    ident = json.dumps(o, sort_keys=True)
    if ident in seen:
        continue
    seen.add(ident)
    name = f"{where}: {o.get('kind')}/{o.get('metadata', {}).get('name')}"
    for v in versions:
        try:
            kv.validate(o, v, strict=True)
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            errors.append(f"{name}: not valid for Kubernetes {e.version}: {path}: {e.message}")
        except kv.SchemaNotFoundError as e:
            if (o.get("apiVersion"), o.get("kind")) not in CRDS:
                errors.append(f"{name}: {e.message}")

# --- cross-references ----------------------------------------------------------------------
def of_kind(kind):
    out, seen = [], set()
    for where, o in objects:
        ident = json.dumps(o, sort_keys=True)
        if o.get("kind") == kind and ident not in seen:
            seen.add(ident)
            out.append((where, o))
    return out

def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

def containers(pod):
    return pod.get("containers", []) + pod.get("initContainers", [])

workloads = [(w, o) for k in ("Deployment", "StatefulSet", "DaemonSet") for w, o in of_kind(k)]
services = of_kind("Service")
configmaps = {o["metadata"]["name"]: o for _, o in of_kind("ConfigMap")}
accounts = {o["metadata"]["name"] for _, o in of_kind("ServiceAccount")}

for where, sm in of_kind("ServiceMonitor"):
    name = f"{where}: ServiceMonitor/{sm['metadata'].get('name')}"
    spec = sm.get("spec", {})
    match = spec.get("selector", {}).get("matchLabels", {})
    endpoints = spec.get("endpoints") or []
    if not match or not endpoints:
        errors.append(f"{name}: needs spec.selector.matchLabels and spec.endpoints")
        continue
    unknown = set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel",
                           "targetLabels", "podTargetLabels", "sampleLimit", "targetLimit",
                           "scrapeProtocols", "fallbackScrapeProtocol", "labelLimit",
                           "labelNameLengthLimit", "labelValueLengthLimit", "keepDroppedTargets",
                           "attachMetadata", "scrapeClass", "bodySizeLimit",
                           "nativeHistogramBucketLimit", "nativeHistogramMinBucketFactor",
                           "scrapeClassicHistograms", "convertClassicHistogramsToNHCB",
                           "selectorMechanism", "serviceDiscoveryRole"}
    if unknown:
        errors.append(f"{name}: unknown spec fields {sorted(unknown)}")
    chosen = [s for _, s in services if selects(match, s["metadata"].get("labels", {}))]
    if not chosen:
        errors.append(f"{name}: selects no Service (matchLabels {match})")
    for ep in endpoints:
        unknown = set(ep) - {"port", "targetPort", "path", "scheme", "interval", "scrapeTimeout",
                             "honorLabels", "relabelings", "metricRelabelings", "params",
                             "tlsConfig", "bearerTokenSecret", "authorization", "basicAuth",
                             "oauth2", "followRedirects", "enableHttp2", "proxyUrl",
                             "honorTimestamps", "filterRunning", "trackTimestampsStaleness"}
        if unknown:
            errors.append(f"{name}: unknown endpoint fields {sorted(unknown)}")
        for s in chosen:
            if "port" in ep and ep["port"] not in [p.get("name") for p in s["spec"].get("ports", [])]:
                errors.append(f"{name}: Service/{s['metadata']['name']} has no port named {ep['port']}")

for where, svc in services:
    name = f"{where}: Service/{svc['metadata']['name']}"
    selector = svc["spec"].get("selector", {})
    pods = [o["spec"]["template"] for _, o in workloads
            if selects(selector, o["spec"]["template"]["metadata"].get("labels", {}))]
    if selector and not pods:
        errors.append(f"{name}: selects no pods (selector {selector})")
    for port in svc["spec"].get("ports", []):
        target = port.get("targetPort", port.get("port"))
        for pod in pods:
            regular = [p for c in pod["spec"].get("containers", []) for p in c.get("ports", [])]
            every = [p for c in containers(pod["spec"]) for p in c.get("ports", [])]
            if isinstance(target, int):
                if target not in [p["containerPort"] for p in every]:
                    errors.append(f"{name}: targetPort {target} is no container's port")
            elif target not in [p.get("name") for p in regular]:
                # Before Kubernetes 1.32 a Service cannot resolve the port names of init
                # (sidecar) containers: use the number.
                errors.append(f"{name}: targetPort {target} is not a port name of a regular container")

# --- the ddbcache sidecar against its own config ---------------------------------------------
def parse_size(v):
    if isinstance(v, int):
        return v
    m = re.fullmatch(r"\s*([\d.]+)\s*(B|KB|kB|KiB|MB|MiB|GB|GiB)?\s*", v)
    unit = {None: 1, "B": 1, "KB": 10**3, "kB": 10**3, "KiB": 2**10, "MB": 10**6,
            "MiB": 2**20, "GB": 10**9, "GiB": 2**30}[m.group(2)]
    return int(float(m.group(1)) * unit)

def parse_quantity(v):
    m = re.fullmatch(r"([\d.]+)(Ki|Mi|Gi|Ti|k|M|G|T)?", str(v))
    unit = {None: 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3,
            "M": 10**6, "G": 10**9, "T": 10**12}[m.group(2)]
    return int(float(m.group(1)) * unit)

def parse_duration(v):
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}
    parts = re.findall(r"(\d+)\s*([a-z]+)", v)
    return sum(int(n) * units[u] for n, u in parts)

# Defaults and the DDBCACHE_* -> key mapping, both from the documented config/ddbcache.toml.
reference = (root / "config/ddbcache.toml").read_text()
defaults = tomllib.loads(reference)
env_keys = dict(re.findall(r"^#\s+(DDBCACHE_[A-Z0-9_]+)\s+([a-z_.]+)", reference, re.M))

def effective(file_text, env):
    cfg = json.loads(json.dumps(defaults))
    for section, values in tomllib.loads(file_text).items():
        cfg.setdefault(section, {})
        for k, v in values.items():
            if isinstance(v, dict):
                cfg[section].setdefault(k, {}).update(v)
            else:
                cfg[section][k] = v
    for var, value in env.items():
        if var in env_keys:
            *path, last = env_keys[var].split(".")
            node = cfg
            for p in path:
                node = node.setdefault(p, {})
            node[last] = value
    return cfg

sidecars = 0
for where, w in workloads:
    pod = w["spec"]["template"]["spec"]
    name = f"{where}: {w['kind']}/{w['metadata']['name']}"
    sa = pod.get("serviceAccountName")
    if sa and sa not in accounts:
        errors.append(f"{name}: ServiceAccount {sa} is not defined")
    for vol in pod.get("volumes", []):
        if "configMap" in vol and vol["configMap"]["name"] not in configmaps:
            errors.append(f"{name}: ConfigMap {vol['configMap']['name']} is not defined")
    for c in containers(pod):
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                errors.append(f"{name}: {c['name']} {probe} port {port} is not a port of that container")
    for c in pod.get("initContainers", []):
        if c["name"] != "ddbcache":
            continue
        sidecars += 1
        cname = f"{name}: ddbcache"
        if c.get("restartPolicy") != "Always":
            errors.append(f"{cname}: needs restartPolicy: Always (a native sidecar)")
        expected = {"startupProbe": "/readyz", "readinessProbe": "/readyz", "livenessProbe": "/healthz"}
        for probe, path in expected.items():
            if c.get(probe, {}).get("httpGet", {}).get("path") != path:
                errors.append(f"{cname}: {probe} should be an httpGet of {path}")
        env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
        mounts = {m["name"]: m["mountPath"] for m in c.get("volumeMounts", [])}
        config_path = env.get("DDBCACHE_CONFIG", "/etc/ddbcache/ddbcache.toml")
        text = None
        for vol in pod.get("volumes", []):
            cm = configmaps.get(vol.get("configMap", {}).get("name"))
            mount = mounts.get(vol["name"])
            if cm and mount and config_path.startswith(mount.rstrip("/") + "/"):
                text = cm.get("data", {}).get(config_path[len(mount.rstrip("/")) + 1:])
        if text is None:
            errors.append(f"{cname}: no mounted ConfigMap provides {config_path}")
            continue
        cfg = effective(text, env)
        admin_host, _, admin_port = cfg["listen"]["admin_addr"].rpartition(":")
        listen = cfg["listen"]["addr"]
        ports = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
        for probe in expected:
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if port is not None and ports.get(port, port) != int(admin_port):
                errors.append(f"{cname}: {probe} port {port} is not admin_addr's port {admin_port}")
        if admin_host not in ("0.0.0.0", "[::]"):
            errors.append(f"{cname}: admin_addr {cfg['listen']['admin_addr']} is unreachable for "
                          "the kubelet's probes and Prometheus (use 0.0.0.0)")
        for app in pod.get("containers", []):
            app_env = {e["name"]: e.get("value") for e in app.get("env", [])}
            url = app_env.get("AWS_ENDPOINT_URL_DYNAMODB")
            if url != f"http://{listen}":
                errors.append(f"{name}: {app['name']} has AWS_ENDPOINT_URL_DYNAMODB={url}, "
                              f"not http://{listen} (the sidecar's listen.addr)")
        # The sizing rule in deploy/kubernetes/base/deployment.yaml.
        capacity = sum(parse_size(cfg["cache"][k]["capacity"]) for k in ("item", "query"))
        needed = int(capacity * 1.25) + 30 * 2**20
        limit = c.get("resources", {}).get("limits", {}).get("memory")
        if limit is None or parse_quantity(limit) < needed:
            errors.append(f"{cname}: memory limit {limit} is below (item + query capacity) x 1.25"
                          f" + 30MiB = {needed / 2**20:.0f}MiB")
        grace = pod.get("terminationGracePeriodSeconds", 30)
        shutdown = parse_duration(cfg["server"]["shutdown_grace"])
        if grace <= shutdown:
            errors.append(f"{cname}: terminationGracePeriodSeconds {grace} does not cover "
                          f"shutdown_grace {cfg['server']['shutdown_grace']}")
        if binary:
            with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
                f.write(text)
                f.flush()
                run_env = {k: v for k, v in os.environ.items() if not k.startswith("DDBCACHE_")}
                run_env.update({k: v for k, v in env.items() if k != "DDBCACHE_CONFIG"})
                r = subprocess.run([binary, "check-config", "--config", f.name], env=run_env,
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    errors.append(f"{cname}: ddbcache check-config rejects its config: "
                                  f"{r.stderr.strip()}")
if not sidecars and not errors:
    errors.append("no ddbcache sidecar (an init container named ddbcache) found in deploy/kubernetes")

if errors:
    sys.exit("\n".join(dict.fromkeys(errors)))
checked = f", each with `{rel(binary)} check-config`" if binary else " (no built ddbcache binary: check-config skipped)"
print(f"lint-deploy: {len(seen)} distinct objects valid; ddbcache sidecars consistent with "
      f"their config: {sidecars}{checked}")
PY
}

lint_sidecar_config() {
    say "DDBCACHE_* names and config files"
    "$venv/bin/python" - "$root" <<'PY'
import pathlib, re, sys, tomllib

root = pathlib.Path(sys.argv[1])
known = set()
for src in (root / "src").rglob("*.rs"):
    known |= set(re.findall(r'"(DDBCACHE_[A-Z0-9_]+)"', src.read_text()))
if not known:
    sys.exit("no DDBCACHE_* names found in src/")
errors = []
files = [root / "deploy/Dockerfile", root / "deploy/README.md",
         *sorted((root / "deploy/kubernetes").rglob("*.yaml"))]
for f in files:
    if not f.exists():
        continue
    for name in sorted(set(re.findall(r"\b(DDBCACHE_[A-Z0-9_]+)\b", f.read_text())) - known):
        errors.append(f"{f.relative_to(root)}: {name} is not a variable ddbcache reads")
for f in sorted((root / "deploy/kubernetes").rglob("*.toml")):
    try:
        tomllib.loads(f.read_text())
    except tomllib.TOMLDecodeError as e:
        errors.append(f"{f.relative_to(root)}: {e}")
if errors:
    sys.exit("\n".join(errors))
PY
    local bin f
    bin="$(find_binary)"
    if [[ -z "$bin" ]]; then
        say "no built ddbcache binary: check-config skipped"
        return
    fi
    while IFS= read -r f; do
        say "${bin#"$root"/} check-config --config ${f#"$root"/}"
        env -u DDBCACHE_CONFIG "$bin" check-config --config "$f" >/dev/null
    done < <(find "$root/deploy/kubernetes" -name '*.toml' | sort)
    # The image's default config: config/ddbcache.toml as deploy/Dockerfile rewrites it.
    sed "s/^${image_admin_line//./\\.}\$/admin_addr = \"0.0.0.0:9000\"/" \
        "$root/config/ddbcache.toml" >"$tmp/image.toml"
    say "${bin#"$root"/} check-config of the image's default config"
    env -u DDBCACHE_CONFIG "$bin" check-config --config "$tmp/image.toml" \
        | grep -qxF 'admin_addr = "0.0.0.0:9000"'
}

lint_dashboards() {
    local f
    for f in "$root"/deploy/grafana/*.json; do
        say "dashboard ${f#"$root"/}"
        "$venv/bin/python" - "$root" "$f" <<'PY'
import json, pathlib, re, sys
import promql_parser

root, path = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
registered = set(re.findall(r'"(ddbcache_[a-z0-9_]+)"', (root / "src/metrics.rs").read_text()))
if not registered:
    sys.exit("no ddbcache_* metrics found in src/metrics.rs")
try:
    dash = json.loads(path.read_text())
except json.JSONDecodeError as e:
    sys.exit(f"{path.relative_to(root)}: not JSON: {e}")

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))

queries = [(p.get("title", "?"), t["expr"]) for p in panels(dash.get("panels", []))
           for t in p.get("targets", []) if t.get("expr")]
for var in dash.get("templating", {}).get("list", []):
    q = var.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q or "")
    if var.get("type") == "query" and m:
        queries.append((f"variable {var['name']}", m.group(1)))

errors = []
for where, expr in queries:
    try:
        promql_parser.parse(re.sub(r"\$__(rate_interval|interval|range)", "5m", expr))
    except ValueError as e:
        errors.append(f"{where}: {e}: {expr}")
    for name in re.findall(r"\bddbcache_[a-z0-9_]+", expr):
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        if name not in registered and base not in registered:
            errors.append(f"{where}: {name} is not registered in src/metrics.rs")
if errors:
    sys.exit("\n".join(errors))
print(f"lint-deploy: {len(queries)} queries parse, metric names all registered")
PY
    done
}

install_tools
lint_dockerfile
lint_manifests
lint_sidecar_config
lint_dashboards
say "ok"
