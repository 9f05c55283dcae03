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

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Error as _, SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::crypto::{open_message, seal_message, tagged_hash, tags, Key32, BASE32, NONCE_LEN};
use crate::{CapKind, Capability, DirChildren, DirEntry, GridError, GridResult};

/// Serialisation format version.
const DIR_FORMAT: u32 = 1;

// Encoding and decoding stream between the caller's `DirChildren` and the
// bytes: no second copy of every entry is made on the way. A daemon's
// publish of a 100,000-entry directory held one (and a buffer grown by
// doubling) at its memory peak: ~35 MB.

#[derive(Serialize)]
struct BlobOut<C> {
    v: u32,
    children: C,
}

/// One child as stored, borrowed from the caller's entry.
#[derive(Serialize)]
struct ChildOut<'a> {
    name: &'a str,
    ro: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rw: Option<String>,
    meta: Canonical<'a>,
}

/// A JSON value written with every object's keys in sorted order, whatever
/// map ordering serde_json was compiled with.
struct Canonical<'a>(&'a Value);

impl Serialize for Canonical<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                let mut m = s.serialize_map(Some(keys.len()))?;
                for k in keys {
                    m.serialize_entry(k, &Canonical(&map[k]))?;
                }
                m.end()
            }
            Value::Array(items) => s.collect_seq(items.iter().map(Canonical)),
            other => other.serialize(s),
        }
    }
}

/// What is stored for a child's capability: its `ro` and, for a mutable
/// directory's write capability, its sealed `rw`.
type Stored<'a> = (Cow<'a, str>, Option<String>);

/// The children, each stored as `stored` says; the first error it gives
/// is kept in `failed`.
struct ChildrenOut<'a, 'f, F> {
    children: &'a DirChildren,
    stored: F,
    failed: &'f RefCell<Option<GridError>>,
}

impl<'a, F> Serialize for ChildrenOut<'a, '_, F>
where
    F: Fn(&'a str, &'a Capability) -> GridResult<Stored<'a>>,
{
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.children.len()))?;
        for (name, entry) in self.children {
            let (ro, rw) = (self.stored)(name, &entry.cap).map_err(|e| {
                let message = e.to_string();
                *self.failed.borrow_mut() = Some(e);
                S::Error::custom(message)
            })?;
            seq.serialize_element(&ChildOut {
                name,
                ro,
                rw,
                meta: Canonical(&entry.metadata),
            })?;
        }
        seq.end()
    }
}

/// Writes `children` as a directory's contents, each child's capability
/// as `stored` says, into a buffer sized for them.
fn to_bytes<'a>(
    children: &'a DirChildren,
    stored: impl Fn(&'a str, &'a Capability) -> GridResult<Stored<'a>>,
) -> GridResult<Vec<u8>> {
    // `{"name":"","ro":"","meta":{}},` is 31 bytes; empty metadata is the
    // common case, and a longer one only grows the buffer.
    let size: usize = children
        .iter()
        .map(|(name, entry)| name.len() + entry.cap.as_str().len() + 48)
        .sum();
    let mut out = Vec::with_capacity(size + 32);
    let failed = RefCell::new(None);
    let blob = BlobOut {
        v: DIR_FORMAT,
        children: ChildrenOut {
            children,
            stored,
            failed: &failed,
        },
    };
    let written = serde_json::to_writer(&mut out, &blob);
    if let Some(e) = failed.into_inner() {
        return Err(e);
    }
    written.map_err(|e| GridError::Protocol(format!("cannot serialise directory: {e}")))?;
    Ok(out)
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
    to_bytes(children, |_, cap| {
        let kind = cap.kind();
        if !kind.is_immutable() && kind != CapKind::Empty {
            return Err(GridError::WrongKind {
                expected: "an immutable file or directory (immutable directories hold only immutable children)",
                got: kind,
            });
        }
        Ok((Cow::Borrowed(cap.as_str()), None))
    })
}

