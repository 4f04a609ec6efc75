//! Validity periods: every certificate, CRL and signed collateral item is valid from one time to
//! another, and all of them must hold at the verification time.

use crate::x509::{Cert, Crl};

use super::error::VerifyError;

/// When one item is valid, with the names of the fields that say so.
#[derive(Debug)]
pub(super) struct Validity {
    item: String,
    from_field: &'static str,
    from: i64,
    to_field: &'static str,
    to: i64,
}

/// The first item, in order, that is not valid at `at`.
pub(super) fn check_validity(items: &[Validity], at: i64) -> Result<(), VerifyError> {
    for v in items {
        if at < v.from {
            return Err(VerifyError::NotYetValid {
                item: v.item.clone(),
                field: v.from_field,
                bound: v.from,
                at,
            });
        }
        if at > v.to {
            return Err(VerifyError::Expired {
                item: v.item.clone(),
                field: v.to_field,
                bound: v.to,
                at,
            });
        }
    }
    Ok(())
}

/// A certificate, from notBefore to notAfter.
pub(super) fn cert_validity(item: &str, c: &Cert) -> Validity {
    Validity {
        item: item.to_owned(),
        from_field: "notBefore",
        from: c.not_before,
        to_field: "notAfter",
        to: c.not_after,
    }
}

/// A CRL, from thisUpdate to nextUpdate.
pub(super) fn crl_validity(item: &str, c: &Crl) -> Validity {
    Validity {
        item: item.to_owned(),
        from_field: "thisUpdate",
        from: c.this_update,
        to_field: "nextUpdate",
        to: c.next_update,
    }
}

/// A signed JSON item (TCB Info, QE Identity), from issueDate to nextUpdate.
pub(super) fn issued_validity(item: &str, issue_date: i64, next_update: i64) -> Validity {
    Validity {
        item: item.to_owned(),
        from_field: "issueDate",
        from: issue_date,
        to_field: "nextUpdate",
        to: next_update,
    }
}

/// The window in which every item is valid: the latest start and the earliest end.
pub(super) fn window(items: &[Validity]) -> (i64, i64) {
    (
        items.iter().map(|v| v.from).max().unwrap_or(0),
        items.iter().map(|v| v.to).min().unwrap_or(0),
    )
}
