//! Directory contents: the plaintext shared by immutable and mutable
//! directories.
//!
//! A directory serialises to compact JSON:
//!
//! ```json
//! {"v":1,"children":[{"name":"a.txt","ro":"URI:MF-CHK:…","meta":{…}}, …]}
//! ```
//!
//! Children are sorted by name and metadata objects by key, so equal
//! contents give equal bytes — which makes immutable directories convergent.
//! JSON was chosen over a bespoke binary layout because metadata is JSON
//! anyway and a human debugging a decrypted directory can read it.
//!
//! A child that is itself a mutable directory's *write* capability is stored
//! as `ro` = its read-only capability plus `rw` = that write capability
//! encrypted under a key only write-cap holders can derive. Read-only holders
//! of the parent therefore see (and can hand out) only read access — the rule
//! Tahoe-LAFS dirnodes follow too. Immutable directories accept only
//! immutable children, as Tahoe's deep-immutable directories do, and the
//! entry that names no object ([`Capability::empty`], stored as `ro: ""`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto::{open_message, seal_message, tagged_hash, tags, Key32, BASE32, NONCE_LEN};
use crate::{CapKind, Capability, DirChildren, DirEntry, GridError, GridResult};

/// Serialisation format version.
const DIR_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Blob {
    v: u32,
    children: Vec<Child>,
}

#[derive(Serialize, Deserialize)]
struct Child {
    name: String,
    ro: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rw: Option<String>,
    meta: Value,
}

/// Rebuilds `v` with every object's keys in sorted order, whatever map
/// ordering serde_json was compiled with.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            Value::Object(
                keys.into_iter()
                    .map(|k| (k.clone(), canonical(&map[k])))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

fn writecap_nonce(key: &Key32, name: &str, cap: &str) -> [u8; NONCE_LEN] {
    let h = tagged_hash(
        tags::DIR_CHILD_WRITECAP_NONCE,
        &[key, name.as_bytes(), cap.as_bytes()],
    );
    h[..NONCE_LEN]
        .try_into()
        .expect("hash is longer than a nonce")
}

/// Serialises an immutable directory: every child must be immutable.
pub(crate) fn encode_immutable(children: &DirChildren) -> GridResult<Vec<u8>> {
    let mut out = Vec::with_capacity(children.len());
    for (name, entry) in children {
        let kind = entry.cap.kind();
        if !kind.is_immutable() && kind != CapKind::Empty {
            return Err(GridError::WrongKind {
                expected: "an immutable file or directory (immutable directories hold only immutable children)",
                got: kind,
            });
        }
        out.push(Child {
            name: name.clone(),
            ro: entry.cap.to_string(),
            rw: None,
            meta: canonical(&entry.metadata),
        });
    }
    to_bytes(out)
}

/// Serialises a mutable directory's contents; write caps of children are
/// hidden under `writecap_key`.
pub(crate) fn encode_mutable(children: &DirChildren, writecap_key: &Key32) -> GridResult<Vec<u8>> {
    let mut out = Vec::with_capacity(children.len());
    for (name, entry) in children {
        if entry.cap.kind() == CapKind::Empty {
            return Err(GridError::WrongKind {
                expected: "an object's capability (only immutable directories hold an empty entry)",
                got: CapKind::Empty,
            });
        }
        let (ro, rw) = if entry.cap.kind() == CapKind::MutableDirWrite {
            let ro = crate::read_only(&entry.cap)?;
            let cap = entry.cap.as_str();
            let nonce = writecap_nonce(writecap_key, name, cap);
            let mut sealed = nonce.to_vec();
            sealed.extend(seal_message(
                writecap_key,
                &nonce,
                name.as_bytes(),
                cap.as_bytes(),
            ));
            (ro.to_string(), Some(BASE32.encode(&sealed)))
        } else {
            (entry.cap.to_string(), None)
        };
        out.push(Child {
            name: name.clone(),
            ro,
            rw,
            meta: canonical(&entry.metadata),
        });
    }
    to_bytes(out)
}

fn to_bytes(children: Vec<Child>) -> GridResult<Vec<u8>> {
    serde_json::to_vec(&Blob {
        v: DIR_FORMAT,
        children,
    })
    .map_err(|e| GridError::Protocol(format!("cannot serialise directory: {e}")))
}

