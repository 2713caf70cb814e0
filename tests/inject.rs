//! `ddbcache inject` and its admission webhook, on real-world-shaped manifests
//! (`tests/inject/*.yaml`, sidecars sized for `tests/inject/ddbcache.toml`):
//!
//! - the CLI's output and warnings against the goldens in `tests/inject/golden/`; after a change
//!   meant to alter them, `UPDATE_GOLDEN=1 cargo test --test inject` rewrites them (read the diff);
//! - every output valid for Kubernetes 1.29 and 1.37 (`kubernetes-validate --strict`, offline,
//!   from `.venv`: `scripts/setup.sh` installs it);
//! - injecting twice is injecting once, and `--uninject` gives the input back, over every case
//!   and as properties of generated pods;
//! - the injected sidecar is the hand-written one of `deploy/kubernetes/base`;
//! - the webhook over HTTPS, with certificates made here: a patch per case that gives the CLI's
//!   output, reviews it cannot read and kinds without a pod template admitted unchanged with a
//!   warning, and a renewed certificate served without a restart.

#[path = "common/tls.rs"]
#[allow(dead_code)]
mod tls;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ddbcache::config::Config;
use ddbcache::inject::sidecar::{CONTAINER, ENDPOINT_VAR};
use ddbcache::inject::webhook::{Webhook, WebhookOptions, PATH};
use ddbcache::inject::{self, Found, Injector, Options, INJECTED_ANNOTATION};
use http::StatusCode;
use http_body_util::BodyExt as _;
use kube_core::admission::AdmissionReview;
use kube_core::DynamicObject;
use proptest::prelude::*;
use serde_json::{json, Value};

const IMAGE: &str = "registry.example.com/ddbcache:test";

/// Each case: a file of `tests/inject/`, and the flags it is injected with.
const CASES: &[(&str, &[&str])] = &[
    ("deployment-multi-container", &[]),
    ("statefulset-init-containers", &[]),
    ("cronjob", &[]),
    ("list", &[]),
    ("opt-out", &[]),
    ("host-network-clash", &[]),
    ("endpoint-already-set", &[]),
    ("pod-yaml11", &[]),
    ("only-annotated", &["--only-annotated"]),
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(case: &str) -> PathBuf {
    root().join(format!("tests/inject/{case}.yaml"))
}

fn config_file() -> PathBuf {
    root().join("tests/inject/ddbcache.toml")
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    inject::parse_yaml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn injector(flags: &[&str]) -> Injector {
    let options = Options {
        image: IMAGE.to_string(),
        only_annotated: flags.contains(&"--only-annotated"),
        ..Options::default()
    };
    Injector::new(&Config::from_file(&config_file()).unwrap(), options)
}

/// `ddbcache --config tests/inject/ddbcache.toml inject --image IMAGE <args> <input>`, with no
/// `DDBCACHE_*` variable of this process: its standard output and standard error.
fn cli(args: &[&str], input: &Path) -> (String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ddbcache"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("DDBCACHE_") {
            command.env_remove(name);
        }
    }
    let out = command
        .arg("--config")
        .arg(config_file())
        .args(["inject", "--image", IMAGE])
        .args(args)
        .arg(input)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        out.status.success(),
        "ddbcache inject {args:?} {}: {stderr}",
        input.display()
    );
    (String::from_utf8(out.stdout).unwrap(), stderr)
}

/// The warnings `ddbcache inject` printed, without their prefix.
fn cli_warnings(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ddbcache inject: warning: "))
        .map(str::to_string)
        .collect()
}

/// Compares `actual` with the golden file `name` (or rewrites it under `UPDATE_GOLDEN`); the
/// difference, if any.
fn golden(name: &str, actual: &str) -> Option<String> {
    let path = root().join("tests/inject/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return None;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    (expected != actual).then(|| {
        format!(
            "{} differs (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{expected}--- actual\n{actual}",
            path.display()
        )
    })
}

