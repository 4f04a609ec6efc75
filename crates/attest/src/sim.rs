//! The simulated TEE: a directory holding a PKI shaped like Intel's (root CA, PCK Platform CA,
//! PCK leaf with the SGX extension, TCB Signing certificate, CRLs), matching signed collateral,
//! and the keys of a quoting enclave. Its quotes are genuine SGX v3 quotes signed by those keys.
//!
//! It gives NO protection: anyone with the directory can make any quote. It exists so that the
//! whole flow runs, and is tested, on machines without SGX or TDX. Evidence from it chains to a
//! root named "teeserve Simulated SGX Root CA", which policies refuse unless `allow_simulated`.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationList,
    CertificateRevocationListParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer,
    KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair as _, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};

use crate::collateral::{Collateral, TcbStatus};
use crate::pck::{SgxExtension, SGX_EXTENSION_OID};
use crate::quote::{encode_sgx_v3, EnclaveReport, Header, SgxQuoteParts, INTEL_QE_VENDOR_ID};
use crate::x509::sha256;

/// Subject CN of the simulated root; the verifier recognises it in error messages.
pub const SIM_ROOT_CN: &str = "teeserve Simulated SGX Root CA";
/// The simulated platform's FMSPC.
pub const SIM_FMSPC: [u8; 6] = [0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00];
const SIM_TCB_COMPONENTS: [u8; 16] = [14, 14, 3, 3, 255, 255, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
const SIM_PCESVN: u16 = 13;
const SIM_QE_SVN: u16 = 8;
const QE_ATTRIBUTES: [u8; 16] = [0x11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Errors of the simulated platform.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A file of the directory could not be read or written.
    #[error("simulated platform {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The directory's content is malformed.
    #[error("simulated platform {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("simulated PKI: {0}")]
    Pki(String),
}

/// What to revoke when making the simulated collateral.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Revoke {
    /// Nothing.
    #[default]
    None,
    /// The PCK leaf certificate (in the PCK CRL).
    Pck,
    /// The PCK Platform CA (in the root CA CRL).
    PckCa,
}

/// Options of `sim init`.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Days the collateral stays valid (default 30).
    pub valid_days: i64,
    /// Make collateral that expired a day ago.
    pub stale: bool,
    /// What to revoke.
    pub revoke: Revoke,
    /// Status of the platform's TCB level (default UpToDate).
    pub tcb_status: TcbStatus,
    /// ISVPRODID of the simulated enclave.
    pub isv_prod_id: u16,
    /// ISVSVN of the simulated enclave.
    pub isv_svn: u16,
    /// Produce debug-enclave quotes (ATTRIBUTES.DEBUG).
    pub debug: bool,
    /// The time to issue at (Unix seconds).
    pub now: i64,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            valid_days: 30,
            stale: false,
            revoke: Revoke::None,
            tcb_status: TcbStatus::UpToDate,
            isv_prod_id: 1,
            isv_svn: 1,
            debug: false,
            now: time::OffsetDateTime::now_utc().unix_timestamp(),
        }
    }
}

/// The platform description kept in `platform.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct PlatformFile {
    isv_prod_id: u16,
    isv_svn: u16,
    debug: bool,
    mrsigner: String,
    qe_id: String,
    qe_mrsigner: String,
}

fn err(e: impl std::fmt::Display) -> SimError {
    SimError::Pki(e.to_string())
}

fn odt(t: i64) -> Result<time::OffsetDateTime, SimError> {
    time::OffsetDateTime::from_unix_timestamp(t).map_err(err)
}

fn rfc3339(t: i64) -> String {
    crate::collateral::format_time(t)
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::CommonName, cn);
    d.push(
        DnType::OrganizationName,
        "teeserve simulation (no protection)",
    );
    d.push(DnType::CountryName, "US");
    d
}

fn ca_params(
    cn: &str,
    path_len: u8,
    serial: u64,
    nb: i64,
    na: i64,
) -> Result<CertificateParams, SimError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = odt(nb)?;
    p.not_after = odt(na)?;
    p.key_identifier_method = KeyIdMethod::Sha256;
    Ok(p)
}

