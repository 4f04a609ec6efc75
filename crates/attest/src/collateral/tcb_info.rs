//! TCB Info (v2 and v3, SGX and TDX) and QE Identity (v2), as Intel's PCS serves them.
//!
//! Schemas: Intel PCS API v4 documentation and PCCS `services/pccs_schemas.js`; parse rules follow
//! the QVL parsers (`Src/AttestationParsers/src/Json/TcbInfo.cpp`, `EnclaveIdentityV2.cpp`).

use super::bundle::{parse_time, CollateralError};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A TCB status, with Intel's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TcbStatus {
    /// The platform is up to date.
    UpToDate,
    /// Software mitigations are needed.
    SWHardeningNeeded,
    /// Platform configuration is needed.
    ConfigurationNeeded,
    /// Both configuration and software hardening are needed.
    ConfigurationAndSWHardeningNeeded,
    /// The platform's TCB is out of date.
    OutOfDate,
    /// Out of date, and configuration is needed.
    OutOfDateConfigurationNeeded,
    /// The TCB level is revoked.
    Revoked,
    /// TD 1.5: relaunching the TD would bring it up to date.
    TDRelaunchAdvised,
    /// TD 1.5: relaunch advised, and configuration is needed.
    TDRelaunchAdvisedConfigurationNeeded,
}

impl TcbStatus {
    /// All statuses, in Intel's order.
    pub const ALL: [TcbStatus; 9] = [
        TcbStatus::UpToDate,
        TcbStatus::SWHardeningNeeded,
        TcbStatus::ConfigurationNeeded,
        TcbStatus::ConfigurationAndSWHardeningNeeded,
        TcbStatus::OutOfDate,
        TcbStatus::OutOfDateConfigurationNeeded,
        TcbStatus::Revoked,
        TcbStatus::TDRelaunchAdvised,
        TcbStatus::TDRelaunchAdvisedConfigurationNeeded,
    ];

    /// Intel's name of the status.
    pub fn name(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
            TcbStatus::Revoked => "Revoked",
            TcbStatus::TDRelaunchAdvised => "TDRelaunchAdvised",
            TcbStatus::TDRelaunchAdvisedConfigurationNeeded => {
                "TDRelaunchAdvisedConfigurationNeeded"
            }
        }
    }

    /// Parses Intel's name.
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == s)
    }

    /// True when the status says configuration is needed.
    pub fn needs_configuration(self) -> bool {
        matches!(
            self,
            TcbStatus::ConfigurationNeeded
                | TcbStatus::ConfigurationAndSWHardeningNeeded
                | TcbStatus::OutOfDateConfigurationNeeded
                | TcbStatus::TDRelaunchAdvisedConfigurationNeeded
        )
    }
}

impl std::fmt::Display for TcbStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One level of a TCB Info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcbLevel {
    /// SGX TCB component SVNs 1..16.
    pub sgx_components: [u8; 16],
    /// PCE SVN.
    pub pcesvn: u16,
    /// TDX TCB component SVNs 1..16 (TDX only).
    pub tdx_components: Option<[u8; 16]>,
    /// tcbDate (RFC 3339).
    pub tcb_date: String,
    /// tcbStatus.
    pub status: TcbStatus,
    /// advisoryIDs.
    pub advisory_ids: Vec<String>,
}

/// One level of a TDX module identity or QE identity: an ISV SVN threshold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsvLevel {
    /// Minimum ISV SVN.
    pub isvsvn: u16,
    /// tcbDate.
    pub tcb_date: String,
    /// tcbStatus.
    pub status: TcbStatus,
    /// advisoryIDs.
    pub advisory_ids: Vec<String>,
}

/// A TDX module identity (`tdxModule` or an entry of `tdxModuleIdentities`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TdxModuleIdentity {
    /// `TDX_01`, ... (empty for the default `tdxModule`).
    pub id: String,
    /// Expected MRSIGNERSEAM (48 bytes).
    pub mrsigner: Vec<u8>,
    /// Expected SEAMATTRIBUTES.
    pub attributes: Vec<u8>,
    /// Mask for SEAMATTRIBUTES.
    pub attributes_mask: Vec<u8>,
    /// Module TCB levels, in JSON order.
    pub levels: Vec<IsvLevel>,
}

