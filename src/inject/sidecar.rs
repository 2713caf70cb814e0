//! What `ddbcache inject` adds to a pod, as Kubernetes' own types (k8s-openapi): the ddbcache
//! container as a native sidecar, its volumes, and the one variable that sends an application's
//! DynamoDB calls to it. The container is the hand-written one of
//! `deploy/kubernetes/base/deployment.yaml` (same probes, resources rule, security context and
//! mounts; `tests/inject.rs` compares the two), made to stand alone: it cannot count on the pod's
//! security context, so it carries its own user and seccomp profile.
//!
//! This is also the one place where injection reads ddbcache's config ([`SidecarConfig::new`]):
//! the ports, and the memory `check-config` derives for it.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvVar, HTTPGetAction, Probe,
    ResourceRequirements, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::{Config, CONFIG_ENV, ENV_OVERRIDES};

/// The sidecar container's name, as in the hand-written manifests.
pub const CONTAINER: &str = "ddbcache";
/// The volume holding the ConfigMap with `ddbcache.toml`.
pub const CONFIG_VOLUME: &str = "ddbcache-config";
/// The volume holding the Secret with the admin token.
pub const ADMIN_VOLUME: &str = "ddbcache-admin";
/// What the application containers are given: every AWS SDK (and the CLI) sends DynamoDB calls,
/// and only those, to this endpoint. Never the global `AWS_ENDPOINT_URL`, which would send every
/// AWS service to ddbcache.
pub const ENDPOINT_VAR: &str = "AWS_ENDPOINT_URL_DYNAMODB";
/// Set to `true`, SDKs ignore every `AWS_ENDPOINT_URL*` variable.
pub const IGNORE_ENDPOINTS_VAR: &str = "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS";

const CONFIG_DIR: &str = "/etc/ddbcache";
const CONFIG_FILE: &str = "/etc/ddbcache/ddbcache.toml";
const ADMIN_DIR: &str = "/etc/ddbcache-admin";
/// The key of the admin Secret that holds the token (`kubectl create secret generic NAME
/// --from-literal=token=...`).
const TOKEN_KEY: &str = "token";
/// The image's user and group (`USER 65532:65532` in deploy/Dockerfile), numeric so that the
/// kubelet can enforce `runAsNonRoot`.
const IMAGE_USER: i64 = 65532;
const ADMIN_PORT_NAME: &str = "admin";
const CPU_REQUEST: &str = "100m";

/// What the sidecar takes from ddbcache's config: where it listens and how much memory it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarConfig {
    /// The data port, on the pod's loopback.
    pub data_port: u16,
    /// The admin port, on every interface (the kubelet's probes come from outside the pod).
    pub admin_port: u16,
    /// `Config::container_memory_bytes`: what `check-config` prints for the config.
    pub memory_bytes: u64,
}

impl SidecarConfig {
    /// The sidecar for `config`: its ports and the memory a container running it needs.
    pub fn new(config: &Config) -> SidecarConfig {
        SidecarConfig {
            data_port: config.listen.addr.port(),
            admin_port: config.listen.admin_addr.port(),
            memory_bytes: config.container_memory_bytes(),
        }
    }

    /// The URL the application containers reach ddbcache at.
    pub fn endpoint_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.data_port)
    }

    /// The ports the sidecar binds in the pod's network namespace, with what each is for.
    pub fn ports(&self) -> [(u16, &'static str); 2] {
        [(self.data_port, "data"), (self.admin_port, "admin")]
    }
}

/// Where one pod's sidecar gets its config file and admin token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mounts {
    /// The ConfigMap whose `ddbcache.toml` is the config; `None`: the image's built-in config.
    pub config_map: Option<String>,
    /// The Secret whose `token` guards `POST /cache/flush`; `None`: flushing is refused.
    pub admin_token_secret: Option<String>,
}