/// Serialises a mutable directory's contents; write caps of children are
/// hidden under `writecap_key`.
pub(crate) fn encode_mutable(children: &DirChildren, writecap_key: &Key32) -> GridResult<Vec<u8>> {
    to_bytes(children, |name, cap| match cap.kind() {
        CapKind::Empty => Err(GridError::WrongKind {
            expected: "an object's capability (only immutable directories hold an empty entry)",
            got: CapKind::Empty,
        }),
        CapKind::MutableDirWrite => {
            let ro = crate::read_only(cap)?;
            let nonce = writecap_nonce(writecap_key, name, cap.as_str());
            let mut sealed = nonce.to_vec();
            sealed.extend(seal_message(
                writecap_key,
                &nonce,
                name.as_bytes(),
                cap.as_str().as_bytes(),
            ));
            Ok((Cow::Owned(ro.to_string()), Some(BASE32.encode(&sealed))))
        }
        _ => Ok((Cow::Borrowed(cap.as_str()), None)),
    })
}

/// Parses directory contents. With `writecap_key` (the caller holds the
/// directory's write cap), children's write caps are recovered; without it
/// they are listed by their read-only caps.
pub(crate) fn decode(
    bytes: &[u8],
    writecap_key: Option<&Key32>,
    what: &str,
) -> GridResult<DirChildren> {
    let unknown_format = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = BlobIn {
        writecap_key,
        unknown_format: &unknown_format,
    }
    .deserialize(&mut de)
    .and_then(|children| de.end().map(|()| children));
    if let Some(v) = unknown_format.into_inner() {
        return Err(GridError::Protocol(format!(
            "{what}: directory format {v} is not understood by this program"
        )));
    }
    parsed.map_err(|e| GridError::Integrity {
        cap: what.to_string(),
        detail: format!("directory contents are malformed: {e}"),
    })
}

/// One child as stored, borrowed from the bytes where no escape prevents it.
#[derive(Deserialize)]
struct ChildIn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    ro: Cow<'a, str>,
    #[serde(default, borrow)]
    rw: Option<Cow<'a, str>>,
    meta: Value,
}

impl ChildIn<'_> {
    /// The entry this child stands for; an error says what is wrong with it.
    fn entry(self, writecap_key: Option<&Key32>) -> Result<(String, DirEntry), String> {
        let name = self.name;
        let cap = match (&self.rw, writecap_key) {
            (Some(rw), Some(key)) => {
                let sealed = BASE32
                    .decode(rw.as_bytes())
                    .map_err(|_| format!("child {name:?}: bad write cap encoding"))?;
                if sealed.len() < NONCE_LEN {
                    return Err(format!("child {name:?}: write cap too short"));
                }
                let (nonce, ct) = sealed.split_at(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at NONCE_LEN");
                let plain = open_message(key, &nonce, name.as_bytes(), ct)
                    .map_err(|_| format!("child {name:?}: write cap failed authentication"))?;
                let text = String::from_utf8(plain)
                    .map_err(|_| format!("child {name:?}: write cap is not text"))?;
                Capability::parse(&text)
            }
            _ if self.ro.is_empty() && self.rw.is_none() => Ok(Capability::empty()),
            _ => Capability::parse(&self.ro),
        }
        .map_err(|e| format!("child {name:?}: {e}"))?;
        let entry = DirEntry {
            cap,
            metadata: self.meta,
        };
        Ok((name.into_owned(), entry))
    }
}

