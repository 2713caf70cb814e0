//! `ddbcache inject`: adds ddbcache to Kubernetes workloads, so that an application changes
//! nothing, not even its manifests. Offline it rewrites YAML (files or standard input: several
//! documents, `List`s, Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs, Pods);
//! with `--serve` it is a mutating admission webhook ([`webhook`]) that answers with a JSON Patch
//! computed by the same [`Injector`] as the difference before and after it.
//!
//! On each pod template that asks for it (`ddbcache.io/inject: "true"`), or by default unless it
//! opts out (`"false"`), inject adds ddbcache as a native sidecar ([`sidecar`]) and
//! `AWS_ENDPOINT_URL_DYNAMODB` to the application containers, and records what it added in the
//! `ddbcache.io/injected` annotation ([`pod`]): injecting again changes nothing, and
//! [`uninject`] removes exactly that. [`workloads`] knows where each kind keeps its template.

mod pod;
pub mod sidecar;
pub mod webhook;
mod workloads;

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::config::Config;
pub use pod::{Change, Problem, Record, Warning};
pub use sidecar::SidecarConfig;
pub use workloads::Found;

/// Pod annotation: `"true"` asks for the sidecar, `"false"` refuses it.
pub const INJECT_ANNOTATION: &str = "ddbcache.io/inject";
pub const INJECT_YES: &str = "true";
pub const INJECT_NO: &str = "false";
/// Pod annotation: the ConfigMap whose `ddbcache.toml` the sidecar reads.
pub const CONFIG_ANNOTATION: &str = "ddbcache.io/config";
/// Pod annotation: the Secret whose `token` guards the sidecar's `POST /cache/flush`.
pub const ADMIN_TOKEN_SECRET_ANNOTATION: &str = "ddbcache.io/admin-token-secret";
/// Pod annotation written by inject: what it added ([`Record`], as JSON).
pub const INJECTED_ANNOTATION: &str = "ddbcache.io/injected";

/// The image sidecars run unless `--image` names another: ddbcache's own version, under the
/// name the kustomize manifests in deploy/ use (their `images:` rewrite it).
pub const DEFAULT_IMAGE: &str = concat!("ddbcache:", env!("CARGO_PKG_VERSION"));

/// How pod templates are injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The sidecar's image.
    pub image: String,
    /// Inject only templates annotated `ddbcache.io/inject: "true"`; otherwise every template not
    /// annotated `"false"`.
    pub only_annotated: bool,
    /// The ConfigMap of templates without a `ddbcache.io/config` annotation.
    pub config_map: Option<String>,
    /// The admin token Secret of templates without `ddbcache.io/admin-token-secret`.
    pub admin_token_secret: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: DEFAULT_IMAGE.to_string(),
            only_annotated: false,
            config_map: None,
            admin_token_secret: None,
        }
    }
}

/// Injects ddbcache into Kubernetes objects; what the CLI and the webhook share.
#[derive(Debug, Clone)]
pub struct Injector {
    options: Options,
    sidecar: SidecarConfig,
}

/// What injecting into (or uninjecting from) one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Whether the object is a workload (or a list), and how many pod templates it holds.
    pub found: Found,
    /// How many of those templates changed.
    pub changed: usize,
    pub warnings: Vec<Warning>,
}

impl Injector {
    /// An injector whose sidecars run `config`: their ports and memory are that config's, as
    /// `check-config` derives them.
    pub fn new(config: &Config, options: Options) -> Injector {
        Injector {
            options,
            sidecar: SidecarConfig::new(config),
        }
    }

    pub fn sidecar(&self) -> &SidecarConfig {
        &self.sidecar
    }

    /// Adds ddbcache to every pod template of `object` that should have it.
    pub fn inject(&self, object: &mut Value) -> Report {
        each_template(object, &mut |workload, template, warnings| {
            pod::inject(self, workload, template, warnings)
        })
    }
}

/// Removes what inject added from every pod template of `object`.
pub fn uninject(object: &mut Value) -> Report {
    each_template(object, &mut pod::uninject)
}

type Step<'a> = dyn FnMut(&str, &mut Value, &mut Vec<Warning>) -> Change + 'a;

fn each_template(object: &mut Value, step: &mut Step<'_>) -> Report {
    let (mut changed, mut warnings) = (0, Vec::new());
    let found = workloads::for_each_template(object, &mut |workload, template| {
        if step(workload, template, &mut warnings) == Change::Changed {
            changed += 1;
        }
    });
    Report {
        found,
        changed,
        warnings,
    }
}

/// A YAML stream's documents (empty ones dropped), read as Kubernetes reads YAML: YAML 1.1's
/// `0644` is octal and `yes` a boolean.
pub fn parse_yaml(text: &str) -> Result<Vec<Value>, String> {
    let options = serde_saphyr::options! { legacy_octal_numbers: true };
    let documents: Vec<Value> =
        serde_saphyr::from_multiple_with_options(text, options).map_err(|e| e.to_string())?;
    Ok(documents.into_iter().filter(|d| !d.is_null()).collect())
}