/// A parsed TCB Info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcbInfo {
    /// `SGX` or `TDX` (v2 has no id and is SGX).
    pub id: String,
    /// 2 or 3.
    pub version: u32,
    /// issueDate, Unix seconds.
    pub issue_date: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// FMSPC (6 bytes).
    pub fmspc: [u8; 6],
    /// PCE id (2 bytes).
    pub pce_id: [u8; 2],
    /// tcbEvaluationDataNumber.
    pub tcb_evaluation_data_number: u32,
    /// The default TDX module identity (TDX only).
    pub tdx_module: Option<TdxModuleIdentity>,
    /// Versioned TDX module identities.
    pub tdx_module_identities: Vec<TdxModuleIdentity>,
    /// TCB levels, sorted from highest to lowest as Intel's QVL holds them.
    pub levels: Vec<TcbLevel>,
}

fn hex_field(obj: &Value, key: &str, path: &str, len: usize) -> Result<Vec<u8>, CollateralError> {
    let s = obj.get(key).and_then(Value::as_str).ok_or_else(|| {
        CollateralError::field(format!("{path}.{key}"), "missing or not a string")
    })?;
    let b = hex::decode(s).map_err(|_| {
        CollateralError::field(format!("{path}.{key}"), format!("{s:?} is not hex"))
    })?;
    if b.len() != len {
        return Err(CollateralError::field(
            format!("{path}.{key}"),
            format!("{} bytes, expected {len}", b.len()),
        ));
    }
    Ok(b)
}

fn str_field<'a>(obj: &'a Value, key: &str, path: &str) -> Result<&'a str, CollateralError> {
    obj.get(key)
        .and_then(Value::as_str)
        .ok_or_else(|| CollateralError::field(format!("{path}.{key}"), "missing or not a string"))
}

fn uint_field(obj: &Value, key: &str, path: &str, max: u64) -> Result<u64, CollateralError> {
    let v = obj.get(key).and_then(Value::as_u64).ok_or_else(|| {
        CollateralError::field(format!("{path}.{key}"), "missing or not an integer")
    })?;
    if v > max {
        return Err(CollateralError::field(
            format!("{path}.{key}"),
            format!("{v} is larger than {max}"),
        ));
    }
    Ok(v)
}

fn status_field(obj: &Value, path: &str) -> Result<TcbStatus, CollateralError> {
    let s = str_field(obj, "tcbStatus", path)?;
    TcbStatus::from_name(s).ok_or_else(|| {
        CollateralError::field(format!("{path}.tcbStatus"), format!("unknown status {s:?}"))
    })
}

fn advisories(obj: &Value) -> Vec<String> {
    obj.get("advisoryIDs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn levels_array<'a>(obj: &'a Value, path: &str) -> Result<&'a Vec<Value>, CollateralError> {
    let levels = obj
        .get("tcbLevels")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            CollateralError::field(format!("{path}.tcbLevels"), "missing or not an array")
        })?;
    if levels.is_empty() {
        return Err(CollateralError::field(
            format!("{path}.tcbLevels"),
            "is empty",
        ));
    }
    if levels.len() > 1024 {
        return Err(CollateralError::field(
            format!("{path}.tcbLevels"),
            "more than 1024 levels",
        ));
    }
    Ok(levels)
}

fn isv_levels(obj: &Value, path: &str) -> Result<Vec<IsvLevel>, CollateralError> {
    let mut out = Vec::new();
    for (i, l) in levels_array(obj, path)?.iter().enumerate() {
        let p = format!("{path}.tcbLevels[{i}]");
        let tcb = l
            .get("tcb")
            .ok_or_else(|| CollateralError::field(format!("{p}.tcb"), "missing"))?;
        out.push(IsvLevel {
            isvsvn: uint_field(tcb, "isvsvn", &format!("{p}.tcb"), u16::MAX.into())? as u16,
            tcb_date: str_field(l, "tcbDate", &p)?.to_owned(),
            status: status_field(l, &p)?,
            advisory_ids: advisories(l),
        });
    }
    Ok(out)
}