/// `value` with every null, empty list and empty map left out of objects: what Kubernetes
/// treats as absent (the API server never returns them).
fn normalized(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), normalized(v)))
                .filter(|(_, v)| match v {
                    Value::Null => false,
                    Value::Array(a) => !a.is_empty(),
                    Value::Object(o) => !o.is_empty(),
                    _ => true,
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(normalized).collect()),
        other => other.clone(),
    }
}

#[test]
fn cli_output_and_warnings_match_the_goldens() {
    let mut differences = Vec::new();
    for (case, flags) in CASES {
        let (out, err) = cli(flags, &fixture(case));
        differences.extend(golden(&format!("{case}.yaml"), &out));
        differences.extend(golden(&format!("{case}.stderr"), &err));
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[test]
fn every_output_is_valid_for_kubernetes() {
    let validate = root().join(".venv/bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{} not found: run scripts/setup.sh first",
        validate.display()
    );
    let dir = std::env::temp_dir().join(format!("ddbcache-inject-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (case, flags) in CASES {
        let (out, _) = cli(flags, &fixture(case));
        // kubernetes-validate has no schema for `List`: its items are validated one by one.
        let mut objects = Vec::new();
        for document in inject::parse_yaml(&out).unwrap() {
            match document["items"].as_array() {
                Some(items) if document["kind"] == "List" => objects.extend(items.clone()),
                _ => objects.push(document),
            }
        }
        for (i, object) in objects.iter().enumerate() {
            let file = dir.join(format!("{case}-{i}.yaml"));
            std::fs::write(
                &file,
                inject::to_yaml(std::slice::from_ref(object)).unwrap(),
            )
            .unwrap();
            files.push(file);
        }
    }
    let out = Command::new(&validate)
        .args(["--strict", "-k", "1.29.0", "-k", "1.37.0"])
        .args(&files)
        .output()
        .unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        out.status.success() && !report.contains("WARN") && !report.contains("ERROR"),
        "{report}"
    );
    // Two passes (1.29, 1.37) of every object.
    assert_eq!(
        report.matches("passed").count(),
        2 * files.len(),
        "{report}"
    );
}

#[test]
fn injecting_twice_changes_nothing_and_uninject_gives_back_every_input() {
    let mut injected = 0;
    for (case, flags) in CASES {
        let injector = injector(flags);
        for (i, original) in documents(&fixture(case)).into_iter().enumerate() {
            let mut once = original.clone();
            let first = injector.inject(&mut once);
            injected += first.changed;
            let mut twice = once.clone();
            let again = injector.inject(&mut twice);
            assert_eq!(
                twice, once,
                "{case} document {i}: a second injection changed it"
            );
            assert_eq!(again.changed, 0, "{case} document {i}");
            // What it added is not taken for the application's own settings.
            assert_eq!(again.warnings, first.warnings, "{case} document {i}");
            let mut back = once.clone();
            inject::uninject(&mut back);
            assert_eq!(
                normalized(&back),
                normalized(&original),
                "{case} document {i}: uninject did not give the input back"
            );
        }
    }
    assert_eq!(injected, 8, "pod templates injected over all cases");
}

#[test]
fn uninject_on_the_command_line_gives_back_every_input() {
    for (case, _) in CASES {
        let (out, err) = cli(
            &["--uninject"],
            &root().join(format!("tests/inject/golden/{case}.yaml")),
        );
        assert!(cli_warnings(&err).is_empty(), "{case}: {err}");
        let back: Vec<Value> = inject::parse_yaml(&out).unwrap();
        let original = documents(&fixture(case));
        assert_eq!(
            back.iter().map(normalized).collect::<Vec<_>>(),
            original.iter().map(normalized).collect::<Vec<_>>(),
            "{case}"
        );
    }
}

fn endpoint_values(container: &Value) -> Vec<&str> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["name"] == ENDPOINT_VAR)
        .map(|e| e["value"].as_str().unwrap_or(""))
        .collect()
}

