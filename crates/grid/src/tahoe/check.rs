//! Checking and repairing one object with the node's own checker
//! (`POST /uri/$CAP?t=check&verify=true[&repair=true]&output=JSON`).
//!
//! Downloading an object proves it can be read *now*; the checker also says
//! how much redundancy is left (how many distinct shares the grid holds of
//! the `N` it should), and the repairer uploads the missing shares — the
//! Tahoe side of `verify --repair`. With `verify=true` the servers' shares
//! are read and their hashes checked, not only counted.

use super::errors::{map_transport, Ctx};
use super::TahoeGrid;
use crate::{Capability, GridError, GridResult};

/// The node's verdict on one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectCheck {
    /// All `N` shares are there and intact (after the repair, if one ran).
    pub healthy: bool,
    /// Enough shares are there to read it.
    pub recoverable: bool,
    /// Good shares found, after the repair if one ran.
    pub shares_good: u64,
    /// Shares the object was encoded into (`N`).
    pub shares_expected: u64,
    /// A repair was needed and attempted.
    pub repair_attempted: bool,
    /// That repair succeeded.
    pub repaired: bool,
    /// The node's one-line summary.
    pub summary: String,
}

impl ObjectCheck {
    /// Parses the node's JSON answer, for a check or a check-and-repair.
    fn parse(body: &[u8]) -> GridResult<ObjectCheck> {
        let bad = |why: &str| GridError::Protocol(format!("check results: {why}"));
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| bad(&format!("not JSON ({e})")))?;
        // A check-and-repair nests the check results before and after.
        let repair_attempted = v["repair-attempted"].as_bool();
        let after = match repair_attempted {
            Some(_) => &v["post-repair-results"],
            None => &v,
        };
        let results = &after["results"];
        let flag = |name: &str| {
            results[name]
                .as_bool()
                .ok_or_else(|| bad(&format!("no {name:?} flag")))
        };
        let count = |name: &str| results[name].as_u64().unwrap_or(0);
        Ok(ObjectCheck {
            healthy: flag("healthy")?,
            recoverable: flag("recoverable")?,
            shares_good: count("count-shares-good"),
            shares_expected: count("count-shares-expected"),
            repair_attempted: repair_attempted.unwrap_or(false),
            repaired: v["repair-successful"].as_bool().unwrap_or(false),
            summary: after["summary"]
                .as_str()
                .or_else(|| results["summary"].as_str())
                .unwrap_or("")
                .to_owned(),
        })
    }
}

/// A literal (`LIT`) capability holds its small object itself: there are
/// no shares to check.
fn is_literal(cap: &Capability) -> bool {
    let s = cap.as_str();
    s.starts_with("URI:LIT:") || s.starts_with("URI:DIR2-LIT:")
}

impl TahoeGrid {
    /// Checks the object `cap` names, reading and verifying every share;
    /// with `repair`, has the node restore missing or bad shares.
    pub async fn check(&self, cap: &Capability, repair: bool) -> GridResult<ObjectCheck> {
        if is_literal(cap) {
            return Ok(ObjectCheck {
                healthy: true,
                recoverable: true,
                shares_good: 0,
                shares_expected: 0,
                repair_attempted: false,
                repaired: false,
                summary: "literal: the data is in the capability".into(),
            });
        }
        let ctx = Ctx::new(if repair { "check-and-repair" } else { "check" }, Some(cap));
        let mut query = vec![("t", "check"), ("verify", "true"), ("output", "JSON")];
        if repair {
            query.push(("repair", "true"));
        }
        let url = self.url(&["uri", cap.as_str()], &query);
        let resp = self
            .send(ctx, &mut false, || {
                Ok(self.metadata_request(self.inner.http.post(url.clone())))
            })
            .await?;
        let body = resp.bytes().await.map_err(|e| map_transport(&e, ctx))?;
        ObjectCheck::parse(&body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_check_and_a_check_and_repair() {
        let check = br#"{"storage-index": "x", "summary": "Healthy",
            "results": {"healthy": true, "recoverable": true,
                        "count-shares-good": 3, "count-shares-expected": 3}}"#;
        let c = ObjectCheck::parse(check).unwrap();
        assert!(c.healthy && c.recoverable && !c.repair_attempted);
        assert_eq!((c.shares_good, c.shares_expected), (3, 3));
        assert_eq!(c.summary, "Healthy");
        let repaired = br#"{"repair-attempted": true, "repair-successful": true,
            "pre-repair-results": {"summary": "Not Healthy", "results": {"healthy": false, "recoverable": true}},
            "post-repair-results": {"summary": "Healthy", "results": {"healthy": true, "recoverable": true,
                "count-shares-good": 3, "count-shares-expected": 3}}}"#;
        let r = ObjectCheck::parse(repaired).unwrap();
        assert!(r.healthy && r.repair_attempted && r.repaired);
        assert!(ObjectCheck::parse(b"<html>").is_err());
        assert!(ObjectCheck::parse(b"{}").is_err());
    }
}
