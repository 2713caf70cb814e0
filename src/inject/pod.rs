//! Injection into one pod template, and its undoing. The template is read as k8s-openapi's
//! `PodTemplateSpec` to decide (annotations, containers, their variables and ports) and changed
//! in place as plain JSON, so that fields this version of the types does not know are kept as
//! they are, and a webhook's patch (the difference before and after) holds only what was added.
//!
//! What was added is recorded in the `ddbcache.io/injected` annotation ([`Record`]): a second
//! injection sees it and changes nothing (it only gives the endpoint to application containers
//! that appeared since, which is what a webhook's reinvocation is for), and `uninject` removes
//! exactly what it lists.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::sidecar::{self, Mounts, CONTAINER, ENDPOINT_VAR, IGNORE_ENDPOINTS_VAR};
use super::{Injector, ADMIN_TOKEN_SECRET_ANNOTATION, CONFIG_ANNOTATION, INJECTED_ANNOTATION};
use super::{INJECT_ANNOTATION, INJECT_NO, INJECT_YES};

/// Something that keeps injection from working as promised for one pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// `Kind/name` of the object whose template it is.
    pub workload: String,
    pub problem: Problem,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.workload, self.problem)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    #[error("container {container} already sets {ENDPOINT_VAR}={value}; left as it is, its DynamoDB calls bypass ddbcache")]
    EndpointAlreadySet { container: String, value: String },
    #[error("container {container} sets {IGNORE_ENDPOINTS_VAR}=true; its SDK ignores {ENDPOINT_VAR} and bypasses ddbcache")]
    EndpointsIgnored { container: String },
    #[error("container {container} uses port {port}, ddbcache's {purpose} port{}; not injected", if *.host_network { ", on the node's network (hostNetwork)" } else { "" })]
    PortClash {
        container: String,
        port: u16,
        purpose: &'static str,
        host_network: bool,
    },
    #[error("has a container named {CONTAINER} that inject did not add; not injected")]
    SidecarPresent,
    #[error("has a volume named {volume} that inject did not add; not injected")]
    VolumePresent { volume: String },
    #[error("{INJECT_ANNOTATION} is {value:?}, neither \"true\" nor \"false\"; not injected")]
    BadInjectAnnotation { value: String },
    #[error("{INJECTED_ANNOTATION} cannot be read ({error}); left as it is")]
    BadRecord { error: String },
    #[error("not a pod template ({error}); left as it is")]
    NotATemplate { error: String },
}

/// What one template went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Changed: the sidecar added (or removed), or the endpoint given to new containers.
    Changed,
    /// Left as it was: opted out, already complete, not injected, or refused with a warning.
    Unchanged,
}

/// The `ddbcache.io/injected` annotation: what inject added, so that `uninject` removes exactly
/// that.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// The init container added.
    pub sidecar: String,
    /// The volumes added.
    pub volumes: Vec<String>,
    /// The containers given `AWS_ENDPOINT_URL_DYNAMODB`.
    pub endpoint_env: Vec<String>,
}

/// The template's annotations, as strings.
fn annotation<'a>(typed: &'a PodTemplateSpec, key: &str) -> Option<&'a str> {
    typed
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn env_value<'a>(container: &'a Container, name: &str) -> Option<&'a str> {
    let var = container.env.as_ref()?.iter().find(|e| e.name == name)?;
    Some(var.value.as_deref().unwrap_or("(from valueFrom)"))
}

/// `object[key]`, made `empty` (an empty array or object) unless it already is one of those.
fn field<'a>(object: &'a mut Value, key: &str, empty: Value) -> &'a mut Value {
    let map = object
        .as_object_mut()
        .expect("checked as a PodTemplateSpec");
    let slot = map.entry(key).or_insert(Value::Null);
    if std::mem::discriminant(slot) != std::mem::discriminant(&empty) {
        *slot = empty;
    }
    slot
}

fn array_at<'a>(object: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    let slot = field(object, key, Value::Array(Vec::new()));
    slot.as_array_mut().expect("an array")
}

