//! Secrets from the key broker: an RA-TLS connection made with fresh evidence, the model key,
//! the TLS key and the owner's admitted-models list, and the list fetched again each period
//! while the server runs.

use std::sync::Arc;
use std::time::Duration;

use teeserve_attest::platform::Platform;
use teeserve_ratls::key_release::{Grant, KeyRelease};
use teeserve_ratls::{EvidenceFormat, KeyType, RaTlsIdentity};
use teeserve_seal::SealKey;
use tokio::sync::watch;
use zeroize::Zeroizing;

use crate::models::{AdmittedModels, ModelRepository};
use crate::network::options::{option, read, KbsOptions, ServeError, ServeOption, ServeOptions};

/// Secrets obtained from the key broker.
pub(crate) struct Provisioned {
    pub(crate) model_key: Option<SealKey>,
    pub(crate) admitted: Option<AdmittedModels>,
    pub(crate) tls_key_pem: Option<Zeroizing<Vec<u8>>>,
    /// The broker's grants with their log proofs, when the broker signs its log.
    pub(crate) key_release: Option<KeyRelease>,
}

/// A connection to the broker, and the SHA-256 (hex) of the RA-TLS key it presented: the key
/// the broker's log names in each grant made on it.
pub(crate) struct BrokerConnection {
    pub(crate) client: teeserve_tls::broker::KbsClient,
    pub(crate) key_sha256: String,
}