fn leaf_params(cn: &str, serial: u64, nb: i64, na: i64) -> Result<CertificateParams, SimError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    p.distinguished_name = dn(cn);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::ContentCommitment,
    ];
    p.serial_number = Some(SerialNumber::from(serial));
    p.not_before = odt(nb)?;
    p.not_after = odt(na)?;
    Ok(p)
}

fn signer(pkcs8: &[u8]) -> Result<EcdsaKeyPair, SimError> {
    EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_FIXED_SIGNING,
        pkcs8,
        &SystemRandom::new(),
    )
    .map_err(err)
}

fn sign(key: &EcdsaKeyPair, msg: &[u8]) -> Result<[u8; 64], SimError> {
    let sig = key.sign(&SystemRandom::new(), msg).map_err(err)?;
    sig.as_ref().try_into().map_err(err)
}

fn raw_pub(key: &EcdsaKeyPair) -> [u8; 64] {
    let mut out = [0u8; 64];
    out.copy_from_slice(&key.public_key().as_ref()[1..65]);
    out
}

fn write(dir: &Path, name: &str, data: &[u8], private: bool) -> Result<(), SimError> {
    let path = dir.join(name);
    let io = |source| SimError::Io {
        path: path.clone(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    use std::io::Write;
    opts.open(&path).map_err(io)?.write_all(data).map_err(io)
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, SimError> {
    let path = dir.join(name);
    std::fs::read(&path).map_err(|source| SimError::Io { path, source })
}

/// One day, in seconds.
const DAY: i64 = 86_400;

/// Creates a simulated platform in `dir` (created with owner-only permissions; it must not
/// exist or be empty).
pub fn init(dir: &Path, o: &SimOptions) -> Result<(), SimError> {
    create_platform_dir(dir)?;
    let now = o.now;
    let certs_valid = (now - 365 * DAY, now + 10 * 365 * DAY);
    let (issued, next) = if o.stale {
        (now - (o.valid_days + 1) * DAY, now - DAY)
    } else {
        (now - 3600, now + o.valid_days * DAY)
    };
    let pki = SimPki::generate(o.revoke, certs_valid, (issued, next))?;
    let collateral = signed_collateral(&pki, o, issued, next)?;
    let attest_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let signer_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let platform = PlatformFile {
        isv_prod_id: o.isv_prod_id,
        isv_svn: o.isv_svn,
        debug: o.debug,
        mrsigner: hex::encode(sha256(signer_key.public_key_raw())),
        qe_id: hex::encode(&sha256(attest_key.public_key_raw())[..16]),
        qe_mrsigner: hex::encode(qe_mrsigner()),
    };
    write_platform(dir, &pki, &collateral, &platform, &attest_key, &signer_key)
}

/// Creates `dir` with owner-only permissions, refusing one that has content.
fn create_platform_dir(dir: &Path) -> Result<(), SimError> {
    if dir.exists()
        && std::fs::read_dir(dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(SimError::Invalid {
            path: dir.to_owned(),
            reason: "already exists and is not empty; refusing to overwrite a platform".into(),
        });
    }
    let io = |source| SimError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(io)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    Ok(())
}

/// The simulated PKI, shaped like Intel's: a root CA, a PCK Platform CA, a TCB Signing
/// certificate, a PCK certificate with the SGX extension, and the root's and PCK CA's CRLs.
struct SimPki {
    root_key: KeyPair,
    root_cert: Certificate,
    ca_key: KeyPair,
    ca_cert: Certificate,
    tcb_key: KeyPair,
    tcb_cert: Certificate,
    pck_key: KeyPair,
    pck_cert: Certificate,
    root_crl: CertificateRevocationList,
    pck_crl: CertificateRevocationList,
}

impl SimPki {
    /// Certificates valid over `(cert_nb, cert_na)`, CRLs over `(issued, next)`.
    fn generate(
        revoke: Revoke,
        (cert_nb, cert_na): (i64, i64),
        (issued, next): (i64, i64),
    ) -> Result<Self, SimError> {
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let root_params = ca_params(SIM_ROOT_CN, 1, 1, cert_nb, cert_na)?;
        let root_cert = root_params.self_signed(&root_key).map_err(err)?;
        let root = Issuer::new(root_params, &root_key);

        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let ca_params_ = ca_params(
            "teeserve Simulated SGX PCK Platform CA",
            0,
            2,
            cert_nb,
            cert_na,
        )?;
        let ca_cert = ca_params_.signed_by(&ca_key, &root).map_err(err)?;
        let ca = Issuer::new(ca_params_, &ca_key);

        let tcb_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
        let tcb_cert = leaf_params("teeserve Simulated SGX TCB Signing", 3, cert_nb, cert_na)?
            .signed_by(&tcb_key, &root)
            .map_err(err)?;

        let (pck_key, pck_cert) = pck_certificate(&ca, cert_nb, cert_na)?;

        let root_crl = signed_crl(&root, (revoke == Revoke::PckCa).then_some(2), issued, next)?;
        let pck_crl = signed_crl(&ca, (revoke == Revoke::Pck).then_some(4), issued, next)?;
        Ok(Self {
            root_key,
            root_cert,
            ca_key,
            ca_cert,
            tcb_key,
            tcb_cert,
            pck_key,
            pck_cert,
            root_crl,
            pck_crl,
        })
    }
}

/// The PCK leaf certificate (serial 4), carrying the simulated platform's SGX extension.
fn pck_certificate(
    ca: &Issuer<'_, &KeyPair>,
    cert_nb: i64,
    cert_na: i64,
) -> Result<(KeyPair, Certificate), SimError> {
    let pck_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(err)?;
    let mut cpusvn = [0u8; 16];
    cpusvn.copy_from_slice(&SIM_TCB_COMPONENTS);
    let ext = SgxExtension {
        ppid: sha256(pck_key.public_key_raw())[..16].to_vec(),
        tcb_components: SIM_TCB_COMPONENTS,
        pcesvn: SIM_PCESVN,
        cpusvn,
        pce_id: [0, 0],
        fmspc: SIM_FMSPC,
        sgx_type: 1,
    };
    let mut pck_params = leaf_params(
        "teeserve Simulated SGX PCK Certificate",
        4,
        cert_nb,
        cert_na,
    )?;
    pck_params
        .custom_extensions
        .push(CustomExtension::from_oid_content(
            &SGX_EXTENSION_OID,
            ext.encode(),
        ));
    let pck_cert = pck_params.signed_by(&pck_key, ca).map_err(err)?;
    Ok((pck_key, pck_cert))
}

/// A CRL from `issuer` over `[issued, next]`, revoking the serial `revoked` if any.
fn signed_crl(
    issuer: &Issuer<'_, &KeyPair>,
    revoked: Option<u64>,
    issued: i64,
    next: i64,
) -> Result<CertificateRevocationList, SimError> {
    CertificateRevocationListParams {
        this_update: odt(issued)?,
        next_update: odt(next)?,
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .map(|s| {
                Ok::<_, SimError>(vec![RevokedCertParams {
                    serial_number: SerialNumber::from(s),
                    revocation_time: odt(issued)?,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                }])
            })
            .transpose()?
            .unwrap_or_default(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(issuer)
    .map_err(err)
}

/// The simulated quoting enclave's MRSIGNER.
fn qe_mrsigner() -> [u8; 32] {
    sha256(b"teeserve simulated quoting enclave")
}

/// The TCB Info and QE Identity, signed by the TCB Signing key, with the PKI's chains and CRLs.
fn signed_collateral(
    pki: &SimPki,
    o: &SimOptions,
    issued: i64,
    next: i64,
) -> Result<Collateral, SimError> {
    let tcb_signer = signer(&pki.tcb_key.serialize_der())?;
    let tcb_info = tcb_info_json(o.tcb_status, issued, next);
    let qe_identity = qe_identity_json(issued, next);
    let root_pem = pki.root_cert.pem();
    let signing_chain = format!("{}{}", pki.tcb_cert.pem(), root_pem);
    Ok(Collateral {
        pck_crl_issuer_chain: format!("{}{}", pki.ca_cert.pem(), root_pem),
        root_ca_crl: pki.root_crl.der().to_vec(),
        pck_crl: pki.pck_crl.der().to_vec(),
        tcb_info_issuer_chain: signing_chain.clone(),
        tcb_info_signature: sign(&tcb_signer, tcb_info.as_bytes())?.to_vec(),
        tcb_info,
        qe_identity_issuer_chain: signing_chain,
        qe_identity_signature: sign(&tcb_signer, qe_identity.as_bytes())?.to_vec(),
        qe_identity,
    })
}

/// The TCB Info: the platform's level with `status`, and an out-of-date level below it.
fn tcb_info_json(status: TcbStatus, issued: i64, next: i64) -> String {
    let mut levels = vec![serde_json::json!({
        "tcb": {
            "sgxtcbcomponents": SIM_TCB_COMPONENTS.iter().map(|s| serde_json::json!({"svn": s})).collect::<Vec<_>>(),
            "pcesvn": SIM_PCESVN,
        },
        "tcbDate": rfc3339(issued - 30 * DAY),
        "tcbStatus": status.name(),
        "advisoryIDs": if status == TcbStatus::UpToDate { vec![] } else { vec!["INTEL-SA-00000"] },
    })];
    let mut lower = SIM_TCB_COMPONENTS;
    lower[0] -= 1;
    levels.push(serde_json::json!({
        "tcb": {
            "sgxtcbcomponents": lower.iter().map(|s| serde_json::json!({"svn": s})).collect::<Vec<_>>(),
            "pcesvn": SIM_PCESVN - 1,
        },
        "tcbDate": rfc3339(issued - 400 * DAY),
        "tcbStatus": "OutOfDate",
        "advisoryIDs": ["INTEL-SA-00001"],
    }));
    serde_json::json!({
        "id": "SGX",
        "version": 3,
        "issueDate": rfc3339(issued),
        "nextUpdate": rfc3339(next),
        "fmspc": hex::encode_upper(SIM_FMSPC),
        "pceId": "0000",
        "tcbType": 0,
        "tcbEvaluationDataNumber": 17,
        "tcbLevels": levels,
    })
    .to_string()
}

/// The QE Identity of the simulated quoting enclave.
fn qe_identity_json(issued: i64, next: i64) -> String {
    serde_json::json!({
        "id": "QE",
        "version": 2,
        "issueDate": rfc3339(issued),
        "nextUpdate": rfc3339(next),
        "tcbEvaluationDataNumber": 17,
        "miscselect": "00000000",
        "miscselectMask": "FFFFFFFF",
        "attributes": hex::encode_upper(QE_ATTRIBUTES),
        "attributesMask": "FBFFFFFFFFFFFFFF0000000000000000",
        "mrsigner": hex::encode_upper(qe_mrsigner()),
        "isvprodid": 1,
        "tcbLevels": [{"tcb": {"isvsvn": SIM_QE_SVN}, "tcbDate": rfc3339(issued - 30 * DAY), "tcbStatus": "UpToDate"}],
    })
    .to_string()
}

/// Writes the platform's files: certificates and collateral readable by all, keys owner-only.
fn write_platform(
    dir: &Path,
    pki: &SimPki,
    collateral: &Collateral,
    platform: &PlatformFile,
    attest_key: &KeyPair,
    signer_key: &KeyPair,
) -> Result<(), SimError> {
    let root_pem = pki.root_cert.pem();
    write(dir, "root.pem", root_pem.as_bytes(), false)?;
    write(
        dir,
        "pck-chain.pem",
        format!("{}{}{}", pki.pck_cert.pem(), pki.ca_cert.pem(), root_pem).as_bytes(),
        false,
    )?;
    write(
        dir,
        "collateral.json",
        collateral.to_json().as_bytes(),
        false,
    )?;
    write(
        dir,
        "platform.json",
        serde_json::to_string_pretty(platform)
            .map_err(err)?
            .as_bytes(),
        false,
    )?;
    write(dir, "pck.key", pki.pck_key.serialize_pem().as_bytes(), true)?;
    write(
        dir,
        "root.key",
        pki.root_key.serialize_pem().as_bytes(),
        true,
    )?;
    write(dir, "pck-ca.pem", pki.ca_cert.pem().as_bytes(), false)?;
    write(
        dir,
        "pck-ca.key",
        pki.ca_key.serialize_pem().as_bytes(),
        true,
    )?;
    write(
        dir,
        "tcb-signing.key",
        pki.tcb_key.serialize_pem().as_bytes(),
        true,
    )?;
    write(
        dir,
        "attestation.key",
        attest_key.serialize_pem().as_bytes(),
        true,
    )?;
    write(
        dir,
        "enclave-signer.key",
        signer_key.serialize_pem().as_bytes(),
        true,
    )?;
    write(
        dir,
        "README",
        b"A teeserve simulated TEE. It gives NO protection: these keys make any quote.\n\
          root.pem is its root of trust; collateral.json its signed collateral.\n",
        false,
    )?;
    Ok(())
}

/// Signs JSON with the platform's TCB Signing key, as Intel signs TCB Info and QE Identity
/// (for tests that need re-signed collateral).
pub fn sign_json(dir: &Path, json: &str) -> Result<Vec<u8>, SimError> {
    Ok(sign(&pem_key(dir, "tcb-signing.key")?, json.as_bytes())?.to_vec())
}

/// Issues a CRL from the simulated root (`issuer_is_root`) or PCK CA, revoking `revoked` serials,
/// valid over `[this_update, next_update]` (for tests).
pub fn make_crl(
    dir: &Path,
    issuer_is_root: bool,
    revoked: &[u64],
    this_update: i64,
    next_update: i64,
) -> Result<Vec<u8>, SimError> {
    let (cert, key) = if issuer_is_root {
        ("root.pem", "root.key")
    } else {
        ("pck-ca.pem", "pck-ca.key")
    };
    let pem = String::from_utf8_lossy(&read(dir, cert)?).into_owned();
    let kp = KeyPair::from_pem(&String::from_utf8_lossy(&read(dir, key)?)).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&pem, &kp).map_err(err)?;
    let crl = CertificateRevocationListParams {
        this_update: odt(this_update)?,
        next_update: odt(next_update)?,
        crl_number: SerialNumber::from(2u64),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| {
                Ok(RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: odt(this_update)?,
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<_, SimError>>()?,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .map_err(err)?;
    Ok(crl.der().to_vec())
}

/// A loaded simulated platform that makes quotes.
pub struct SimPlatform {
    dir: PathBuf,
    pck: EcdsaKeyPair,
    attest: EcdsaKeyPair,
    chain: Vec<u8>,
    platform: PlatformFile,
    mrenclave: [u8; 32],
}

impl std::fmt::Debug for SimPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimPlatform({})", self.dir.display())
    }
}

fn pem_key(dir: &Path, name: &str) -> Result<EcdsaKeyPair, SimError> {
    let text = read(dir, name)?;
    let kp = KeyPair::from_pem(&String::from_utf8_lossy(&text)).map_err(|e| SimError::Invalid {
        path: dir.join(name),
        reason: e.to_string(),
    })?;
    signer(&kp.serialize_der())
}

impl SimPlatform {
    /// Loads the platform in `dir`; the enclave's MRENCLAVE is `mrenclave`.
    pub fn open(dir: &Path, mrenclave: [u8; 32]) -> Result<Self, SimError> {
        let platform: PlatformFile =
            serde_json::from_slice(&read(dir, "platform.json")?).map_err(|e| {
                SimError::Invalid {
                    path: dir.join("platform.json"),
                    reason: e.to_string(),
                }
            })?;
        Ok(Self {
            pck: pem_key(dir, "pck.key")?,
            attest: pem_key(dir, "attestation.key")?,
            chain: read(dir, "pck-chain.pem")?,
            dir: dir.to_owned(),
            platform,
            mrenclave,
        })
    }

    /// The simulated enclave's MRSIGNER.
    pub fn mrsigner(&self) -> String {
        self.platform.mrsigner.clone()
    }

    /// The platform directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes an SGX v3 quote over `report_data`.
    pub fn quote(&self, report_data: &[u8; 64]) -> Result<Vec<u8>, SimError> {
        let bad = |reason: &str| SimError::Invalid {
            path: self.dir.join("platform.json"),
            reason: reason.into(),
        };
        let mut user_data = [0u8; 20];
        let qe_id = hex::decode(&self.platform.qe_id).map_err(|_| bad("qe_id is not hex"))?;
        user_data[..qe_id.len().min(16)].copy_from_slice(&qe_id[..qe_id.len().min(16)]);
        let header = Header {
            version: 3,
            att_key_type: 2,
            tee_type: 0,
            qe_svn: SIM_QE_SVN,
            pce_svn: SIM_PCESVN,
            qe_vendor_id: INTEL_QE_VENDOR_ID,
            user_data,
        };
        let mut attributes = [0u8; 16];
        attributes[0] = 0x05 | if self.platform.debug { 0x02 } else { 0 };
        attributes[8] = 0x03;
        let mut mrsigner = [0u8; 32];
        hex::decode_to_slice(&self.platform.mrsigner, &mut mrsigner)
            .map_err(|_| bad("mrsigner is not 32 bytes of hex"))?;
        let body = EnclaveReport {
            cpu_svn: SIM_TCB_COMPONENTS,
            misc_select: 0,
            isv_ext_prod_id: [0; 16],
            attributes,
            mr_enclave: self.mrenclave,
            mr_signer: mrsigner,
            config_id: [0; 64],
            isv_prod_id: self.platform.isv_prod_id,
            isv_svn: self.platform.isv_svn,
            config_svn: 0,
            isv_family_id: [0; 16],
            report_data: *report_data,
        };
        let attestation_key = raw_pub(&self.attest);
        let qe_auth_data: Vec<u8> = (0u8..32).collect();
        let mut qe_rd = [0u8; 64];
        qe_rd[..32].copy_from_slice(&sha256(
            &[attestation_key.as_slice(), &qe_auth_data].concat(),
        ));
        let mut qe_mrsigner = [0u8; 32];
        hex::decode_to_slice(&self.platform.qe_mrsigner, &mut qe_mrsigner)
            .map_err(|_| bad("qe_mrsigner is not hex"))?;
        let qe = EnclaveReport {
            cpu_svn: SIM_TCB_COMPONENTS,
            misc_select: 0,
            isv_ext_prod_id: [0; 16],
            attributes: QE_ATTRIBUTES,
            mr_enclave: sha256(b"teeserve simulated QE"),
            mr_signer: qe_mrsigner,
            config_id: [0; 64],
            isv_prod_id: 1,
            isv_svn: SIM_QE_SVN,
            config_svn: 0,
            isv_family_id: [0; 16],
            report_data: qe_rd,
        }
        .to_bytes();
        let qe_sig = sign(&self.pck, &qe)?;
        let mut isv_sig = Err(SimError::Pki("ISV signature not made".into()));
        let quote = encode_sgx_v3(
            &SgxQuoteParts {
                header: &header,
                body: &body,
                attestation_key: &attestation_key,
                qe_report: &qe,
                qe_report_signature: &qe_sig,
                qe_auth_data: &qe_auth_data,
                pck_chain_pem: &self.chain,
            },
            |signed| {
                isv_sig = sign(&self.attest, signed);
                *isv_sig.as_ref().unwrap_or(&[0u8; 64])
            },
        );
        isv_sig?;
        Ok(quote)
    }
}

/// SHA-256 of a file, streamed: the simulated MRENCLAVE of an executable.
pub fn measure_file(path: &Path) -> std::io::Result<[u8; 32]> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Ok(out)
}

/// The simulated MRENCLAVE of the running executable.
pub fn measure_self() -> std::io::Result<[u8; 32]> {
    measure_file(&std::env::current_exe()?)
}
