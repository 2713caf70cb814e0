//! Where a Kubernetes object keeps its pod template: the kinds `ddbcache inject` knows, named by
//! k8s-openapi's own `apiVersion` and `kind` strings, each with the path to its template, and
//! `List`s of objects, walked item by item. Everything else is not a workload and is left alone.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Pod, PodTemplate, ReplicationController};
use k8s_openapi::Resource;
use serde_json::Value;

/// A kind with a pod template, and the path from the object to it. A Pod is its own template:
/// its `metadata` and `spec` are shaped as a template's.
struct Workload {
    api_version: &'static str,
    kind: &'static str,
    template: &'static [&'static str],
}

const fn workload<K: Resource>(template: &'static [&'static str]) -> Workload {
    Workload {
        api_version: K::API_VERSION,
        kind: K::KIND,
        template,
    }
}

const SPEC_TEMPLATE: &[&str] = &["spec", "template"];

const WORKLOADS: &[Workload] = &[
    workload::<Pod>(&[]),
    workload::<Deployment>(SPEC_TEMPLATE),
    workload::<StatefulSet>(SPEC_TEMPLATE),
    workload::<DaemonSet>(SPEC_TEMPLATE),
    workload::<ReplicaSet>(SPEC_TEMPLATE),
    workload::<Job>(SPEC_TEMPLATE),
    workload::<CronJob>(&["spec", "jobTemplate", "spec", "template"]),
    workload::<ReplicationController>(SPEC_TEMPLATE),
    workload::<PodTemplate>(&["template"]),
];

/// What a document turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// A workload, or a list; this many pod templates were visited.
    Templates(usize),
    /// Neither: its `apiVersion` and `kind` (as far as it has them).
    NotAWorkload(String),
}

fn text<'a>(object: &'a Value, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

/// `Kind/name` for messages; a Pod that a controller is creating has only a `generateName`.
fn label(object: &Value, kind: &str) -> String {
    let metadata = object.get("metadata");
    let field = |key| metadata.and_then(|m| m.get(key)).and_then(Value::as_str);
    match (field("name"), field("generateName")) {
        (Some(name), _) if !name.is_empty() => format!("{kind}/{name}"),
        (_, Some(prefix)) => format!("{kind}/{prefix}*"),
        _ => kind.to_string(),
    }
}

/// Calls `visit(label, template)` on every pod template in `object` (a workload, or a `List` of
/// objects, lists included).
pub fn for_each_template(object: &mut Value, visit: &mut dyn FnMut(&str, &mut Value)) -> Found {
    let (api_version, kind) = (
        text(object, "apiVersion").to_string(),
        text(object, "kind").to_string(),
    );
    // `List` (v1) is what `kubectl get -o yaml` prints for several objects; `DeploymentList` and
    // the like are what the API returns for one kind.
    if kind.ends_with("List") {
        if let Some(items) = object.get_mut("items").and_then(Value::as_array_mut) {
            let mut count = 0;
            for item in items {
                if let Found::Templates(n) = for_each_template(item, visit) {
                    count += n;
                }
            }
            return Found::Templates(count);
        }
    }
    let Some(known) = WORKLOADS
        .iter()
        .find(|w| w.api_version == api_version && w.kind == kind)
    else {
        return Found::NotAWorkload(format!("{api_version} {kind}").trim().to_string());
    };
    let name = label(object, known.kind);
    let mut template = Some(object);
    for key in known.template {
        template = template.and_then(|t| t.get_mut(*key));
    }
    match template {
        Some(template) if template.is_object() => {
            visit(&name, template);
            Found::Templates(1)
        }
        _ => Found::Templates(0),
    }
}
