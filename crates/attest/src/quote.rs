//! Intel DCAP quotes: SGX ECDSA quote v3 and TDX quotes v4 and v5, parsed into typed structs.
//!
//! Layouts: Intel SGXDataCenterAttestationPrimitives `sgx_quote_3.h`, `sgx_quote_4.h`,
//! `sgx_quote_5.h` and the QVL's `QuoteConstants.h`. All integers are little-endian; signatures
//! are raw big-endian `r || s` (P-256) and public keys raw `x || y`.

use serde::Serialize;

/// Intel's QE vendor id, the only one accepted.
pub const INTEL_QE_VENDOR_ID: [u8; 16] = [
    0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07,
];
/// The largest quote accepted. Real quotes are about 5 KB; padded ones up to 8 KB.
pub const MAX_QUOTE_SIZE: usize = 64 * 1024;
/// The largest certification data accepted (a PEM chain of three certificates is about 3.5 KB).
pub const MAX_CERT_DATA_SIZE: usize = 32 * 1024;
/// `att_key_type` of ECDSA-256-with-P-256.
pub const ATT_KEY_TYPE_ECDSA_P256: u16 = 2;
/// `tee_type` of SGX.
pub const TEE_TYPE_SGX: u32 = 0;
/// `tee_type` of TDX.
pub const TEE_TYPE_TDX: u32 = 0x81;
/// Certification data type: PCK certificate chain (PEM).
pub const CERT_DATA_PCK_CHAIN: u16 = 5;
/// Certification data type: QE report certification data (v4/v5 envelope).
pub const CERT_DATA_QE_REPORT: u16 = 6;

const ENCLAVE_REPORT_LEN: usize = 384;
const TD_REPORT10_LEN: usize = 584;
const TD_REPORT15_LEN: usize = 648;

/// Why a quote could not be parsed. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    /// The bytes ended inside a field.
    #[error("quote truncated: {field} needs {need} bytes at offset {offset}, only {have} remain")]
    Truncated {
        /// The field being read.
        field: &'static str,
        /// Its offset in the quote.
        offset: usize,
        /// Bytes it needs.
        need: usize,
        /// Bytes left.
        have: usize,
    },
    /// The quote is larger than [`MAX_QUOTE_SIZE`].
    #[error("quote is {0} bytes, more than the {MAX_QUOTE_SIZE} accepted")]
    TooLarge(usize),
    /// A version other than 3, 4 or 5.
    #[error("quote header.version {0} is not supported (expected 3, 4 or 5)")]
    Version(u16),
    /// An attestation key type other than ECDSA P-256.
    #[error("quote header.att_key_type {0} is not supported (expected 2, ECDSA P-256)")]
    KeyType(u16),
    /// A TEE type other than SGX or TDX, or one the version cannot carry.
    #[error("quote header.tee_type {tee_type:#x} is not valid for a version {version} quote")]
    TeeType {
        /// The header's version.
        version: u16,
        /// The header's tee_type.
        tee_type: u32,
    },
    /// The QE vendor id is not Intel's.
    #[error("quote header.qe_vendor_id {0} is not Intel's (939a7233f79c4ca9940a0db3957f0607)")]
    VendorId(String),
    /// A v5 body type other than 1, 2 or 3, or one inconsistent with the TEE type.
    #[error(
        "quote body_type {body_type} with size {size} is not valid for tee_type {tee_type:#x}"
    )]
    BodyType {
        /// The body type.
        body_type: u16,
        /// The declared body size.
        size: u32,
        /// The header's tee type.
        tee_type: u32,
    },
    /// Certification data of an unexpected type.
    #[error("{field} has certification data type {got}, expected {expected}")]
    CertDataType {
        /// Where it was found.
        field: &'static str,
        /// The type found.
        got: u16,
        /// The type required.
        expected: u16,
    },
    /// A length field larger than allowed.
    #[error("{field} declares {len} bytes, more than the {max} accepted")]
    Oversized {
        /// The field.
        field: &'static str,
        /// The declared length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A nested length that does not match its container.
    #[error("{0}")]
    Inconsistent(&'static str),
}

/// Which TEE produced a quote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tee {
    /// Intel SGX enclave.
    Sgx,
    /// Intel TDX trust domain.
    Tdx,
}

