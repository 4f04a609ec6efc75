//! The listeners' TLS: the certificate and key (made in the TEE for RA-TLS, released by the
//! broker, or files the host gave), client certificates when required, and who may read the
//! metrics.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use teeserve_attest::platform::Platform;
use teeserve_ratls::{EvidenceFormat, KeyOrigin, KeyType, RaTlsIdentity};
use zeroize::Zeroizing;

use crate::models::config::{self};
use crate::network::grpc::ReloadAccess;
use crate::network::options::{
    option, read, read_text, OptionsError, ServeError, ServeOption, ServeOptions, TlsOptions,
};

/// A TLS configuration, the DER SubjectPublicKeyInfo of the served certificate, and where its
/// key came from.
pub(crate) type TlsSetup = (Arc<rustls::ServerConfig>, Vec<u8>, KeyOrigin);

pub(crate) fn tls_config(
    t: &TlsOptions,
    provisioned_key: Option<&[u8]>,
    platform: Option<&dyn Platform>,
) -> Result<Option<TlsSetup>, ServeError> {
    let Some(TlsMaterial {
        certs,
        key,
        client_ca,
        origin,
    }) = tls_material(t, provisioned_key, platform)?
    else {
        return Ok(None);
    };
    let spki = x509_parser::parse_x509_certificate(&certs[0])
        .map(|(_, c)| c.public_key().raw.to_vec())
        .map_err(|e| ServeError::Tls(format!("server certificate: {e}")))?;
    let tls = |e: rustls::Error| ServeError::Tls(e.to_string());
    let builder = rustls::ServerConfig::builder_with_provider(teeserve_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(tls)?;
    // CAs whose clients may use one thing more (the metrics, the reload RPC): a certificate
    // is asked for and checked, and a client without one is served the rest.
    let mut optional = Vec::new();
    let mut optional_option = None;
    for (ca, o) in [
        (&t.monitoring_client_ca, ServeOption::MonitoringClientCa),
        (&t.reload_client_ca, ServeOption::ReloadClientCa),
    ] {
        if let Some(p) = ca {
            optional.extend(read(p, o)?);
            optional.push(b'\n');
            optional_option.get_or_insert(o);
        }
    }
    let builder = match (client_ca, optional_option) {
        (Some(mut ca), _) => {
            ca.push(b'\n');
            ca.extend(&optional);
            builder.with_client_cert_verifier(client_verifier(&ca, ServeOption::TlsClientCa, true)?)
        }
        (None, Some(o)) => builder.with_client_cert_verifier(client_verifier(&optional, o, false)?),
        (None, None) => builder.with_no_client_auth(),
    };
    let mut c = builder.with_single_cert(certs, key).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(_) => {
                "the key is not the certificate's (another certificate's key?)".to_owned()
            }
            other => other.to_string(),
        };
        ServeError::Tls(format!("{}: {why}", key_source(t, provisioned_key)))
    })?;
    c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Some((Arc::new(c), spki, origin)))
}

/// A server certificate chain, its key, the client CA (PEM) when clients must present a
/// certificate, and where the key came from.
struct TlsMaterial {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_ca: Option<Vec<u8>>,
    origin: KeyOrigin,
}