#[test]
fn a_container_added_after_injection_gets_the_endpoint_and_uninject_removes_it() {
    // What a webhook's reinvocation sees: another webhook added a container after ddbcache's.
    let injector = injector(&[]);
    let mut pod = documents(&fixture("cronjob")).remove(0);
    let original = pod.clone();
    injector.inject(&mut pod);
    let template = &mut pod["spec"]["jobTemplate"]["spec"]["template"];
    let added = json!({"name": "log-shipper", "image": "registry.example.com/shipper:1"});
    template["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(added);
    let report = injector.inject(&mut pod);
    assert_eq!(report.changed, 1);
    let template = &pod["spec"]["jobTemplate"]["spec"]["template"];
    let record: inject::Record = serde_json::from_str(
        template["metadata"]["annotations"][INJECTED_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(record.endpoint_env, ["export", "log-shipper"]);
    for container in template["spec"]["containers"].as_array().unwrap() {
        assert_eq!(endpoint_values(container), ["http://127.0.0.1:8000"]);
    }
    inject::uninject(&mut pod);
    let template = &mut pod["spec"]["jobTemplate"]["spec"]["template"];
    let shipper = template["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        shipper,
        json!({"name": "log-shipper", "image": "registry.example.com/shipper:1"})
    );
    assert_eq!(normalized(&pod), normalized(&original));
}

#[test]
fn injected_sidecar_is_the_hand_written_one() {
    let hand = documents(&root().join("deploy/kubernetes/base/deployment.yaml")).remove(0);
    let config = Config::from_file(&root().join("deploy/kubernetes/base/ddbcache.toml")).unwrap();
    // The same Deployment without its sidecar, asking for the same ConfigMap and Secret.
    let mut bare = hand.clone();
    let template = &mut bare["spec"]["template"];
    template["metadata"]["annotations"][inject::CONFIG_ANNOTATION] = json!("ddbcache-config");
    template["metadata"]["annotations"][inject::ADMIN_TOKEN_SECRET_ANNOTATION] =
        json!("ddbcache-admin");
    let spec = template["spec"].as_object_mut().unwrap();
    let written = spec.remove("initContainers").unwrap()[0].clone();
    let written_volumes: Vec<Value> = spec["volumes"].as_array().unwrap()[..2].to_vec();
    spec["volumes"].as_array_mut().unwrap().drain(..2);
    let app = &mut spec["containers"][0];
    let endpoint = app["env"][0].clone();
    app["env"].as_array_mut().unwrap().drain(..2);

    let options = Options {
        image: "ddbcache".to_string(),
        ..Options::default()
    };
    let report = Injector::new(&config, options).inject(&mut bare);
    assert_eq!((report.changed, report.warnings), (1, vec![]));
    let spec = &bare["spec"]["template"]["spec"];
    let injected = &spec["initContainers"][0];
    for key in [
        "name",
        "image",
        "restartPolicy",
        "ports",
        "startupProbe",
        "readinessProbe",
        "livenessProbe",
        "volumeMounts",
    ] {
        assert_eq!(injected[key], written[key], "{key}");
    }
    // The hand-written container's security context, plus what it has from its pod.
    let pod_context = &hand["spec"]["template"]["spec"]["securityContext"];
    for (context, keys) in [
        (&written["securityContext"], vec![]),
        (
            pod_context,
            vec!["runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile"],
        ),
    ] {
        for (key, value) in context.as_object().unwrap() {
            if keys.is_empty() || keys.contains(&key.as_str()) {
                assert_eq!(
                    &injected["securityContext"][key], value,
                    "securityContext.{key}"
                );
            }
        }
    }
    for var in written["env"].as_array().unwrap() {
        assert!(
            injected["env"].as_array().unwrap().contains(var),
            "{var} is not in the injected sidecar's env"
        );
    }
    // Memory: the figure check-config derives, which the hand-written one rounds up.
    let mebibytes = |q: &Value| -> u64 {
        q.as_str()
            .unwrap()
            .strip_suffix("Mi")
            .unwrap()
            .parse()
            .unwrap()
    };
    let (ours, theirs) = (&injected["resources"], &written["resources"]);
    assert_eq!(ours["requests"]["cpu"], theirs["requests"]["cpu"]);
    assert_eq!(ours["requests"]["memory"], ours["limits"]["memory"]);
    let memory = mebibytes(&ours["limits"]["memory"]);
    assert_eq!(memory, config.container_memory_bytes().div_ceil(1 << 20));
    assert!(memory <= mebibytes(&theirs["limits"]["memory"]));
    let volumes = spec["volumes"].as_array().unwrap();
    assert_eq!(volumes[volumes.len() - 2..], written_volumes[..]);
    assert_eq!(
        endpoint_values(&spec["containers"][0]),
        [endpoint["value"].as_str().unwrap()]
    );
}

// ---------------------------------------------------------------------------------------------
// Properties of generated pods

/// One generated container: its variables, its ports, and whether an empty `env: []` is written.
type ContainerSpec = (Vec<(&'static str, &'static str)>, Vec<i64>, bool);

fn container_spec() -> impl Strategy<Value = ContainerSpec> {
    let var = prop::sample::select(vec![
        ("TABLE_NAME", "orders"),
        (ENDPOINT_VAR, "http://elsewhere:8000"),
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "false"),
    ]);
    let port = prop::sample::select(vec![80i64, 8000, 8080, 9000]);
    (
        prop::collection::vec(var, 0..3),
        prop::collection::vec(port, 0..2),
        any::<bool>(),
    )
}

fn container_json(name: &str, (env, ports, empty_env): &ContainerSpec, host: bool) -> Value {
    let mut c = json!({"name": name, "image": format!("registry.example.com/{name}:1")});
    if !env.is_empty() || *empty_env {
        c["env"] = env
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
    }
    if !ports.is_empty() {
        c["ports"] = ports
            .iter()
            .map(|p| {
                if host {
                    json!({"containerPort": p, "hostPort": p})
                } else {
                    json!({"containerPort": p})
                }
            })
            .collect();
    }
    c
}

/// A Deployment with generated containers, init containers, volumes and annotations, and whether
/// to inject with `--only-annotated`.
fn generated_deployment() -> impl Strategy<Value = (Value, bool)> {
    (
        prop::sample::subsequence(vec!["app", "worker", "ddbcache", "shipper"], 1..=3),
        prop::collection::vec(container_spec(), 3),
        prop::sample::subsequence(vec!["migrate", "ddbcache", "setup"], 0..=2),
        prop::collection::vec(container_spec(), 2),
        prop::sample::subsequence(vec!["data", "ddbcache-config", "ddbcache-admin"], 0..=2),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["true", "false", "maybe"])),
        prop::option::of(Just("orders-ddbcache")),
        prop::option::of(Just("ddbcache-admin")),
        any::<bool>(),
    )
        .prop_map(
            |(names, specs, inits, init_specs, volumes, host, asks, config, secret, only)| {
                let mut annotations = serde_json::Map::new();
                for (key, value) in [
                    (inject::INJECT_ANNOTATION, asks),
                    (inject::CONFIG_ANNOTATION, config),
                    (inject::ADMIN_TOKEN_SECRET_ANNOTATION, secret),
                ] {
                    if let Some(value) = value {
                        annotations.insert(key.to_string(), json!(value));
                    }
                }
                let mut spec = json!({
                    "containers": names.iter().zip(&specs).map(|(n, s)| container_json(n, s, host)).collect::<Vec<_>>(),
                });
                if !inits.is_empty() {
                    spec["initContainers"] = inits.iter().zip(&init_specs).map(|(n, s)| container_json(n, s, host)).collect();
                }
                if !volumes.is_empty() {
                    spec["volumes"] = volumes.iter().map(|v| json!({"name": v, "emptyDir": {}})).collect();
                }
                if host {
                    spec["hostNetwork"] = json!(true);
                }
                let deployment = json!({
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": "generated"},
                    "spec": {
                        "selector": {"matchLabels": {"app": "generated"}},
                        "template": {"metadata": {"labels": {"app": "generated"}, "annotations": annotations}, "spec": spec},
                    },
                });
                (deployment, only)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn injection_is_idempotent_and_uninject_undoes_it((original, only) in generated_deployment()) {
        let injector = injector(if only { &["--only-annotated"] } else { &[] });
        let mut once = original.clone();
        let report = injector.inject(&mut once);
        prop_assert_eq!(report.found.clone(), Found::Templates(1));
        let mut twice = once.clone();
        let again = injector.inject(&mut twice);
        prop_assert_eq!(again.changed, 0);
        prop_assert_eq!(&again.warnings, &report.warnings);
        prop_assert_eq!(&twice, &once);
        let mut back = once.clone();
        inject::uninject(&mut back);
        prop_assert_eq!(normalized(&back), normalized(&original));
        if report.changed == 0 {
            prop_assert_eq!(&once, &original);
            return Ok(());
        }
        // What was added: the sidecar first among the init containers, and the endpoint once in
        // every container that did not set one itself, whose own value is kept.
        let spec = &once["spec"]["template"]["spec"];
        prop_assert_eq!(&spec["initContainers"][0]["name"], CONTAINER);
        let before = &original["spec"]["template"]["spec"]["containers"];
        for (i, container) in spec["containers"].as_array().unwrap().iter().enumerate() {
            let own = endpoint_values(&before[i]);
            let now = endpoint_values(container);
            if own.is_empty() {
                prop_assert_eq!(now, vec!["http://127.0.0.1:8000"]);
            } else {
                prop_assert_eq!(now, own);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The webhook

/// HTTPS requests to a webhook at `addr` whose certificate `ca` signed.
struct Client {
    addr: String,
    ca: tls::Ca,
}

impl Client {
    /// `method path` with `body`, trusting `ca`: the status and the body.
    async fn request(
        &self,
        ca: &tls::Ca,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Vec<u8>), String> {
        let mut sender = tls::connect(&self.addr, ca, None).await?;
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost")
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap();
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((status, body.to_bytes().to_vec()))
    }

    /// Waits until the webhook answers its probe.
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self
            .request(&self.ca, "GET", "/healthz", Vec::new())
            .await
            .is_err()
        {
            assert!(Instant::now() < deadline, "the webhook never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a review; the answer's `response`, checked to be an allowed AdmissionReview v1.
    async fn review(&self, body: Vec<u8>) -> Value {
        let (status, body) = self.request(&self.ca, "POST", PATH, body).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        let answer: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        answer["response"].clone()
    }
}

/// `response`'s JSON Patch applied to `object` (which stays as it is without a patch).
fn patched(object: &Value, response: &Value) -> Value {
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}),
    )
    .unwrap();
    let mut patched = object.clone();
    if let Some(patch) = review.response.unwrap().patch {
        assert_eq!(response["patchType"], "JSONPatch");
        let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
        json_patch::patch(&mut patched, &patch).unwrap();
    }
    patched
}

/// A certificate for `localhost` from a new CA, written as `tls.crt` and `tls.key` into a new
/// directory.
fn certificate_files() -> (tls::Ca, PathBuf) {
    let dir = std::env::temp_dir().join(format!("ddbcache-webhook-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = tls::Ca::new("webhook test CA");
    let (cert, key) = ca.issue("localhost");
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    std::fs::write(dir.join("tls.key"), key).unwrap();
    (ca, dir)
}

/// A webhook serving in-process on a free port with a certificate from its own CA.
struct TestWebhook {
    client: Client,
    dir: PathBuf,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestWebhook {
    async fn start(flags: &[&str], max_review_bytes: usize) -> TestWebhook {
        let (ca, dir) = certificate_files();
        let options = WebhookOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            cert_file: dir.join("tls.crt"),
            key_file: dir.join("tls.key"),
            reload_interval: Duration::from_millis(50),
            max_review_bytes,
        };
        let webhook = Webhook::bind(injector(flags), options).await.unwrap();
        let addr = webhook.local_addr().to_string();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(webhook.run(async {
            let _ = stopped.await;
        }));
        TestWebhook {
            client: Client { addr, ca },
            dir,
            stop,
            task,
        }
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
        std::fs::remove_dir_all(&self.dir).unwrap();
    }
}

/// The AdmissionReview the API server sends when `object` is created, its fields in the API
/// server's order (`request.uid` first, the object later).
fn review_of(object: &Value, uid: &str) -> Vec<u8> {
    let api_version = object["apiVersion"].as_str().unwrap_or("");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let kind = object["kind"].as_str().unwrap_or("");
    let gvk = json!({"group": group, "version": version, "kind": kind});
    let resource = json!({"group": group, "version": version, "resource": format!("{}s", kind.to_lowercase())});
    let user = json!({"username": "system:serviceaccount:kube-system:replicaset-controller"});
    format!(
        r#"{{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{{"uid":{},"kind":{gvk},"resource":{resource},"requestKind":{gvk},"namespace":"shop","operation":"CREATE","userInfo":{user},"object":{object},"oldObject":null,"dryRun":false,"options":{{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}}}}}}"#,
        json!(uid)
    )
    .into_bytes()
}

fn warnings_of(response: &Value) -> Vec<String> {
    response["warnings"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| w.as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_patches_give_the_cli_output() {
    let (plain, only) = (
        TestWebhook::start(&[], webhook_max()).await,
        TestWebhook::start(&["--only-annotated"], webhook_max()).await,
    );
    for (case, flags) in CASES {
        let webhook = if flags.is_empty() { &plain } else { &only };
        let (out, err) = cli(flags, &fixture(case));
        let expected = inject::parse_yaml(&out).unwrap();
        let mut warnings = Vec::new();
        for (i, object) in documents(&fixture(case)).into_iter().enumerate() {
            let uid = uuid::Uuid::new_v4().to_string();
            let response = webhook.client.review(review_of(&object, &uid)).await;
            assert_eq!(response["uid"], uid.as_str());
            assert_eq!(
                patched(&object, &response),
                expected[i],
                "{case} document {i}"
            );
            for warning in warnings_of(&response) {
                let warning = warning
                    .strip_prefix("ddbcache inject: ")
                    .unwrap()
                    .to_string();
                if warning.contains("is not a workload with a pod template") {
                    assert!(
                        matches!(object["kind"].as_str(), Some("Service" | "ConfigMap")),
                        "{warning}"
                    );
                } else {
                    warnings.push(warning);
                }
            }
        }
        assert_eq!(warnings, cli_warnings(&err), "{case}");
    }
    plain.stop().await;
    only.stop().await;
}

fn webhook_max() -> usize {
    ddbcache::inject::webhook::MAX_REVIEW_BYTES
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_admits_what_it_cannot_read_unchanged_with_a_warning() {
    const LIMIT: usize = 64 << 10;
    let webhook = TestWebhook::start(&[], LIMIT).await;
    let client = &webhook.client;
    let pod = documents(&fixture("pod-yaml11")).remove(0);
    let answered = |response: &Value, uid: &str, says: &str| {
        assert_eq!(response["uid"], uid, "{response}");
        assert!(response.get("patch").is_none(), "{response}");
        let warnings = warnings_of(response);
        assert!(
            warnings.len() == 1
                && warnings[0].contains(says)
                && warnings[0].contains("admitted unchanged"),
            "{response}"
        );
        assert!(response["status"]["message"]
            .as_str()
            .unwrap()
            .contains(says));
    };

    // Not JSON at all, and JSON that is not a review: the uid when there is one to be found.
    answered(
        &client.review(b"{not json".to_vec()).await,
        "",
        "not an AdmissionReview",
    );
    let partial = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "partial-1"}});
    answered(
        &client.review(serde_json::to_vec(&partial).unwrap()).await,
        "partial-1",
        "not an AdmissionReview",
    );
    let empty = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"});
    answered(
        &client.review(serde_json::to_vec(&empty).unwrap()).await,
        "",
        "without a request",
    );

    // A kind without a pod template.
    let secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {}});
    answered(
        &client.review(review_of(&secret, "kind-1")).await,
        "kind-1",
        "v1 Secret is not a workload",
    );

    // Over the limit: read to its end but not parsed; the uid comes from its beginning.
    let mut big = pod.clone();
    big["metadata"]["annotations"]["padding"] = json!("x".repeat(2 * LIMIT));
    let body = review_of(&big, "big-1");
    assert!(body.len() > LIMIT);
    answered(
        &client.review(body).await,
        "big-1",
        &format!("over the {LIMIT} this webhook reads"),
    );

    // And then it still injects, and answers its probe.
    let response = client.review(review_of(&pod, "after-1")).await;
    assert_eq!(response["patchType"], "JSONPatch");
    let (status, body) = client
        .request(&client.ca, "GET", "/healthz", Vec::new())
        .await
        .unwrap();
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok\n"[..]));
    let (status, _) = client
        .request(&client.ca, "GET", PATH, Vec::new())
        .await
        .unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    webhook.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_serves_a_renewed_certificate_without_a_restart() {
    let webhook = TestWebhook::start(&[], webhook_max()).await;
    let client = &webhook.client;
    let renewed = tls::Ca::new("renewed CA");
    let (cert, key) = renewed.issue("localhost");
    std::fs::write(webhook.dir.join("tls.key"), key).unwrap();
    std::fs::write(webhook.dir.join("tls.crt"), cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while client
        .request(&renewed, "GET", "/healthz", Vec::new())
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(client
        .request(&client.ca, "GET", "/healthz", Vec::new())
        .await
        .is_err());
    webhook.stop().await;
}

/// Kills the child when dropped, so that a failing test leaves no webhook running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_webhook_deployment_serves_what_its_configuration_calls() {
    let dir = root().join("deploy/kubernetes/webhook");
    let deployment = documents(&dir.join("deployment.yaml")).remove(0);
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let hook = &documents(&dir.join("mutatingwebhook.yaml"))[0]["webhooks"][0];
    assert_eq!(hook["clientConfig"]["service"]["path"], PATH);
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();

    // The container's own arguments, with the certificate files made here and a free local port.
    let (ca, certs) = certificate_files();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut args = Vec::new();
    let mut image = None;
    for arg in container["args"].as_array().unwrap() {
        let arg = arg.as_str().unwrap();
        let (flag, value) = arg.split_once('=').unwrap_or((arg, ""));
        args.push(match flag {
            "--listen" => {
                assert_eq!(value, format!("0.0.0.0:{port}"), "the container port");
                format!("--listen={free}")
            }
            "--tls-cert" => format!("--tls-cert={}", certs.join("tls.crt").display()),
            "--tls-key" => format!("--tls-key={}", certs.join("tls.key").display()),
            "--image" => {
                image = Some(value.to_string());
                arg.to_string()
            }
            _ => arg.to_string(),
        });
    }
    let _webhook = Child(
        Command::new(env!("CARGO_BIN_EXE_ddbcache"))
            .arg("--config")
            .arg(dir.join("sidecar.toml"))
            .args(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client {
        addr: free.to_string(),
        ca,
    };
    client.wait_ready().await;
    let pod = documents(&fixture("pod-yaml11")).remove(0);
    let patched = patched(&pod, &client.review(review_of(&pod, "shipped-1")).await);
    let sidecar = &patched["spec"]["initContainers"][0];
    assert_eq!(sidecar["image"].as_str(), image.as_deref());
    // Sized for the shipped sidecar config.
    let config = Config::from_file(&dir.join("sidecar.toml")).unwrap();
    let memory = format!("{}Mi", config.container_memory_bytes().div_ceil(1 << 20));
    assert_eq!(sidecar["resources"]["limits"]["memory"], memory.as_str());
    std::fs::remove_dir_all(&certs).unwrap();
}