/// Reads `{"v": …, "children": […]}` into the entries, child by child.
/// A format other than ours is left in `unknown_format`.
struct BlobIn<'k, 'f> {
    writecap_key: Option<&'k Key32>,
    unknown_format: &'f RefCell<Option<u32>>,
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum BlobField {
    V,
    Children,
    #[serde(other)]
    Other,
}

impl<'de> DeserializeSeed<'de> for BlobIn<'_, '_> {
    type Value = DirChildren;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DirChildren, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BlobIn<'_, '_> {
    type Value = DirChildren;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a directory object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<DirChildren, A::Error> {
        let mut version = None;
        let mut children = None;
        while let Some(field) = map.next_key()? {
            match field {
                BlobField::V => {
                    let v: u32 = map.next_value()?;
                    if v != DIR_FORMAT {
                        *self.unknown_format.borrow_mut() = Some(v);
                        return Err(de::Error::custom("unknown format"));
                    }
                    version = Some(v);
                }
                BlobField::Children => {
                    children = Some(map.next_value_seed(ChildrenIn {
                        writecap_key: self.writecap_key,
                    })?);
                }
                BlobField::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        version.ok_or_else(|| de::Error::missing_field("v"))?;
        children.ok_or_else(|| de::Error::missing_field("children"))
    }
}

/// Reads the children array into the entries as it goes.
struct ChildrenIn<'k> {
    writecap_key: Option<&'k Key32>,
}

impl<'de> DeserializeSeed<'de> for ChildrenIn<'_> {
    type Value = DirChildren;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<DirChildren, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ChildrenIn<'_> {
    type Value = DirChildren;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of children")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DirChildren, A::Error> {
        let mut children = DirChildren::new();
        while let Some(child) = seq.next_element::<ChildIn<'de>>()? {
            let (name, entry) = child.entry(self.writecap_key).map_err(de::Error::custom)?;
            if children.contains_key(&name) {
                return Err(de::Error::custom(format!("child {name:?} appears twice")));
            }
            children.insert(name, entry);
        }
        Ok(children)
    }
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

    /// The bytes of a directory never change: immutable directories are
    /// convergent, so the same children must give the same object forever.
    #[test]
    fn the_encoding_is_fixed() {
        let mut a = DirChildren::new();
        a.insert(
            "b".into(),
            DirEntry {
                cap: file(1),
                metadata: json!({"z": 1, "a": [1, {"y": "é", "x": null}]}),
            },
        );
        a.insert("a\"é".into(), DirEntry::new(Capability::empty()));
        let bytes = encode_immutable(&a).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"children":[{"name":"a\"é","ro":"","meta":{}},{"name":"b","ro":"URI:MF-CHK:aeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaq:1","meta":{"a":[1,{"x":null,"y":"é"}],"z":1}}]}"#
        );
        assert_eq!(decode(&bytes, None, "t").unwrap(), a);
        let mut m = DirChildren::new();
        m.insert("sub".into(), DirEntry::new(caps::dir_write(&[3; 32])));
        m.insert("f".into(), DirEntry::new(file(2)));
        let bytes = encode_mutable(&m, &[4; 32]).unwrap();
        assert_eq!(
            String::from_utf8(bytes.clone()).unwrap(),
            r#"{"v":1,"children":[{"name":"f","ro":"URI:MF-CHK:aibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaibaeaqcaiba:2","meta":{}},{"name":"sub","ro":"URI:MF-DIR-RO:q6sdl2th7tcdbdq3y3sm4ef4mwxescyborrkqnaveyaiikmu5viq:5vesrrri2hbmn2xjam4jawmvmeuvsjz2lrr7snrwyfdbjlehg7iq","rw":"rpjenrjcpruhg7c7fhc2a6yvn6eihum4svtjdrummywqym4rmjc2o2mw3vqsaw6yiwh7rxefp2ouhs2saw7zdnsj5kyecpk777cyauifcrdglrptvcv7ulem2jj5jn6wxaxgptejomweks2s4q","meta":{}}]}"#
        );
        assert_eq!(decode(&bytes, Some(&[4; 32]), "t").unwrap(), m);
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
        let twice = br#"{"v":1,"children":[{"name":"a","ro":"","meta":{}},{"name":"a","ro":"","meta":{}}]}"#;
        assert!(matches!(
            decode(twice, None, "t"),
            Err(GridError::Integrity { detail, .. }) if detail.contains("appears twice")
        ));
        // Fields in another order, and unknown ones, read as before.
        let reordered = br#"{"children":[{"meta":{},"ro":"","name":"a"}],"x":[1],"v":1}"#;
        assert_eq!(decode(reordered, None, "t").unwrap().len(), 1);
    }
}