fn components(tcb: &Value, key: &str, path: &str) -> Result<[u8; 16], CollateralError> {
    let arr = tcb.get(key).and_then(Value::as_array).ok_or_else(|| {
        CollateralError::field(format!("{path}.{key}"), "missing or not an array")
    })?;
    if arr.len() != 16 {
        return Err(CollateralError::field(
            format!("{path}.{key}"),
            format!("{} components, expected 16", arr.len()),
        ));
    }
    let mut out = [0u8; 16];
    for (i, c) in arr.iter().enumerate() {
        out[i] = uint_field(c, "svn", &format!("{path}.{key}[{i}]"), 255)? as u8;
    }
    Ok(out)
}

fn module_identity(
    v: &Value,
    path: &str,
    with_levels: bool,
) -> Result<TdxModuleIdentity, CollateralError> {
    Ok(TdxModuleIdentity {
        id: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        mrsigner: hex_field(v, "mrsigner", path, 48)?,
        attributes: hex_field(v, "attributes", path, 8)?,
        attributes_mask: hex_field(v, "attributesMask", path, 8)?,
        levels: if with_levels {
            isv_levels(v, path)?
        } else {
            Vec::new()
        },
    })
}

#[derive(Deserialize)]
struct RawComp {
    svn: u8,
}

#[derive(Deserialize)]
#[rustfmt::skip]
struct RawTcb {
    sgxtcbcomponents: Option<Vec<RawComp>>, tdxtcbcomponents: Option<Vec<RawComp>>, pcesvn: u16,
    sgxtcbcomp01svn: Option<u8>, sgxtcbcomp02svn: Option<u8>, sgxtcbcomp03svn: Option<u8>, sgxtcbcomp04svn: Option<u8>,
    sgxtcbcomp05svn: Option<u8>, sgxtcbcomp06svn: Option<u8>, sgxtcbcomp07svn: Option<u8>, sgxtcbcomp08svn: Option<u8>,
    sgxtcbcomp09svn: Option<u8>, sgxtcbcomp10svn: Option<u8>, sgxtcbcomp11svn: Option<u8>, sgxtcbcomp12svn: Option<u8>,
    sgxtcbcomp13svn: Option<u8>, sgxtcbcomp14svn: Option<u8>, sgxtcbcomp15svn: Option<u8>, sgxtcbcomp16svn: Option<u8>,
}

#[derive(Deserialize)]
struct RawLevel {
    tcb: RawTcb,
    #[serde(rename = "tcbDate")]
    tcb_date: String,
    #[serde(rename = "tcbStatus")]
    tcb_status: String,
    #[serde(rename = "advisoryIDs", default)]
    advisory_ids: Vec<String>,
}

#[derive(Deserialize)]
struct RawInfo {
    id: Option<String>,
    version: u32,
    #[serde(rename = "issueDate")]
    issue_date: String,
    #[serde(rename = "nextUpdate")]
    next_update: String,
    fmspc: String,
    #[serde(rename = "pceId")]
    pce_id: String,
    #[serde(rename = "tcbEvaluationDataNumber", default)]
    tcb_evaluation_data_number: u32,
    #[serde(rename = "tdxModule")]
    tdx_module: Option<Value>,
    #[serde(rename = "tdxModuleIdentities")]
    tdx_module_identities: Option<Vec<Value>>,
    #[serde(rename = "tcbLevels")]
    tcb_levels: Vec<RawLevel>,
}

fn comps16(v: &Option<Vec<RawComp>>) -> Option<[u8; 16]> {
    let v = v.as_ref()?;
    if v.len() != 16 {
        return None;
    }
    let mut out = [0u8; 16];
    for (o, c) in out.iter_mut().zip(v) {
        *o = c.svn;
    }
    Some(out)
}