impl std::fmt::Display for Tee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tee::Sgx => "sgx",
            Tee::Tdx => "tdx",
        })
    }
}

/// The 48-byte quote header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// 3, 4 or 5.
    pub version: u16,
    /// 2 = ECDSA P-256.
    pub att_key_type: u16,
    /// 0 = SGX, 0x81 = TDX.
    pub tee_type: u32,
    /// QE security version (reserved in v4).
    pub qe_svn: u16,
    /// PCE security version.
    pub pce_svn: u16,
    /// QE vendor id.
    pub qe_vendor_id: [u8; 16],
    /// User data; the first 16 bytes are the QE id.
    pub user_data: [u8; 20],
}

/// An SGX report body (`sgx_report_body_t`, 384 bytes): the enclave's or the QE's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnclaveReport {
    /// CPU security version.
    pub cpu_svn: [u8; 16],
    /// MISCSELECT.
    pub misc_select: u32,
    /// Extended product id (KSS).
    pub isv_ext_prod_id: [u8; 16],
    /// ATTRIBUTES: flags (u64) then XFRM (u64).
    pub attributes: [u8; 16],
    /// MRENCLAVE.
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    pub mr_signer: [u8; 32],
    /// CONFIGID (KSS).
    pub config_id: [u8; 64],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// CONFIGSVN.
    pub config_svn: u16,
    /// ISVFAMILYID.
    pub isv_family_id: [u8; 16],
    /// REPORTDATA.
    pub report_data: [u8; 64],
}

/// SGX attribute flag: enclave initialised.
pub const SGX_FLAG_INIT: u64 = 0x01;
/// SGX attribute flag: debug enclave.
pub const SGX_FLAG_DEBUG: u64 = 0x02;
/// SGX attribute flag: 64-bit mode.
pub const SGX_FLAG_MODE64BIT: u64 = 0x04;

impl EnclaveReport {
    /// The attribute flags word.
    pub fn flags(&self) -> u64 {
        u64::from_le_bytes(self.attributes[..8].try_into().unwrap_or([0; 8]))
    }

    /// True for a debug enclave (ATTRIBUTES.DEBUG).
    pub fn is_debug(&self) -> bool {
        self.flags() & SGX_FLAG_DEBUG != 0
    }

    /// Parses exactly 384 bytes.
    pub fn parse(b: &[u8]) -> Result<Self, QuoteError> {
        let mut c = Cursor::new(b, 0);
        Ok(Self {
            cpu_svn: c.array("report.cpu_svn")?,
            misc_select: c.u32("report.misc_select")?,
            isv_ext_prod_id: {
                c.skip(12, "report.reserved1")?;
                c.array("report.isv_ext_prod_id")?
            },
            attributes: c.array("report.attributes")?,
            mr_enclave: c.array("report.mr_enclave")?,
            mr_signer: {
                c.skip(32, "report.reserved2")?;
                c.array("report.mr_signer")?
            },
            config_id: {
                c.skip(32, "report.reserved3")?;
                c.array("report.config_id")?
            },
            isv_prod_id: c.u16("report.isv_prod_id")?,
            isv_svn: c.u16("report.isv_svn")?,
            config_svn: c.u16("report.config_svn")?,
            isv_family_id: {
                c.skip(42, "report.reserved4")?;
                c.array("report.isv_family_id")?
            },
            report_data: c.array("report.report_data")?,
        })
    }

