//! The SGX extension of PCK certificates (OID 1.2.840.113741.1.13.1).
//!
//! Layout: Intel "SGX PCK Certificate and CRL Profile", and the QVL's `ParserUtils.h`.

use crate::der::{self, Reader};

pub use crate::der::DerError;

/// OID arcs of the SGX extension.
pub const SGX_EXTENSION_OID: [u64; 7] = [1, 2, 840, 113741, 1, 13, 1];

/// The platform facts a PCK certificate carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgxExtension {
    /// PPID (16 bytes).
    pub ppid: Vec<u8>,
    /// SGX TCB component SVNs 1..16.
    pub tcb_components: [u8; 16],
    /// PCE SVN.
    pub pcesvn: u16,
    /// CPU SVN.
    pub cpusvn: [u8; 16],
    /// PCE id.
    pub pce_id: [u8; 2],
    /// FMSPC.
    pub fmspc: [u8; 6],
    /// SGX type: 0 Standard, 1 Scalable, 2 ScalableWithIntegrity.
    pub sgx_type: u8,
}

fn sub_oid(arcs: &[u64]) -> Vec<u8> {
    der::oid_content(arcs)
}

impl SgxExtension {
    /// Parses the extension value (a SEQUENCE of OID / value pairs).
    pub fn parse(value: &[u8]) -> Result<Self, der::DerError> {
        let base = SGX_EXTENSION_OID.to_vec();
        let oid = |tail: &[u64]| sub_oid(&[base.as_slice(), tail].concat());
        let mut top = Reader::new(value);
        let seq = top.expect(der::SEQUENCE, "SGX extension is not a SEQUENCE")?;
        let mut r = Reader::new(seq);
        let mut ext = SgxExtension {
            ppid: Vec::new(),
            tcb_components: [0; 16],
            pcesvn: 0,
            cpusvn: [0; 16],
            pce_id: [0; 2],
            fmspc: [0; 6],
            sgx_type: 0,
        };
        let (mut have_tcb, mut have_fmspc, mut have_pceid) = (false, false, false);
        while !r.is_empty() {
            let pair = r.expect(der::SEQUENCE, "SGX extension entry is not a SEQUENCE")?;
            let mut p = Reader::new(pair);
            let id = p.expect(der::OID, "SGX extension entry has no OID")?;
            let v = p.next_tlv()?;
            if id == oid(&[1]).as_slice() {
                ext.ppid = v.value.to_vec();
            } else if id == oid(&[2]).as_slice() {
                have_tcb = true;
                let mut t = Reader::new(v.value);
                while !t.is_empty() {
                    let comp = t.expect(der::SEQUENCE, "TCB entry is not a SEQUENCE")?;
                    let mut c = Reader::new(comp);
                    let cid = c.expect(der::OID, "TCB entry has no OID")?;
                    let cv = c.next_tlv()?;
                    for i in 1..=16u64 {
                        if cid == oid(&[2, i]).as_slice() {
                            ext.tcb_components[(i - 1) as usize] =
                                u8::try_from(der::uint(cv.value)?)
                                    .map_err(|_| der::DerError("TCB component SVN above 255"))?;
                        }
                    }
                    if cid == oid(&[2, 17]).as_slice() {
                        ext.pcesvn = u16::try_from(der::uint(cv.value)?)
                            .map_err(|_| der::DerError("PCESVN above 65535"))?;
                    } else if cid == oid(&[2, 18]).as_slice() {
                        ext.cpusvn = cv
                            .value
                            .try_into()
                            .map_err(|_| der::DerError("CPUSVN is not 16 bytes"))?;
                    }
                }
            } else if id == oid(&[3]).as_slice() {
                have_pceid = true;
                ext.pce_id = v
                    .value
                    .try_into()
                    .map_err(|_| der::DerError("PCE-ID is not 2 bytes"))?;
            } else if id == oid(&[4]).as_slice() {
                have_fmspc = true;
                ext.fmspc = v
                    .value
                    .try_into()
                    .map_err(|_| der::DerError("FMSPC is not 6 bytes"))?;
            } else if id == oid(&[5]).as_slice() {
                ext.sgx_type = u8::try_from(der::uint(v.value)?).unwrap_or(u8::MAX);
            }
        }
        if !(have_tcb && have_fmspc && have_pceid) {
            return Err(der::DerError("SGX extension lacks TCB, FMSPC or PCE-ID"));
        }
        Ok(ext)
    }

    /// Encodes the extension value (used by the simulated platform).
    pub fn encode(&self) -> Vec<u8> {
        let base = SGX_EXTENSION_OID.to_vec();
        let oid = |tail: &[u64]| der::tlv(der::OID, &sub_oid(&[base.as_slice(), tail].concat()));
        let mut tcb = Vec::new();
        for i in 0..16 {
            tcb.push(der::sequence(&[
                oid(&[2, i as u64 + 1]),
                der::uint_tlv(u64::from(self.tcb_components[i])),
            ]));
        }
        tcb.push(der::sequence(&[
            oid(&[2, 17]),
            der::uint_tlv(u64::from(self.pcesvn)),
        ]));
        tcb.push(der::sequence(&[
            oid(&[2, 18]),
            der::tlv(der::OCTET_STRING, &self.cpusvn),
        ]));
        der::sequence(&[
            der::sequence(&[oid(&[1]), der::tlv(der::OCTET_STRING, &self.ppid)]),
            der::sequence(&[oid(&[2]), der::sequence(&tcb)]),
            der::sequence(&[oid(&[3]), der::tlv(der::OCTET_STRING, &self.pce_id)]),
            der::sequence(&[oid(&[4]), der::tlv(der::OCTET_STRING, &self.fmspc)]),
            der::sequence(&[oid(&[5]), der::tlv(der::ENUMERATED, &[self.sgx_type])]),
        ])
    }
}