impl TcbInfo {
    /// Typed fast path for well-formed TCB Info; `None` sends the caller to the checked path,
    /// which names the field at fault.
    fn parse_fast(json: &str) -> Option<Self> {
        let r: RawInfo = serde_json::from_str(json).ok()?;
        let tdx = match (r.version, r.id.as_deref()) {
            (3, Some("SGX")) => false,
            (3, Some("TDX")) => true,
            (2, _) => false,
            _ => return None,
        };
        if r.tcb_levels.is_empty() || r.tcb_levels.len() > 1024 {
            return None;
        }
        let mut levels = Vec::with_capacity(r.tcb_levels.len());
        for l in r.tcb_levels {
            let t = &l.tcb;
            let sgx = if r.version == 3 {
                comps16(&t.sgxtcbcomponents)?
            } else {
                [
                    t.sgxtcbcomp01svn?,
                    t.sgxtcbcomp02svn?,
                    t.sgxtcbcomp03svn?,
                    t.sgxtcbcomp04svn?,
                    t.sgxtcbcomp05svn?,
                    t.sgxtcbcomp06svn?,
                    t.sgxtcbcomp07svn?,
                    t.sgxtcbcomp08svn?,
                    t.sgxtcbcomp09svn?,
                    t.sgxtcbcomp10svn?,
                    t.sgxtcbcomp11svn?,
                    t.sgxtcbcomp12svn?,
                    t.sgxtcbcomp13svn?,
                    t.sgxtcbcomp14svn?,
                    t.sgxtcbcomp15svn?,
                    t.sgxtcbcomp16svn?,
                ]
            };
            let tdx_components = if tdx {
                Some(comps16(&t.tdxtcbcomponents)?)
            } else {
                None
            };
            levels.push(TcbLevel {
                sgx_components: sgx,
                pcesvn: t.pcesvn,
                tdx_components,
                tcb_date: l.tcb_date,
                status: TcbStatus::from_name(&l.tcb_status)?,
                advisory_ids: l.advisory_ids,
            });
        }
        levels.sort_by_key(|l| std::cmp::Reverse(level_key(l)));
        if levels
            .windows(2)
            .any(|w| level_key(&w[0]) == level_key(&w[1]))
        {
            return None;
        }
        let hex_n = |s: &str, n: usize| hex::decode(s).ok().filter(|b| b.len() == n);
        let tdx_module = match (&r.tdx_module, tdx) {
            (Some(m), true) => Some(module_identity(m, "tcb_info.tdxModule", false).ok()?),
            (None, true) => return None,
            _ => None,
        };
        let mut tdx_module_identities = Vec::new();
        for (i, m) in r.tdx_module_identities.iter().flatten().enumerate() {
            tdx_module_identities.push(
                module_identity(m, &format!("tcb_info.tdxModuleIdentities[{i}]"), true).ok()?,
            );
        }
        Some(TcbInfo {
            id: if tdx { "TDX".into() } else { "SGX".into() },
            version: r.version,
            issue_date: parse_time("tcb_info.issueDate", &r.issue_date).ok()?,
            next_update: parse_time("tcb_info.nextUpdate", &r.next_update).ok()?,
            fmspc: hex_n(&r.fmspc, 6)?.try_into().ok()?,
            pce_id: hex_n(&r.pce_id, 2)?.try_into().ok()?,
            tcb_evaluation_data_number: r.tcb_evaluation_data_number,
            tdx_module,
            tdx_module_identities,
            levels,
        })
    }

    /// Parses the `tcbInfo` object (the signed string).
    pub fn parse(json: &str) -> Result<Self, CollateralError> {
        if let Some(t) = Self::parse_fast(json) {
            return Ok(t);
        }
        let p = "tcb_info";
        let v: Value = serde_json::from_str(json)
            .map_err(|e| CollateralError::field(p, format!("not JSON: {e}")))?;
        let (version, id) = version_and_id(&v)?;
        let tdx = id == "TDX";
        let levels = tcb_levels(&v, version, tdx)?;
        let fmspc: [u8; 6] = hex_field(&v, "fmspc", p, 6)?.try_into().unwrap_or_default();
        let pce_id: [u8; 2] = hex_field(&v, "pceId", p, 2)?.try_into().unwrap_or_default();
        let (tdx_module, tdx_module_identities) = tdx_modules(&v, tdx)?;
        Ok(TcbInfo {
            version,
            issue_date: parse_time("tcb_info.issueDate", str_field(&v, "issueDate", p)?)?,
            next_update: parse_time("tcb_info.nextUpdate", str_field(&v, "nextUpdate", p)?)?,
            fmspc,
            pce_id,
            tcb_evaluation_data_number: v
                .get("tcbEvaluationDataNumber")
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32,
            tdx_module,
            tdx_module_identities,
            levels,
            id,
        })
    }
}