    /// Serialises to the 384-byte layout (used by the simulated platform).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENCLAVE_REPORT_LEN);
        out.extend_from_slice(&self.cpu_svn);
        out.extend_from_slice(&self.misc_select.to_le_bytes());
        out.extend_from_slice(&[0; 12]);
        out.extend_from_slice(&self.isv_ext_prod_id);
        out.extend_from_slice(&self.attributes);
        out.extend_from_slice(&self.mr_enclave);
        out.extend_from_slice(&[0; 32]);
        out.extend_from_slice(&self.mr_signer);
        out.extend_from_slice(&[0; 32]);
        out.extend_from_slice(&self.config_id);
        out.extend_from_slice(&self.isv_prod_id.to_le_bytes());
        out.extend_from_slice(&self.isv_svn.to_le_bytes());
        out.extend_from_slice(&self.config_svn.to_le_bytes());
        out.extend_from_slice(&[0; 42]);
        out.extend_from_slice(&self.isv_family_id);
        out.extend_from_slice(&self.report_data);
        out
    }
}

/// A TD report body, TDX 1.0 (584 bytes) or 1.5 (648 bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdReport {
    /// TEE_TCB_SVN: byte 0 the module ISVSVN, byte 1 the module major version, byte 2 the late microcode SVN.
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM.
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM (zero for Intel's module).
    pub mr_signer_seam: [u8; 48],
    /// SEAMATTRIBUTES.
    pub seam_attributes: [u8; 8],
    /// TDATTRIBUTES; bit 0 is DEBUG.
    pub td_attributes: [u8; 8],
    /// XFAM.
    pub xfam: [u8; 8],
    /// MRTD.
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    pub mr_owner_config: [u8; 48],
    /// RTMR0..3.
    pub rtmr: [[u8; 48]; 4],
    /// REPORTDATA.
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN2 (TD 1.5 only).
    pub tee_tcb_svn2: Option<[u8; 16]>,
    /// MRSERVICETD (TD 1.5 only).
    pub mr_service_td: Option<[u8; 48]>,
}

impl TdReport {
    /// True for a debug TD (TDATTRIBUTES.DEBUG, bit 0).
    pub fn is_debug(&self) -> bool {
        self.td_attributes[0] & 0x01 != 0
    }

    fn parse(b: &[u8], v15: bool) -> Result<Self, QuoteError> {
        let mut c = Cursor::new(b, 0);
        let mut r = Self {
            tee_tcb_svn: c.array("td_report.tee_tcb_svn")?,
            mr_seam: c.array("td_report.mr_seam")?,
            mr_signer_seam: c.array("td_report.mr_signer_seam")?,
            seam_attributes: c.array("td_report.seam_attributes")?,
            td_attributes: c.array("td_report.td_attributes")?,
            xfam: c.array("td_report.xfam")?,
            mr_td: c.array("td_report.mr_td")?,
            mr_config_id: c.array("td_report.mr_config_id")?,
            mr_owner: c.array("td_report.mr_owner")?,
            mr_owner_config: c.array("td_report.mr_owner_config")?,
            rtmr: [
                c.array("td_report.rtmr0")?,
                c.array("td_report.rtmr1")?,
                c.array("td_report.rtmr2")?,
                c.array("td_report.rtmr3")?,
            ],
            report_data: c.array("td_report.report_data")?,
            tee_tcb_svn2: None,
            mr_service_td: None,
        };
        if v15 {
            r.tee_tcb_svn2 = Some(c.array("td_report.tee_tcb_svn2")?);
            r.mr_service_td = Some(c.array("td_report.mr_servicetd")?);
        }
        Ok(r)
    }
}

/// The attested body of a quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// An SGX enclave report.
    Sgx(EnclaveReport),
    /// A TD 1.0 report.
    Td10(TdReport),
    /// A TD 1.5 report.
    Td15(TdReport),
}

impl Body {
    /// The 64 bytes of report data.
    pub fn report_data(&self) -> &[u8; 64] {
        match self {
            Body::Sgx(r) => &r.report_data,
            Body::Td10(r) | Body::Td15(r) => &r.report_data,
        }
    }

    /// Which TEE this body belongs to.
    pub fn tee(&self) -> Tee {
        match self {
            Body::Sgx(_) => Tee::Sgx,
            _ => Tee::Tdx,
        }
    }