/// An RA-TLS connection to the broker, made with fresh evidence, retried for `retry_for` while
/// the broker cannot be reached.
pub(crate) async fn connect_broker(
    k: &KbsOptions,
    platform: &dyn Platform,
    retry_for: Duration,
) -> Result<BrokerConnection, ServeError> {
    let ca = read(&k.ca, ServeOption::KbsCa)?;
    let identity = RaTlsIdentity::generate(platform, EvidenceFormat::Both, KeyType::P256)
        .map_err(|e| ServeError::Attestation(e.to_string()))?;
    let key_sha256 = teeserve_ratls::spki_of(&identity.cert_der)
        .map(|spki| teeserve_ratls::tlog::sha256_hex(&spki))
        .map_err(|e| ServeError::Attestation(e.to_string()))?;
    let deadline = tokio::time::Instant::now() + retry_for;
    let mut wait = Duration::from_millis(200);
    let client = loop {
        match teeserve_tls::broker::KbsClient::connect(
            &k.addr,
            &ca,
            k.server_name.as_deref(),
            &identity,
        )
        .await
        {
            Ok(c) => break c,
            Err(e @ teeserve_tls::broker::BrokerError::Io { .. }) => {
                if tokio::time::Instant::now() + wait > deadline {
                    tracing::error!("key broker unreachable; gave up after {retry_for:?}");
                    return Err(e.into());
                }
                tracing::warn!("key broker unreachable ({e}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.into()),
        }
    };
    Ok(BrokerConnection { client, key_sha256 })
}

/// Reads the owner's admitted-models list from the secret `name`.
pub(crate) async fn fetch_admitted(
    client: &mut teeserve_tls::broker::KbsClient,
    name: &str,
) -> Result<AdmittedModels, ServeError> {
    let list = client.get_secret(name).await.map_err(ServeError::Broker)?;
    AdmittedModels::from_json(&list).map_err(|e| ServeError::Secret {
        name: name.to_owned(),
        detail: format!("admitted models: {e}"),
    })
}

/// Fetches one secret, keeping its grant's log proof when the broker sends one.
async fn fetch(
    c: &mut BrokerConnection,
    name: &str,
    grants: &mut Vec<Grant>,
) -> Result<Zeroizing<Vec<u8>>, ServeError> {
    let (secret, proof) = c
        .client
        .get_secret_logged(name)
        .await
        .map_err(ServeError::Broker)?;
    if let Some(proof) = proof {
        grants.push(Grant {
            secret: name.to_owned(),
            proof,
        });
    }
    Ok(secret)
}

pub(crate) async fn provision(
    k: &KbsOptions,
    platform: &dyn Platform,
) -> Result<Provisioned, ServeError> {
    let mut c = connect_broker(k, platform, k.retry_for).await?;
    let mut grants = Vec::new();
    let key = fetch(&mut c, &k.model_key_secret, &mut grants).await?;
    let model_key = Some(
        SealKey::from_file_bytes(&key).map_err(|e| ServeError::Secret {
            name: k.model_key_secret.clone(),
            detail: e.to_string(),
        })?,
    );
    let tls_key_pem = match &k.tls_key_secret {
        Some(s) => Some(fetch(&mut c, s, &mut grants).await?),
        None => None,
    };
    let admitted = match &k.admitted_models_secret {
        Some(s) => {
            let list = fetch(&mut c, s, &mut grants).await?;
            Some(
                AdmittedModels::from_json(&list).map_err(|e| ServeError::Secret {
                    name: s.clone(),
                    detail: format!("admitted models: {e}"),
                })?,
            )
        }
        None => None,
    };
    tracing::info!(
        "received secrets from the key broker at {}{}",
        k.addr,
        if grants.is_empty() {
            " (its log is not signed: no grant proofs to publish)"
        } else {
            ", with the proofs of their grants in its signed log"
        }
    );
    Ok(Provisioned {
        model_key,
        admitted,
        tls_key_pem,
        key_release: (!grants.is_empty()).then_some(KeyRelease {
            client_key_sha256: c.key_sha256,
            grants,
        }),
    })
}

/// The secrets: from the key broker (attesting with `platform`), or a local model key file.
pub(crate) async fn secrets(
    o: &ServeOptions,
    platform: Option<&dyn Platform>,
) -> Result<Provisioned, ServeError> {
    match (&o.kbs, platform) {
        (Some(k), Some(p)) => provision(k, p).await,
        (Some(_), None) => Err(ServeError::Needs {
            option: ServeOption::Kbs,
            needs: vec![ServeOption::Platform],
        }),
        (None, _) => Ok(Provisioned {
            model_key: match &o.model_key_file {
                Some(f) => {
                    tracing::warn!("using a model key from a local file: on a TEE host, fetch it from the key broker instead");
                    Some(SealKey::from_file(f).map_err(|e| option(ServeOption::ModelKeyFile, e))?)
                }
                None => None,
            },
            admitted: None,
            tls_key_pem: None,
            key_release: None,
        }),
    }
}
/// Fetches the owner's admitted-models list from the broker again every
/// [`KbsOptions::admitted_refresh`] until shutdown, each time over a new RA-TLS connection with
/// fresh evidence, and applies it: versions it no longer admits stop serving at once, and the
/// attestation document is quoted again. A broker that cannot be reached leaves the list as it
/// was (and is tried again next period); a broker that refuses the list to this server (the
/// owner's policy no longer admits it) leaves it serving nothing.
pub(crate) async fn refresh_admitted(
    k: KbsOptions,
    platform: Arc<dyn Platform>,
    repo: Arc<ModelRepository>,
    mut rx: watch::Receiver<bool>,
) {
    let Some(secret) = k.admitted_models_secret.clone() else {
        return;
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(k.admitted_refresh) => {}
            _ = rx.changed() => return,
        }
        let fetched = async {
            let mut c = connect_broker(&k, platform.as_ref(), Duration::ZERO).await?;
            fetch_admitted(&mut c.client, &secret).await
        }
        .await;
        let list = match fetched {
            Ok(list) => list,
            Err(ServeError::Broker(e @ teeserve_tls::broker::BrokerError::Refused { .. })) => {
                tracing::error!(
                    "the key broker no longer releases the admitted-models list to this server ({e}); serving nothing"
                );
                AdmittedModels::default()
            }
            Err(e) => {
                tracing::warn!(
                    "admitted-models list not refreshed ({e}); the list in force stays, trying again in {:?}",
                    k.admitted_refresh
                );
                continue;
            }
        };
        let r = repo.clone();
        let _ = tokio::task::spawn_blocking(move || {
            // An unchanged list (the usual answer) costs no scan: the file-system poll does that.
            let Some(retired) = r.set_admitted(Some(list)) else {
                return;
            };
            if !retired.is_empty() {
                tracing::warn!(
                    "the owner's admitted-models list retired {} version(s): {:?}",
                    retired.len(),
                    retired
                );
            }
            r.sync();
        })
        .await;
    }
}