/// Documents as one YAML stream. Keys come out sorted, as `kubectl get -o yaml` prints them, and
/// every string a YAML 1.1 reader would take for something else is quoted.
pub fn to_yaml(documents: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(document).map_err(|e| e.to_string())?);
        if !out.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok(out)
}

/// `ddbcache inject`'s arguments.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// Manifests (YAML, any number of documents each); none, or `-`: standard input.
    files: Vec<PathBuf>,
    /// Remove what inject added (each pod template's ddbcache.io/injected annotation lists it).
    #[arg(long, conflicts_with = "serve")]
    uninject: bool,
    /// The sidecars' image.
    #[arg(long, default_value = DEFAULT_IMAGE)]
    image: String,
    /// Inject only pod templates annotated ddbcache.io/inject: "true" (by default every template
    /// not annotated "false").
    #[arg(long)]
    only_annotated: bool,
    /// The ConfigMap (key ddbcache.toml) of pods without a ddbcache.io/config annotation; by
    /// default those run the image's built-in config.
    #[arg(long, value_name = "NAME")]
    config_map: Option<String>,
    /// The Secret (key token) of pods without a ddbcache.io/admin-token-secret annotation; by
    /// default those refuse POST /cache/flush.
    #[arg(long, value_name = "NAME")]
    admin_token_secret: Option<String>,
    /// Serve the mutating admission webhook instead: HTTPS, POST /inject, GET /healthz.
    #[arg(long, requires_all = ["tls_cert", "tls_key"], conflicts_with = "files")]
    serve: bool,
    /// The webhook's address.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// The webhook's PEM certificate chain, reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// The webhook's PEM private key, reloaded when it changes.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// How often the webhook checks its certificate files for changes.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    tls_reload_interval: Duration,
    /// The largest AdmissionReview the webhook reads; a larger one is admitted unchanged.
    #[arg(long, default_value_t = webhook::MAX_REVIEW_BYTES)]
    max_review_bytes: usize,
}

impl InjectArgs {
    /// Whether these arguments run the webhook (which logs) rather than rewrite files.
    pub fn serves(&self) -> bool {
        self.serve
    }
}

/// Runs `ddbcache inject` with sidecars sized for `config`.
pub fn main(args: InjectArgs, config: &Config) -> ExitCode {
    let injector = Injector::new(
        config,
        Options {
            image: args.image.clone(),
            only_annotated: args.only_annotated,
            config_map: args.config_map.clone(),
            admin_token_secret: args.admin_token_secret.clone(),
        },
    );
    if args.serve {
        return serve(args, injector);
    }
    match rewrite(&args, &injector) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ddbcache inject: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Reads every input, injects (or uninjects), writes the result to standard output and the
/// warnings to standard error.
fn rewrite(args: &InjectArgs, injector: &Injector) -> Result<(), String> {
    let stdin = [PathBuf::from("-")];
    let sources = if args.files.is_empty() {
        &stdin[..]
    } else {
        &args.files[..]
    };
    let mut documents = Vec::new();
    for source in sources {
        let mut text = String::new();
        let read = if source.as_os_str() == "-" {
            std::io::stdin().read_to_string(&mut text).map(drop)
        } else {
            std::fs::File::open(source).and_then(|mut f| f.read_to_string(&mut text).map(drop))
        };
        let name = source.display();
        read.map_err(|e| format!("{name}: {e}"))?;
        documents.extend(parse_yaml(&text).map_err(|e| format!("{name}: not YAML: {e}"))?);
    }
    let (mut templates, mut changed) = (0, 0);
    for document in &mut documents {
        let report = if args.uninject {
            uninject(document)
        } else {
            injector.inject(document)
        };
        for warning in &report.warnings {
            eprintln!("ddbcache inject: warning: {warning}");
        }
        if let Found::Templates(n) = report.found {
            templates += n;
        }
        changed += report.changed;
    }
    let out = to_yaml(&documents).map_err(|e| format!("cannot write YAML: {e}"))?;
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(format!("cannot write the result: {e}"))
        }
        _ => {}
    }
    let verb = if args.uninject {
        "uninjected"
    } else {
        "injected"
    };
    eprintln!("ddbcache inject: {changed} of {templates} pod templates {verb}");
    Ok(())
}

fn serve(args: InjectArgs, injector: Injector) -> ExitCode {
    let options = webhook::WebhookOptions {
        listen: args.listen,
        cert_file: args.tls_cert.unwrap_or_default(),
        key_file: args.tls_key.unwrap_or_default(),
        reload_interval: args.tls_reload_interval,
        max_review_bytes: args.max_review_bytes,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ddbcache inject: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let served = runtime.block_on(async {
        webhook::Webhook::bind(injector, options)
            .await?
            .run(crate::server::shutdown_signal())
            .await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("ddbcache inject: {e:#}");
            ExitCode::FAILURE
        }
    }
}