    /// True for a debug enclave or TD.
    pub fn is_debug(&self) -> bool {
        match self {
            Body::Sgx(r) => r.is_debug(),
            Body::Td10(r) | Body::Td15(r) => r.is_debug(),
        }
    }
}

/// A parsed quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quote {
    /// The header.
    pub header: Header,
    /// The attested body.
    pub body: Body,
    /// The bytes the ISV signature covers (header, v5 descriptor, body).
    pub signed_region: Vec<u8>,
    /// The ISV signature over `signed_region`, by the attestation key.
    pub signature: [u8; 64],
    /// The attestation public key (`x || y`).
    pub attestation_key: [u8; 64],
    /// The QE report, parsed.
    pub qe_report: EnclaveReport,
    /// The QE report's 384 raw bytes (what the PCK signature covers).
    pub qe_report_raw: Vec<u8>,
    /// The QE report signature, by the PCK key.
    pub qe_report_signature: [u8; 64],
    /// QE authentication data.
    pub qe_auth_data: Vec<u8>,
    /// The PCK certificate chain (PEM, trailing NULs removed).
    pub pck_chain_pem: Vec<u8>,
}

impl Quote {
    /// Parses a quote. Trailing bytes after the signature data are tolerated.
    pub fn parse(bytes: &[u8]) -> Result<Self, QuoteError> {
        if bytes.len() > MAX_QUOTE_SIZE {
            return Err(QuoteError::TooLarge(bytes.len()));
        }
        let mut c = Cursor::new(bytes, 0);
        let header = read_header(&mut c)?;
        check_header(&header)?;
        let body = read_body(&mut c, &header)?;
        let signed_region = bytes[..c.pos].to_vec();

        let sig_len = c.u32("signature_data_len")? as usize;
        let sig_data = c.take(sig_len, "signature data")?;
        let mut s = Cursor::new(sig_data, c.pos - sig_len);
        let signature = s.array("signature data.isv_signature")?;
        let attestation_key = s.array("signature data.attestation_key")?;
        let qe = read_qe_certification(qe_block(&mut s, header.version)?)?;
        Ok(Quote {
            header,
            body,
            signed_region,
            signature,
            attestation_key,
            qe_report: qe.report,
            qe_report_raw: qe.report_raw,
            qe_report_signature: qe.report_signature,
            qe_auth_data: qe.auth_data,
            pck_chain_pem: qe.pck_chain_pem,
        })
    }

    /// Which TEE produced the quote.
    pub fn tee(&self) -> Tee {
        self.body.tee()
    }
}

/// The 48-byte header, read as it is ([`check_header`] says whether it is supported).
fn read_header(c: &mut Cursor<'_>) -> Result<Header, QuoteError> {
    Ok(Header {
        version: c.u16("header.version")?,
        att_key_type: c.u16("header.att_key_type")?,
        tee_type: c.u32("header.tee_type")?,
        qe_svn: c.u16("header.qe_svn")?,
        pce_svn: c.u16("header.pce_svn")?,
        qe_vendor_id: c.array("header.qe_vendor_id")?,
        user_data: c.array("header.user_data")?,
    })
}

/// The versions, key type, TEE types and QE vendor this parser accepts.
fn check_header(header: &Header) -> Result<(), QuoteError> {
    if !(3..=5).contains(&header.version) {
        return Err(QuoteError::Version(header.version));
    }
    if header.att_key_type != ATT_KEY_TYPE_ECDSA_P256 {
        return Err(QuoteError::KeyType(header.att_key_type));
    }
    let tee_ok = match header.version {
        3 => header.tee_type == TEE_TYPE_SGX,
        _ => header.tee_type == TEE_TYPE_SGX || header.tee_type == TEE_TYPE_TDX,
    };
    if !tee_ok {
        return Err(QuoteError::TeeType {
            version: header.version,
            tee_type: header.tee_type,
        });
    }
    if header.qe_vendor_id != INTEL_QE_VENDOR_ID {
        return Err(QuoteError::VendorId(hex::encode(header.qe_vendor_id)));
    }
    Ok(())
}