fn object_at<'a>(object: &'a mut Value, key: &str) -> &'a mut Value {
    field(object, key, Value::Object(Map::new()))
}

/// Removes `object[key]` when it is an empty array or object: what inject created, or what
/// Kubernetes treats as absent anyway.
fn drop_if_empty(object: &mut Value, key: &str) {
    let Some(map) = object.as_object_mut() else {
        return;
    };
    let empty = match map.get(key) {
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(o)) => o.is_empty(),
        _ => false,
    };
    if empty {
        map.remove(key);
    }
}

fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("k8s-openapi types serialize to JSON")
}

fn name_of(value: &Value) -> Option<&str> {
    value.get("name").and_then(Value::as_str)
}

/// Reads the template, or says why it is not one.
fn typed(template: &Value) -> Result<(PodTemplateSpec, PodSpec), Problem> {
    let not = |error: String| Problem::NotATemplate { error };
    let mut typed: PodTemplateSpec =
        serde_json::from_value(template.clone()).map_err(|e| not(e.to_string()))?;
    let spec = typed
        .spec
        .take()
        .ok_or_else(|| not("no spec".to_string()))?;
    Ok((typed, spec))
}

fn read_record(typed: &PodTemplateSpec) -> Result<Option<Record>, Problem> {
    annotation(typed, INJECTED_ANNOTATION)
        .map(|text| {
            serde_json::from_str(text).map_err(|e| Problem::BadRecord {
                error: e.to_string(),
            })
        })
        .transpose()
}

/// Adds the sidecar to `template` (`workload` names it in warnings), or completes an earlier
/// injection; see the module's documentation.
pub(crate) fn inject(
    injector: &Injector,
    workload: &str,
    template: &mut Value,
    warnings: &mut Vec<Warning>,
) -> Change {
    let mut warn = |problem| {
        warnings.push(Warning {
            workload: workload.to_string(),
            problem,
        })
    };
    let (typed, spec) = match typed(template) {
        Ok(t) => t,
        Err(problem) => {
            warn(problem);
            return Change::Unchanged;
        }
    };
    match annotation(&typed, INJECT_ANNOTATION) {
        Some(INJECT_YES) => {}
        Some(INJECT_NO) => return Change::Unchanged,
        None if !injector.options.only_annotated => {}
        None => return Change::Unchanged,
        Some(other) => {
            warn(Problem::BadInjectAnnotation {
                value: other.to_string(),
            });
            return Change::Unchanged;
        }
    }
    let before = match read_record(&typed) {
        Ok(record) => record,
        Err(problem) => {
            warn(problem);
            return Change::Unchanged;
        }
    };
    let mut record = match before.clone() {
        Some(record) => record,
        None => {
            let mounts = Mounts {
                config_map: annotation(&typed, CONFIG_ANNOTATION)
                    .map(str::to_string)
                    .or_else(|| injector.options.config_map.clone()),
                admin_token_secret: annotation(&typed, ADMIN_TOKEN_SECRET_ANNOTATION)
                    .map(str::to_string)
                    .or_else(|| injector.options.admin_token_secret.clone()),
            };
            let refusals = refusals(injector, &spec, &mounts);
            if !refusals.is_empty() {
                refusals.into_iter().for_each(warn);
                return Change::Unchanged;
            }
            add_sidecar(injector, template, &mounts)
        }
    };
    let spec_value = template.get_mut("spec").expect("a template with a spec");
    for (i, container) in spec.containers.iter().enumerate() {
        // Whether or not it was given the endpoint, and however often inject runs.
        if env_value(container, IGNORE_ENDPOINTS_VAR)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        {
            warn(Problem::EndpointsIgnored {
                container: container.name.clone(),
            });
        }
        if record.endpoint_env.contains(&container.name) {
            continue;
        }
        if let Some(value) = env_value(container, ENDPOINT_VAR) {
            warn(Problem::EndpointAlreadySet {
                container: container.name.clone(),
                value: value.to_string(),
            });
            continue;
        }
        let target = &mut array_at(spec_value, "containers")[i];
        array_at(target, "env").push(to_json(&sidecar::endpoint_env(&injector.sidecar)));
        record.endpoint_env.push(container.name.clone());
    }
    if before.as_ref() == Some(&record) {
        return Change::Unchanged;
    }
    let annotations = object_at(object_at(template, "metadata"), "annotations");
    annotations[INJECTED_ANNOTATION] =
        Value::String(serde_json::to_string(&record).expect("a record serializes"));
    Change::Changed
}