/// The TCB Info's version (2 or 3) and id (`SGX` or `TDX`; v2 has none and is SGX).
fn version_and_id(v: &Value) -> Result<(u32, String), CollateralError> {
    let p = "tcb_info";
    let version = uint_field(v, "version", p, 100)? as u32;
    if version != 2 && version != 3 {
        return Err(CollateralError::field(
            "tcb_info.version",
            format!("{version} is not 2 or 3"),
        ));
    }
    let id = if version == 3 {
        let id = str_field(v, "id", p)?;
        if id != "SGX" && id != "TDX" {
            return Err(CollateralError::field(
                "tcb_info.id",
                format!("{id:?} is not SGX or TDX"),
            ));
        }
        id.to_owned()
    } else {
        "SGX".to_owned()
    };
    Ok((version, id))
}

/// The TCB levels, highest first.
fn tcb_levels(v: &Value, version: u32, tdx: bool) -> Result<Vec<TcbLevel>, CollateralError> {
    let p = "tcb_info";
    let mut levels = Vec::new();
    for (i, l) in levels_array(v, p)?.iter().enumerate() {
        levels.push(tcb_level(l, &format!("{p}.tcbLevels[{i}]"), version, tdx)?);
    }
    // QVL keeps levels in a set: duplicates are an error, order is descending.
    for i in 0..levels.len() {
        for j in i + 1..levels.len() {
            if level_key(&levels[i]) == level_key(&levels[j]) {
                return Err(CollateralError::field(
                    format!("tcb_info.tcbLevels[{j}]"),
                    format!("duplicates tcbLevels[{i}]"),
                ));
            }
        }
    }
    levels.sort_by_key(|l| std::cmp::Reverse(level_key(l)));
    Ok(levels)
}

/// One TCB level; its components are an array of `{"svn": n}` in v3, and sixteen
/// `sgxtcbcompNNsvn` fields in v2.
fn tcb_level(l: &Value, lp: &str, version: u32, tdx: bool) -> Result<TcbLevel, CollateralError> {
    let tcb = l
        .get("tcb")
        .ok_or_else(|| CollateralError::field(format!("{lp}.tcb"), "missing"))?;
    let tp = format!("{lp}.tcb");
    let (sgx_components, tdx_components) = if version == 3 {
        let sgx = components(tcb, "sgxtcbcomponents", &tp)?;
        let tdxc = if tdx {
            Some(components(tcb, "tdxtcbcomponents", &tp)?)
        } else {
            None
        };
        (sgx, tdxc)
    } else {
        let mut sgx = [0u8; 16];
        for (k, c) in sgx.iter_mut().enumerate() {
            *c = uint_field(tcb, &format!("sgxtcbcomp{:02}svn", k + 1), &tp, 255)? as u8;
        }
        (sgx, None)
    };
    Ok(TcbLevel {
        sgx_components,
        pcesvn: uint_field(tcb, "pcesvn", &tp, u16::MAX.into())? as u16,
        tdx_components,
        tcb_date: str_field(l, "tcbDate", lp)?.to_owned(),
        status: status_field(l, lp)?,
        advisory_ids: advisories(l),
    })
}

/// What orders TCB levels (and makes two of them the same level).
fn level_key(l: &TcbLevel) -> ([u8; 16], u16, [u8; 16]) {
    (
        l.sgx_components,
        l.pcesvn,
        l.tdx_components.unwrap_or_default(),
    )
}