/// The report body: fixed by the version and TEE type up to v4; v5 describes it with a type and
/// a size.
fn read_body(c: &mut Cursor<'_>, header: &Header) -> Result<Body, QuoteError> {
    Ok(match header.version {
        3 => Body::Sgx(EnclaveReport::parse(
            c.take(ENCLAVE_REPORT_LEN, "report body")?,
        )?),
        4 if header.tee_type == TEE_TYPE_SGX => Body::Sgx(EnclaveReport::parse(
            c.take(ENCLAVE_REPORT_LEN, "report body")?,
        )?),
        4 => Body::Td10(TdReport::parse(
            c.take(TD_REPORT10_LEN, "td report body")?,
            false,
        )?),
        _ => {
            let body_type = c.u16("body_type")?;
            let size = c.u32("body_size")?;
            let expected = match (body_type, header.tee_type) {
                (1, TEE_TYPE_SGX) => Some(ENCLAVE_REPORT_LEN),
                (2, TEE_TYPE_TDX) => Some(TD_REPORT10_LEN),
                (3, TEE_TYPE_TDX) => Some(TD_REPORT15_LEN),
                _ => None,
            };
            if expected != Some(size as usize) {
                return Err(QuoteError::BodyType {
                    body_type,
                    size,
                    tee_type: header.tee_type,
                });
            }
            let raw = c.take(size as usize, "report body")?;
            match body_type {
                1 => Body::Sgx(EnclaveReport::parse(raw)?),
                2 => Body::Td10(TdReport::parse(raw, false)?),
                _ => Body::Td15(TdReport::parse(raw, true)?),
            }
        }
    })
}

/// The QE report certification data: the rest of the signature data in v3, wrapped in a
/// certification data envelope of type 6 in v4 and v5.
fn qe_block<'a>(s: &mut Cursor<'a>, version: u16) -> Result<&'a [u8], QuoteError> {
    if version == 3 {
        return Ok(s.rest());
    }
    let ty = s.u16("certification data type")?;
    if ty != CERT_DATA_QE_REPORT {
        return Err(QuoteError::CertDataType {
            field: "signature data certification data",
            got: ty,
            expected: CERT_DATA_QE_REPORT,
        });
    }
    let len = s.u32("certification data size")? as usize;
    s.take(len, "QE report certification data")
}

/// What the QE report certification data carries.
struct QeCertification {
    report_raw: Vec<u8>,
    report: EnclaveReport,
    report_signature: [u8; 64],
    auth_data: Vec<u8>,
    pck_chain_pem: Vec<u8>,
}

fn read_qe_certification(qe_block: &[u8]) -> Result<QeCertification, QuoteError> {
    let mut q = Cursor::new(qe_block, 0);
    let report_raw = q.take(ENCLAVE_REPORT_LEN, "qe_report")?.to_vec();
    let report = EnclaveReport::parse(&report_raw)?;
    let report_signature = q.array("qe_report_signature")?;
    let auth_len = q.u16("qe_auth_data size")? as usize;
    let auth_data = q.take(auth_len, "qe_auth_data")?.to_vec();
    let ty = q.u16("certification data type")?;
    if ty != CERT_DATA_PCK_CHAIN {
        return Err(QuoteError::CertDataType {
            field: "QE certification data",
            got: ty,
            expected: CERT_DATA_PCK_CHAIN,
        });
    }
    let len = q.u32("certification data size")? as usize;
    if len > MAX_CERT_DATA_SIZE {
        return Err(QuoteError::Oversized {
            field: "certification data",
            len,
            max: MAX_CERT_DATA_SIZE,
        });
    }
    let mut pck_chain_pem = q.take(len, "certification data (PCK chain)")?.to_vec();
    while pck_chain_pem.last() == Some(&0) {
        pck_chain_pem.pop();
    }
    Ok(QeCertification {
        report_raw,
        report,
        report_signature,
        auth_data,
        pck_chain_pem,
    })
}