/// Why the sidecar cannot be added to a pod with `spec`, if it cannot.
fn refusals(injector: &Injector, spec: &PodSpec, mounts: &Mounts) -> Vec<Problem> {
    let every_container = || {
        spec.init_containers
            .iter()
            .flatten()
            .chain(&spec.containers)
    };
    let mut refusals = Vec::new();
    if every_container().any(|c| c.name == CONTAINER) {
        refusals.push(Problem::SidecarPresent);
    }
    let taken: BTreeSet<&str> = spec
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for volume in sidecar::volumes(mounts) {
        if taken.contains(volume.name.as_str()) {
            refusals.push(Problem::VolumePresent {
                volume: volume.name,
            });
        }
    }
    // Containers of a pod share its network namespace (with hostNetwork, the node's): a port the
    // sidecar binds cannot be another container's, or one of the two fails to start.
    let host_network = spec.host_network == Some(true);
    for container in every_container() {
        for declared in container.ports.iter().flatten() {
            let mut used = vec![declared.container_port];
            used.extend(declared.host_port.filter(|_| host_network));
            for (port, purpose) in injector.sidecar.ports() {
                if used.contains(&i32::from(port)) {
                    refusals.push(Problem::PortClash {
                        container: container.name.clone(),
                        port,
                        purpose,
                        host_network,
                    });
                }
            }
        }
    }
    refusals
}

/// Puts the sidecar first among the init containers (so that the others can use it too, and the
/// application starts after its startup probe) and its volumes last; returns the record of it.
fn add_sidecar(injector: &Injector, template: &mut Value, mounts: &Mounts) -> Record {
    let spec = template.get_mut("spec").expect("a template with a spec");
    let container = sidecar::container(&injector.options.image, &injector.sidecar, mounts);
    array_at(spec, "initContainers").insert(0, to_json(&container));
    let volumes = sidecar::volumes(mounts);
    let names = volumes.iter().map(|v| v.name.clone()).collect();
    if !volumes.is_empty() {
        array_at(spec, "volumes").extend(volumes.iter().map(to_json));
    }
    Record {
        sidecar: container.name,
        volumes: names,
        endpoint_env: Vec::new(),
    }
}

/// Removes what the template's record says inject added, and the record.
pub(crate) fn uninject(
    workload: &str,
    template: &mut Value,
    warnings: &mut Vec<Warning>,
) -> Change {
    let record = match typed(template).and_then(|(typed, _)| read_record(&typed)) {
        Ok(Some(record)) => record,
        Ok(None) => return Change::Unchanged,
        Err(problem) => {
            warnings.push(Warning {
                workload: workload.to_string(),
                problem,
            });
            return Change::Unchanged;
        }
    };
    let spec = template.get_mut("spec").expect("a template with a spec");
    let init = array_at(spec, "initContainers");
    if let Some(at) = init
        .iter()
        .position(|c| name_of(c) == Some(&record.sidecar))
    {
        init.remove(at);
    }
    drop_if_empty(spec, "initContainers");
    array_at(spec, "volumes")
        .retain(|v| !name_of(v).is_some_and(|n| record.volumes.iter().any(|r| r == n)));
    drop_if_empty(spec, "volumes");
    for container in array_at(spec, "containers") {
        if name_of(container).is_some_and(|n| record.endpoint_env.iter().any(|r| r == n)) {
            array_at(container, "env").retain(|e| name_of(e) != Some(ENDPOINT_VAR));
            drop_if_empty(container, "env");
        }
    }
    let metadata = object_at(template, "metadata");
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove(INJECTED_ANNOTATION);
    }
    drop_if_empty(metadata, "annotations");
    drop_if_empty(template, "metadata");
    Change::Changed
}