/// The TDX module identities: the default `tdxModule` (required for TDX) and the versioned
/// `tdxModuleIdentities`.
fn tdx_modules(
    v: &Value,
    tdx: bool,
) -> Result<(Option<TdxModuleIdentity>, Vec<TdxModuleIdentity>), CollateralError> {
    let tdx_module = match v.get("tdxModule") {
        Some(m) if tdx => Some(module_identity(m, "tcb_info.tdxModule", false)?),
        None if tdx => {
            return Err(CollateralError::field(
                "tcb_info.tdxModule",
                "missing for TDX",
            ))
        }
        _ => None,
    };
    let mut tdx_module_identities = Vec::new();
    if let Some(ids) = v.get("tdxModuleIdentities").and_then(Value::as_array) {
        for (i, m) in ids.iter().enumerate() {
            tdx_module_identities.push(module_identity(
                m,
                &format!("tcb_info.tdxModuleIdentities[{i}]"),
                true,
            )?);
        }
    }
    Ok((tdx_module, tdx_module_identities))
}

/// A parsed QE Identity (`enclaveIdentity` v2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnclaveIdentity {
    /// `QE`, `QVE` or `TD_QE`.
    pub id: String,
    /// 2.
    pub version: u32,
    /// issueDate, Unix seconds.
    pub issue_date: i64,
    /// nextUpdate, Unix seconds.
    pub next_update: i64,
    /// tcbEvaluationDataNumber.
    pub tcb_evaluation_data_number: u32,
    /// MISCSELECT, read as a little-endian u32 from its hex bytes.
    pub miscselect: u32,
    /// MISCSELECT mask.
    pub miscselect_mask: u32,
    /// ATTRIBUTES (16 bytes).
    pub attributes: [u8; 16],
    /// ATTRIBUTES mask.
    pub attributes_mask: [u8; 16],
    /// MRSIGNER.
    pub mrsigner: [u8; 32],
    /// ISVPRODID.
    pub isvprodid: u16,
    /// Levels in JSON order.
    pub levels: Vec<IsvLevel>,
}

impl EnclaveIdentity {
    /// Parses the `enclaveIdentity` object (the signed string).
    pub fn parse(json: &str) -> Result<Self, CollateralError> {
        let p = "qe_identity";
        let v: Value = serde_json::from_str(json)
            .map_err(|e| CollateralError::field(p, format!("not JSON: {e}")))?;
        let version = uint_field(&v, "version", p, 100)? as u32;
        if version != 2 {
            return Err(CollateralError::field(
                "qe_identity.version",
                format!("{version} is not 2"),
            ));
        }
        let id = str_field(&v, "id", p)?;
        if !["QE", "QVE", "TD_QE"].contains(&id) {
            return Err(CollateralError::field(
                "qe_identity.id",
                format!("{id:?} is not QE, QVE or TD_QE"),
            ));
        }
        let le32 = |key: &str| -> Result<u32, CollateralError> {
            let b = hex_field(&v, key, p, 4)?;
            Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        Ok(EnclaveIdentity {
            id: id.to_owned(),
            version,
            issue_date: parse_time("qe_identity.issueDate", str_field(&v, "issueDate", p)?)?,
            next_update: parse_time("qe_identity.nextUpdate", str_field(&v, "nextUpdate", p)?)?,
            tcb_evaluation_data_number: v
                .get("tcbEvaluationDataNumber")
                .and_then(Value::as_u64)
                .unwrap_or(0) as u32,
            miscselect: le32("miscselect")?,
            miscselect_mask: le32("miscselectMask")?,
            attributes: hex_field(&v, "attributes", p, 16)?
                .try_into()
                .unwrap_or_default(),
            attributes_mask: hex_field(&v, "attributesMask", p, 16)?
                .try_into()
                .unwrap_or_default(),
            mrsigner: hex_field(&v, "mrsigner", p, 32)?
                .try_into()
                .unwrap_or_default(),
            isvprodid: uint_field(&v, "isvprodid", p, u16::MAX.into())? as u16,
            levels: isv_levels(&v, p)?,
        })
    }
}