/// The name of the variable that overrides `key` (one of `ENV_OVERRIDES`).
fn override_var(key: &str) -> &'static str {
    ENV_OVERRIDES
        .iter()
        .find(|(_, k)| *k == key)
        .map(|(var, _)| *var)
        .unwrap_or_else(|| panic!("{key} has an environment override"))
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The variable an application container is given.
pub fn endpoint_env(sidecar: &SidecarConfig) -> EnvVar {
    env(ENDPOINT_VAR, sidecar.endpoint_url())
}

fn probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_string()),
            port: IntOrString::String(ADMIN_PORT_NAME.to_string()),
            ..Default::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        ..Default::default()
    }
}

/// The ddbcache container, an init container with `restartPolicy: Always` (a native sidecar,
/// Kubernetes 1.29 or later).
pub fn container(image: &str, sidecar: &SidecarConfig, mounts: &Mounts) -> Container {
    // The ports come from the injector's config whatever the mounted file says, so that the
    // probes and the application's endpoint always match what ddbcache listens on.
    let mut env_vars = vec![
        env(
            override_var("listen.addr"),
            format!("127.0.0.1:{}", sidecar.data_port),
        ),
        env(
            override_var("listen.admin_addr"),
            format!("0.0.0.0:{}", sidecar.admin_port),
        ),
    ];
    let mut volume_mounts = Vec::new();
    if mounts.config_map.is_some() {
        env_vars.insert(0, env(CONFIG_ENV, CONFIG_FILE));
        volume_mounts.push(VolumeMount {
            name: CONFIG_VOLUME.to_string(),
            mount_path: CONFIG_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    if mounts.admin_token_secret.is_some() {
        env_vars.push(env(
            override_var("admin.token_file"),
            format!("{ADMIN_DIR}/{TOKEN_KEY}"),
        ));
        volume_mounts.push(VolumeMount {
            name: ADMIN_VOLUME.to_string(),
            mount_path: ADMIN_DIR.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    // Requests = limits: a full cache is the steady state, not a burst. No CPU limit: throttling
    // would show up as proxy latency.
    let memory = Quantity(format!("{}Mi", sidecar.memory_bytes.div_ceil(1 << 20)));
    Container {
        name: CONTAINER.to_string(),
        image: Some(image.to_string()),
        restart_policy: Some("Always".to_string()),
        env: Some(env_vars),
        ports: Some(vec![ContainerPort {
            name: Some(ADMIN_PORT_NAME.to_string()),
            container_port: i32::from(sidecar.admin_port),
            ..Default::default()
        }]),
        // Gates the application's start on /readyz: up to 2 minutes for credentials and the
        // upstream.
        startup_probe: Some(probe("/readyz", 1, 120)),
        readiness_probe: Some(probe("/readyz", 5, 2)),
        liveness_probe: Some(probe("/healthz", 10, 3)),
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_string(), Quantity(CPU_REQUEST.to_string())),
                ("memory".to_string(), memory.clone()),
            ])),
            limits: Some(BTreeMap::from([("memory".to_string(), memory)])),
            ..Default::default()
        }),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            run_as_user: Some(IMAGE_USER),
            run_as_group: Some(IMAGE_USER),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                ..Default::default()
            }),
            seccomp_profile: Some(SeccompProfile {
                type_: "RuntimeDefault".to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        volume_mounts: (!volume_mounts.is_empty()).then_some(volume_mounts),
        ..Default::default()
    }
}

/// The volumes the container mounts.
pub fn volumes(mounts: &Mounts) -> Vec<Volume> {
    let mut volumes = Vec::new();
    if let Some(name) = &mounts.config_map {
        volumes.push(Volume {
            name: CONFIG_VOLUME.to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    if let Some(name) = &mounts.admin_token_secret {
        // Optional: without the Secret the pod still starts, and flushing is refused.
        volumes.push(Volume {
            name: ADMIN_VOLUME.to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.clone()),
                optional: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    volumes
}