/// The parts of an SGX v3 quote, for building one (the simulated platform and tests).
#[derive(Debug, Clone)]
pub struct SgxQuoteParts<'a> {
    /// The header.
    pub header: &'a Header,
    /// The enclave report.
    pub body: &'a EnclaveReport,
    /// The attestation public key (`x || y`).
    pub attestation_key: &'a [u8; 64],
    /// The QE report (384 bytes).
    pub qe_report: &'a [u8],
    /// The PCK signature over the QE report.
    pub qe_report_signature: &'a [u8; 64],
    /// QE authentication data.
    pub qe_auth_data: &'a [u8],
    /// The PCK chain, PEM.
    pub pck_chain_pem: &'a [u8],
}

/// Builds the bytes of an SGX v3 quote; `sign_isv` signs the header and body with the
/// attestation key.
pub fn encode_sgx_v3(
    parts: &SgxQuoteParts<'_>,
    sign_isv: impl FnOnce(&[u8]) -> [u8; 64],
) -> Vec<u8> {
    let SgxQuoteParts {
        header,
        body,
        attestation_key,
        qe_report,
        qe_report_signature,
        qe_auth_data,
        pck_chain_pem,
    } = *parts;
    let mut out = Vec::with_capacity(1200 + pck_chain_pem.len());
    out.extend_from_slice(&header.version.to_le_bytes());
    out.extend_from_slice(&header.att_key_type.to_le_bytes());
    out.extend_from_slice(&header.tee_type.to_le_bytes());
    out.extend_from_slice(&header.qe_svn.to_le_bytes());
    out.extend_from_slice(&header.pce_svn.to_le_bytes());
    out.extend_from_slice(&header.qe_vendor_id);
    out.extend_from_slice(&header.user_data);
    out.extend_from_slice(&body.to_bytes());
    let isv_sig = sign_isv(&out);
    let mut cert = pck_chain_pem.to_vec();
    cert.push(0);
    let sig_len = 64 + 64 + 384 + 64 + 2 + qe_auth_data.len() + 2 + 4 + cert.len();
    out.extend_from_slice(&(sig_len as u32).to_le_bytes());
    out.extend_from_slice(&isv_sig);
    out.extend_from_slice(attestation_key);
    out.extend_from_slice(qe_report);
    out.extend_from_slice(qe_report_signature);
    out.extend_from_slice(&(qe_auth_data.len() as u16).to_le_bytes());
    out.extend_from_slice(qe_auth_data);
    out.extend_from_slice(&CERT_DATA_PCK_CHAIN.to_le_bytes());
    out.extend_from_slice(&(cert.len() as u32).to_le_bytes());
    out.extend_from_slice(&cert);
    out
}

/// Reads a quote given as raw bytes or as hex text (whitespace and a `0x` prefix allowed).
pub fn decode_quote_file(bytes: &[u8]) -> Vec<u8> {
    let text: Vec<u8> = bytes
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    let text = text.strip_prefix(b"0x").unwrap_or(&text);
    if !text.is_empty() && text.len().is_multiple_of(2) && text.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(raw) = hex::decode(text) {
            return raw;
        }
    }
    bytes.to_vec()
}

/// A bounds-checked little-endian reader that names the field on failure.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], base: usize) -> Self {
        Self { buf, pos: 0, base }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], QuoteError> {
        let have = self.buf.len() - self.pos;
        if n > have {
            return Err(QuoteError::Truncated {
                field,
                offset: self.base + self.pos,
                need: n,
                have,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn skip(&mut self, n: usize, field: &'static str) -> Result<(), QuoteError> {
        self.take(n, field).map(|_| ())
    }

    fn rest(&mut self) -> &'a [u8] {
        let s = &self.buf[self.pos..];
        self.pos = self.buf.len();
        s
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], QuoteError> {
        let s = self.take(N, field)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, QuoteError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, QuoteError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
}
