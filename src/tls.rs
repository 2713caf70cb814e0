//! Optional TLS on the data port, for deployments where ddbcache is a shared service rather than a
//! loopback sidecar: the certificate chain and key come from PEM files (`tls.cert_file`,
//! `tls.key_file`), and with `tls.client_ca_file` clients must present a certificate signed by
//! one of those CAs. The files are checked every `tls.reload_interval`; a renewed certificate
//! (cert-manager, a rotated Secret) is used for new connections without a restart, and files that
//! do not load keep the previous configuration in force.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use parking_lot::{Mutex, RwLock};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tracing::{info, warn};

use crate::config::TlsConfig;

/// Accepts TLS connections with the current certificate; cheap to clone.
#[derive(Clone)]
pub(crate) struct TlsAcceptor {
    inner: Arc<Inner>,
}

struct Inner {
    files: Vec<PathBuf>,
    config: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
    /// What the files looked like when `current` was built.
    seen: Mutex<Vec<Option<(SystemTime, u64)>>>,
    interval: Duration,
}

impl TlsAcceptor {
    /// Loads the files named in the config; fails (naming the file) when they do not load.
    pub(crate) fn load(config: &TlsConfig) -> anyhow::Result<TlsAcceptor> {
        let files: Vec<PathBuf> = [&config.cert_file, &config.key_file, &config.client_ca_file]
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        let seen = stamps(&files);
        let server_config = build(config)?;
        Ok(TlsAcceptor {
            inner: Arc::new(Inner {
                files,
                config: config.clone(),
                current: RwLock::new(Arc::new(server_config)),
                seen: Mutex::new(seen),
                interval: config.reload_interval,
            }),
        })
    }

    /// The TLS handshake on an accepted connection.
    pub(crate) async fn accept(&self, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let config = self.inner.current.read().clone();
        tokio_rustls::TlsAcceptor::from(config).accept(stream).await
    }

    /// Re-reads the files whenever they change; runs until the task is aborted.
    pub(crate) async fn reload_forever(self) {
        loop {
            tokio::time::sleep(self.inner.interval).await;
            self.reload_if_changed();
        }
    }

    fn reload_if_changed(&self) {
        let now = stamps(&self.inner.files);
        if *self.inner.seen.lock() == now {
            return;
        }
        match build(&self.inner.config) {
            Ok(config) => {
                *self.inner.current.write() = Arc::new(config);
                info!("TLS certificate files changed: reloaded");
            }
            Err(e) => {
                warn!(error = %format!("{e:#}"), "TLS files changed but do not load; keeping the previous certificate")
            }
        }
        // Either way, wait for the next change rather than retrying a bad file every interval.
        *self.inner.seen.lock() = now;
    }
}

/// Modification time and length of each file, to notice a change.
fn stamps(files: &[PathBuf]) -> Vec<Option<(SystemTime, u64)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn build(config: &TlsConfig) -> anyhow::Result<ServerConfig> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        anyhow::bail!("tls.cert_file and tls.key_file are both needed");
    };
    let certs = read_certs(cert_file, "tls.cert_file")?;
    let key = PrivateKeyDer::from_pem_file(key_file).with_context(|| {
        format!(
            "tls.key_file {}: no PEM private key could be read",
            key_file.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &config.client_ca_file {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in read_certs(ca_file, "tls.client_ca_file")? {
                roots
                    .add(ca)
                    .with_context(|| format!("tls.client_ca_file {}", ca_file.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .context("tls.client_ca_file")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut server_config = builder
        .with_single_cert(certs, key)
        .context("tls.cert_file and tls.key_file do not form a usable certificate")?;
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(server_config)
}

fn read_certs(path: &Path, key: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("{key} {}: cannot read PEM certificates", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{key} {}: no certificate in the file", path.display());
    }
    Ok(certs)
}