/// The certificate and key the options name: an RA-TLS certificate made now, the files of an
/// SSL config, or a certificate file with a key file or the key the broker released. `None`
/// when the server is plaintext (`--insecure`).
fn tls_material(
    t: &TlsOptions,
    provisioned_key: Option<&[u8]>,
    platform: Option<&dyn Platform>,
) -> Result<Option<TlsMaterial>, ServeError> {
    let (certs, key, client_ca, origin) = if t.ra_tls {
        let p = platform.ok_or(ServeError::Needs {
            option: ServeOption::TlsRa,
            needs: vec![ServeOption::Platform],
        })?;
        let id = RaTlsIdentity::generate(p, EvidenceFormat::Both, KeyType::P256)
            .map_err(|e| ServeError::Attestation(e.to_string()))?;
        (
            vec![CertificateDer::from(id.cert_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(id.key_pkcs8.to_vec())),
            t.client_ca
                .as_ref()
                .map(|p| read(p, ServeOption::TlsClientCa))
                .transpose()?,
            KeyOrigin::Tee,
        )
    } else if let Some(f) = &t.ssl_config_file {
        let ssl = |detail: String| option(ServeOption::SslConfigFile, detail);
        let text = read_text(f, ServeOption::SslConfigFile)?;
        let c = config::ssl_config(&text).map_err(|e| ssl(format!("{}: {e}", f.display())))?;
        let certs = teeserve_tls::certs_from_pem(c.server_cert.as_bytes())
            .map_err(|e| ssl(format!("server_cert: {e}")))?;
        let key = teeserve_tls::key_from_pem(c.server_key.as_bytes())
            .map_err(|e| ssl(format!("server_key: {e}")))?;
        let ca = if c.client_verify {
            if c.custom_ca.is_empty() {
                return Err(ssl("client_verify needs custom_ca".into()));
            }
            Some(c.custom_ca.into_bytes())
        } else {
            None
        };
        (certs, key, ca, KeyOrigin::Host)
    } else if let Some(cert) = &t.cert {
        let certs = teeserve_tls::certs_from_pem(&read(cert, ServeOption::TlsCert)?)
            .map_err(|e| option(ServeOption::TlsCert, e))?;
        let (key_pem, origin) = match (provisioned_key, &t.key) {
            (Some(k), _) => (Zeroizing::new(k.to_vec()), KeyOrigin::Broker),
            (None, Some(p)) => (
                Zeroizing::new(read(p, ServeOption::TlsKey)?),
                KeyOrigin::Host,
            ),
            (None, None) => {
                return Err(ServeError::Needs {
                    option: ServeOption::TlsCert,
                    needs: vec![ServeOption::TlsKey, ServeOption::KbsTlsKeySecret],
                })
            }
        };
        let key = teeserve_tls::key_from_pem(&key_pem)
            .map_err(|e| ServeError::Tls(format!("TLS key: {e}")))?;
        (
            certs,
            key,
            t.client_ca
                .as_ref()
                .map(|p| read(p, ServeOption::TlsClientCa))
                .transpose()?,
            origin,
        )
    } else if t.insecure {
        return Ok(None);
    } else {
        return Err(ServeError::Options(OptionsError::NoTls));
    };
    Ok(Some(TlsMaterial {
        certs,
        key,
        client_ca,
        origin,
    }))
}

/// Where the certificate and key came from, for an error: both files are named, since the
/// usual cause is a key that belongs to another certificate.
fn key_source(t: &TlsOptions, provisioned_key: Option<&[u8]>) -> String {
    if t.ra_tls {
        "the RA-TLS certificate made at start and its key".to_owned()
    } else if let Some(f) = &t.ssl_config_file {
        format!(
            "server_cert and server_key of --ssl_config_file {}",
            f.display()
        )
    } else {
        let cert = t
            .cert
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        match (provisioned_key.is_some(), &t.key) {
            (true, _) => format!("--tls_cert {cert} and the TLS key the key broker released"),
            (false, Some(k)) => format!("--tls_cert {cert} and --tls_key {}", k.display()),
            (false, None) => format!("--tls_cert {cert}"),
        }
    }
}

/// A verifier of client certificates chaining to the CA `pem` (`required`: a client without
/// one fails the handshake).
pub(crate) fn client_verifier(
    pem: &[u8],
    o: ServeOption,
    required: bool,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, ServeError> {
    let roots = teeserve_tls::roots_from_pem(pem).map_err(|e| option(o, e))?;
    let b = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        teeserve_tls::provider(),
    );
    let b = if required {
        b
    } else {
        b.allow_unauthenticated()
    };
    b.build().map_err(|e| option(o, format!("client CA: {e}")))
}
/// Who may read the metrics, when not everyone who reaches the REST port: clients whose
/// certificate chains to the monitoring client CA.
pub(crate) fn metrics_clients(
    o: &ServeOptions,
    metrics: Option<&str>,
    tls: bool,
) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, ServeError> {
    let Some(ca) = &o.tls.monitoring_client_ca else {
        return Ok(None);
    };
    if metrics.is_none() {
        return Err(ServeError::Needs {
            option: ServeOption::MonitoringClientCa,
            needs: vec![ServeOption::MonitoringConfigFile],
        });
    }
    if !tls {
        return Err(option(
            ServeOption::MonitoringClientCa,
            "client certificates need TLS, and the server is plaintext",
        ));
    }
    let pem = read(ca, ServeOption::MonitoringClientCa)?;
    client_verifier(&pem, ServeOption::MonitoringClientCa, true).map(Some)
}

/// Who may call `HandleReloadConfigRequest`: nobody by default (it replaces the served models,
/// so a stranger could unload them all), clients whose certificate chains to
/// `reload_client_ca`, or anyone when the operator says so.
pub(crate) fn reload_access(t: &TlsOptions, tls: bool) -> Result<ReloadAccess, ServeError> {
    match (&t.reload_client_ca, t.reload_from_anyone) {
        (Some(_), true) => Err(option(
            ServeOption::ReloadClientCa,
            "give a reload client CA or allow the reload to anyone, not both",
        )),
        (Some(ca), false) => {
            if !tls {
                return Err(option(
                    ServeOption::ReloadClientCa,
                    "client certificates need TLS, and the server is plaintext",
                ));
            }
            let pem = read(ca, ServeOption::ReloadClientCa)?;
            let v = client_verifier(&pem, ServeOption::ReloadClientCa, true)?;
            Ok(ReloadAccess::Clients(v))
        }
        (None, true) => {
            tracing::warn!("HandleReloadConfigRequest is open to anyone who reaches the gRPC port: any of them can replace or unload the served models");
            Ok(ReloadAccess::Anyone)
        }
        (None, false) => Ok(ReloadAccess::Off),
    }
}