/// Parses directory contents. With `writecap_key` (the caller holds the
/// directory's write cap), children's write caps are recovered; without it
/// they are listed by their read-only caps.
pub(crate) fn decode(
    bytes: &[u8],
    writecap_key: Option<&Key32>,
    what: &str,
) -> GridResult<DirChildren> {
    let malformed = |detail: String| GridError::Integrity {
        cap: what.to_string(),
        detail: format!("directory contents are malformed: {detail}"),
    };
    let blob: Blob = serde_json::from_slice(bytes).map_err(|e| malformed(e.to_string()))?;
    if blob.v != DIR_FORMAT {
        return Err(GridError::Protocol(format!(
            "{what}: directory format {} is not understood by this program",
            blob.v
        )));
    }
    let mut children = DirChildren::new();
    for child in blob.children {
        let cap_text = match (&child.rw, writecap_key) {
            (Some(rw), Some(key)) => {
                let sealed = BASE32.decode(rw.as_bytes()).map_err(|_| {
                    malformed(format!("child {:?}: bad write cap encoding", child.name))
                })?;
                if sealed.len() < NONCE_LEN {
                    return Err(malformed(format!(
                        "child {:?}: write cap too short",
                        child.name
                    )));
                }
                let (nonce, ct) = sealed.split_at(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
                let plain = open_message(key, &nonce, child.name.as_bytes(), ct).map_err(|_| {
                    malformed(format!(
                        "child {:?}: write cap failed authentication",
                        child.name
                    ))
                })?;
                String::from_utf8(plain).map_err(|_| {
                    malformed(format!("child {:?}: write cap is not text", child.name))
                })?
            }
            _ => child.ro,
        };
        let cap = if cap_text.is_empty() && child.rw.is_none() {
            Capability::empty()
        } else {
            Capability::parse(&cap_text)
                .map_err(|e| malformed(format!("child {:?}: {e}", child.name)))?
        };
        let entry = DirEntry {
            cap,
            metadata: child.meta,
        };
        if children.insert(child.name.clone(), entry).is_some() {
            return Err(malformed(format!("child {:?} appears twice", child.name)));
        }
    }
    Ok(children)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::caps;
    use serde_json::json;

    fn file(n: u8) -> Capability {
        caps::immutable(false, &[n; 32], u64::from(n))
    }

    #[test]
    fn encoding_is_deterministic_and_round_trips() {
        let mut a = DirChildren::new();
        a.insert(
            "b".into(),
            DirEntry {
                cap: file(1),
                metadata: json!({"z": 1, "a": [1, {"y": 2, "x": 1}]}),
            },
        );
        a.insert("a é 🙂".into(), DirEntry::new(file(2)));
        let bytes = encode_immutable(&a).unwrap();
        assert_eq!(bytes, encode_immutable(&a.clone()).unwrap());
        assert_eq!(decode(&bytes, None, "t").unwrap(), a);
    }

    #[test]
    fn immutable_dirs_refuse_mutable_children() {
        let mut a = DirChildren::new();
        a.insert("d".into(), DirEntry::new(caps::dir_write(&[3; 32])));
        assert!(matches!(
            encode_immutable(&a),
            Err(GridError::WrongKind { .. })
        ));
    }

    #[test]
    fn write_caps_are_hidden_from_read_only_holders() {
        let w = caps::dir_write(&[3; 32]);
        let ro = crate::read_only(&w).unwrap();
        let mut a = DirChildren::new();
        a.insert("sub".into(), DirEntry::new(w.clone()));
        let bytes = encode_mutable(&a, &[4; 32]).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(w.as_str()));
        assert_eq!(decode(&bytes, Some(&[4; 32]), "t").unwrap()["sub"].cap, w);
        assert_eq!(decode(&bytes, None, "t").unwrap()["sub"].cap, ro);
        assert!(matches!(
            decode(&bytes, Some(&[5; 32]), "t"),
            Err(GridError::Integrity { .. })
        ));
    }

    #[test]
    fn malformed_contents_are_errors() {
        for bad in [
            &b""[..],
            b"{}",
            b"{\"v\":1,\"children\":[{\"name\":\"a\",\"ro\":\"nope\",\"meta\":{}}]}",
        ] {
            assert!(decode(bad, None, "t").is_err());
        }
        assert!(matches!(
            decode(b"{\"v\":2,\"children\":[]}", None, "t"),
            Err(GridError::Protocol(_))
        ));
    }
}
