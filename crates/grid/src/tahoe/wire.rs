//! The JSON the Tahoe web API speaks for directories, and its translation to
//! and from [`DirChildren`].
//!
//! Request bodies (`t=set_children`, `t=mkdir-immutable`) and listings
//! (`t=json`) use the same per-child shape:
//! `NAME: [KIND, {"rw_uri"?, "ro_uri"?, "metadata"?, …}]` (`tahoe.md` §1.3).
//!
//! Two rules shape this module:
//!
//! * **The `tahoe` metadata key belongs to the node.** Tahoe adds
//!   `tahoe.linkcrtime`/`linkmotime` to every edge and drops any `tahoe` key we
//!   send. Listings therefore strip it (so metadata round-trips exactly) and
//!   writes refuse it up front rather than lose it silently.
//! * **Children this program cannot represent are skipped, not fatal.** A
//!   Tahoe directory may hold mutable files (`URI:SSK:`/`URI:MDMF:`), caps from
//!   a newer Tahoe (`"unknown"`, with `ro.`/`imm.` prefixes) or anything
//!   else another client linked. A listing leaves them out and logs one warning
//!   per child (name and kind only, never the cap). They stay on the grid
//!   untouched, because writes here only ever name the children they change.

use serde_json::{json, Map, Value};

use crate::{read_only, CapKind, Capability, DirChildren, DirEntry, GridError, GridResult};

/// The metadata key Tahoe reserves for itself.
pub(crate) const TAHOE_KEY: &str = "tahoe";

/// Checks a child name the way the trait defines names: non-empty UTF-8
/// without `/`. (Tahoe itself would accept both, creating entries no path can
/// reach.)
pub(crate) fn check_name(name: &str) -> GridResult<()> {
    if name.is_empty() || name.contains('/') {
        return Err(GridError::Protocol(format!(
            "invalid child name {name:?}: empty or contains '/'"
        )));
    }
    Ok(())
}

fn check_metadata(name: &str, metadata: &Value) -> GridResult<()> {
    match metadata {
        Value::Object(map) if map.contains_key(TAHOE_KEY) => Err(GridError::Protocol(format!(
            "metadata of {name:?} uses the key {TAHOE_KEY:?}, which Tahoe-LAFS reserves and would drop"
        ))),
        Value::Object(_) => Ok(()),
        _ => Err(GridError::Protocol(format!("metadata of {name:?} is not a JSON object"))),
    }
}

/// Builds the request body for `t=set_children` or `t=mkdir-immutable`.
///
/// Mutable directory write caps go in `rw_uri` with their derived read cap in
/// `ro_uri` (as Tahoe's own listings do); everything else goes in `ro_uri`
/// only. With `immutable_only`, any child that is not deep-immutable is
/// refused here with [`GridError::WrongKind`], since Tahoe's immutable
/// directories cannot hold one (the node would answer 400
/// `MustBeDeepImmutableError`).
pub(crate) fn children_body(children: &DirChildren, immutable_only: bool) -> GridResult<Vec<u8>> {
    let mut out = Map::new();
    for (name, entry) in children {
        check_name(name)?;
        check_metadata(name, &entry.metadata)?;
        let kind = entry.cap.kind();
        if kind == CapKind::Empty {
            // A child without capabilities: Tahoe keeps it as an unknown
            // node, which only an immutable directory may hold.
            if !immutable_only {
                return Err(GridError::WrongKind {
                    expected:
                        "an object's capability (only immutable directories hold an empty entry)",
                    got: kind,
                });
            }
            let props = json!({"ro_uri": null, "metadata": entry.metadata});
            out.insert(name.clone(), json!(["filenode", props]));
            continue;
        }
        crate::tahoe::caps::validate(&entry.cap)?;
        if immutable_only && !kind.is_immutable() {
            return Err(GridError::WrongKind {
                expected: "immutable capability (Tahoe immutable directories are deep-immutable)",
                got: kind,
            });
        }
        let node_type = if kind.is_dir() { "dirnode" } else { "filenode" };
        let mut props = Map::new();
        if kind == CapKind::MutableDirWrite {
            props.insert("rw_uri".into(), Value::String(entry.cap.to_string()));
            props.insert(
                "ro_uri".into(),
                Value::String(read_only(&entry.cap)?.to_string()),
            );
        } else {
            props.insert("ro_uri".into(), Value::String(entry.cap.to_string()));
        }
        props.insert("metadata".into(), entry.metadata.clone());
        out.insert(name.clone(), json!([node_type, Value::Object(props)]));
    }
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| GridError::Protocol(format!("encoding children: {e}")))
}

/// One child the listing could not represent, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Skipped {
    pub name: String,
    pub reason: String,
}

/// Parses a `GET …?t=json` directory listing.
///
/// Child by child, as the JSON streams past: a 100,000-entry listing is
/// ~48 MB of JSON, and parsed into one `Value` tree first it took a reader
/// to 800 MiB (`mf-bench tahoe-scale`); here only one child's tree lives at a
/// time, beside the entries made of the ones before it.
pub(crate) fn parse_listing(body: &[u8]) -> GridResult<(DirChildren, Vec<Skipped>)> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let listing = serde::Deserializer::deserialize_seq(&mut de, ListingVisitor)
        .and_then(|l| de.end().map(|()| l));
    match listing {
        Ok(Ok(listing)) => Ok(listing),
        Ok(Err(why)) => Err(bad_listing(&why)),
        Err(e) => Err(bad_listing(&e.to_string())),
    }
}

fn bad_listing(why: &str) -> GridError {
    GridError::Protocol(format!("unexpected directory listing from the node: {why}"))
}

/// A whole listing, `["dirnode", {"children": {…}, …}]`: the children, or
/// why this is not a directory's listing.
type Parsed = Result<(DirChildren, Vec<Skipped>), String>;

struct ListingVisitor;

impl<'de> serde::de::Visitor<'de> for ListingVisitor {
    type Value = Parsed;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Parsed, A::Error> {
        match seq.next_element::<String>()?.as_deref() {
            Some("dirnode") => {}
            Some(other) => {
                return Ok(Err(format!(
                    "the capability names a {other}, not a directory"
                )))
            }
            None => return Ok(Err("no node type".into())),
        }
        let children = seq.next_element_seed(PropsSeed)?.flatten();
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(children.ok_or_else(|| "no children map".to_owned()))
    }
}

/// The node's properties (an object): only `children` is read.
struct PropsSeed;

impl<'de> serde::de::DeserializeSeed<'de> for PropsSeed {
    type Value = Option<(DirChildren, Vec<Skipped>)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PropsSeed {
    type Value = Option<(DirChildren, Vec<Skipped>)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("the node's properties")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut children = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "children" && children.is_none() {
                children = map.next_value_seed(ChildrenSeed)?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(children)
    }
}

/// The children map (an object), each child converted as soon as it is
/// read.
struct ChildrenSeed;

impl<'de> serde::de::DeserializeSeed<'de> for ChildrenSeed {
    type Value = Option<(DirChildren, Vec<Skipped>)>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ChildrenSeed {
    type Value = Option<(DirChildren, Vec<Skipped>)>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a map of children")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = DirChildren::new();
        let mut skipped = Vec::new();
        while let Some(name) = map.next_key::<String>()? {
            let child: Value = map.next_value()?;
            match parse_child(&child) {
                Ok(entry) => {
                    out.insert(name, entry);
                }
                Err(reason) => skipped.push(Skipped { name, reason }),
            }
        }
        skipped.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Some((out, skipped)))
    }
}

fn parse_child(child: &Value) -> Result<DirEntry, String> {
    let kind = child.get(0).and_then(Value::as_str).unwrap_or("?");
    let props = child
        .get(1)
        .and_then(Value::as_object)
        .ok_or("entry has no properties")?;
    let uri = |key: &str| props.get(key).and_then(Value::as_str);
    let metadata = || {
        let mut metadata = match props.get("metadata") {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        };
        metadata.remove(TAHOE_KEY);
        Value::Object(metadata)
    };
    // A child with no capability at all (Tahoe lists it as `unknown`):
    // what magic-folder 24.3 writes as a deletion's content.
    if kind == "unknown" && ["ro_uri", "rw_uri"].iter().all(|k| uri(k).is_none()) {
        return Ok(DirEntry {
            cap: Capability::empty(),
            metadata: metadata(),
        });
    }
    let cap_text = match kind {
        // Prefer the write cap when the listing was made with one, so a
        // subdirectory written through set_children lists as it was set.
        "dirnode" => uri("rw_uri").or_else(|| uri("ro_uri")),
        "filenode" => {
            if props.get("mutable").and_then(Value::as_bool) == Some(true) {
                return Err(format!("mutable file ({})", uri("format").unwrap_or("?")));
            }
            uri("ro_uri")
        }
        other => return Err(format!("node of kind {other:?}")),
    }
    .ok_or("entry has no capability")?;
    let cap =
        Capability::parse(cap_text).map_err(|e| format!("unusable capability: {}", e.reason))?;
    if (kind == "dirnode") != cap.kind().is_dir() {
        return Err(format!("{kind} whose capability is a {:?}", cap.kind()));
    }
    Ok(DirEntry {
        cap,
        metadata: metadata(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHK: &str =
        "URI:CHK:anl4vlabxziju3xt3y5jvfdmny:fnrcw3y7gzmnc75holrscxoy5chi7to6yo5biymy34s6dapdblua:2:3:73";
    const RW: &str =
        "URI:DIR2:mx5erz5b2wvowdqm4iaoqzwlti:5yzehbt7hx464o7f2xhspwfrrtrbp7awtiqbsdxhr5dgdfdx3ncq";
    const RO: &str = "URI:DIR2-RO:o67ar67kaoulwzh5rzuigblgue:5yzehbt7hx464o7f2xhspwfrrtrbp7awtiqbsdxhr5dgdfdx3ncq";

    /// Shaped after a real tahoe-lafs 1.20.0 listing.
    fn listing() -> String {
        format!(
            r#"["dirnode", {{"children": {{
              "a": ["filenode", {{"mutable": false, "format": "CHK", "size": 73,
                    "metadata": {{"v": 1, "tahoe": {{"linkcrtime": 1.5, "linkmotime": 1.5}}}},
                    "ro_uri": "{CHK}", "verify_uri": "URI:CHK-Verifier:x"}}],
              "sub": ["dirnode", {{"mutable": true, "metadata": {{"tahoe": {{"linkcrtime": 1.5}}}},
                    "rw_uri": "{RW}", "ro_uri": "{RO}"}}],
              "rosub": ["dirnode", {{"mutable": true, "ro_uri": "{RO}"}}],
              "m": ["filenode", {{"mutable": true, "format": "SDMF", "rw_uri": "URI:SSK:a:b", "ro_uri": "URI:SSK-RO:a:b"}}],
              "u": ["unknown", {{"ro_uri": "ro.URI:FUTURE:abc"}}],
              "i": ["filenode", {{"mutable": false, "ro_uri": "imm.URI:FUTURE:abc"}}]
            }}, "rw_uri": "{RW}", "ro_uri": "{RO}", "mutable": true}}]"#
        )
    }

    #[test]
    fn listing_keeps_what_we_understand_and_reports_the_rest() {
        let (children, skipped) = parse_listing(listing().as_bytes()).unwrap();
        assert_eq!(children.keys().collect::<Vec<_>>(), ["a", "rosub", "sub"]);
        assert_eq!(children["a"].cap.as_str(), CHK);
        assert_eq!(children["a"].metadata, json!({"v": 1}));
        assert_eq!(children["sub"].cap.as_str(), RW);
        assert_eq!(children["sub"].metadata, json!({}));
        assert_eq!(children["rosub"].cap.as_str(), RO);
        let names: Vec<_> = skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["i", "m", "u"]);
    }

    #[test]
    fn a_child_without_capabilities_is_the_empty_entry_both_ways() {
        let mut children = DirChildren::new();
        children.insert(
            "content".into(),
            DirEntry {
                cap: Capability::empty(),
                metadata: json!({"mtime": 5}),
            },
        );
        let body: Value = serde_json::from_slice(&children_body(&children, true).unwrap()).unwrap();
        assert_eq!(
            body["content"],
            json!(["filenode", {"ro_uri": null, "metadata": {"mtime": 5}}])
        );
        assert!(matches!(
            children_body(&children, false),
            Err(GridError::WrongKind { .. })
        ));
        // How tahoe-lafs 1.20 lists it (web/directory.py: no caps at all).
        let listing = r#"["dirnode", {"children": {
            "content": ["unknown", {"metadata": {"mtime": 5, "tahoe": {"linkcrtime": 1.5}}}]
        }}]"#;
        let (listed, skipped) = parse_listing(listing.as_bytes()).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(listed["content"].cap.kind(), CapKind::Empty);
        assert_eq!(listed["content"].metadata, json!({"mtime": 5}));
    }

    #[test]
    fn non_directories_are_protocol_errors() {
        let file = format!(r#"["filenode", {{"ro_uri": "{CHK}"}}]"#);
        assert!(matches!(
            parse_listing(file.as_bytes()),
            Err(GridError::Protocol(_))
        ));
        assert!(matches!(
            parse_listing(b"<html>"),
            Err(GridError::Protocol(_))
        ));
        for broken in [
            r#"["dirnode"]"#,
            r#"["dirnode", "props"]"#,
            r#"["dirnode", {"children": []}]"#,
            r#"["dirnode", {"children": {}}] trailing"#,
            r#"["dirnode", {"children": {"a": "#,
        ] {
            assert!(
                matches!(
                    parse_listing(broken.as_bytes()),
                    Err(GridError::Protocol(_))
                ),
                "{broken}"
            );
        }
        let (empty, skipped) =
            parse_listing(br#"["dirnode", {"x": 1, "children": {}}, 3]"#).unwrap();
        assert!(empty.is_empty() && skipped.is_empty());
    }

    #[test]
    fn bodies_carry_both_caps_for_writable_dirs() {
        let mut children = DirChildren::new();
        children.insert(
            "f".into(),
            DirEntry {
                cap: Capability::parse(CHK).unwrap(),
                metadata: json!({"k": [1]}),
            },
        );
        children.insert("d".into(), DirEntry::new(Capability::parse(RW).unwrap()));
        let body: Value =
            serde_json::from_slice(&children_body(&children, false).unwrap()).unwrap();
        assert_eq!(
            body["f"],
            json!(["filenode", {"ro_uri": CHK, "metadata": {"k": [1]}}])
        );
        assert_eq!(
            body["d"],
            json!(["dirnode", {"rw_uri": RW, "ro_uri": RO, "metadata": {}}])
        );
        // Immutable directories refuse mutable children before any request.
        assert!(matches!(
            children_body(&children, true),
            Err(GridError::WrongKind {
                got: CapKind::MutableDirWrite,
                ..
            })
        ));
    }

    #[test]
    fn bad_names_and_metadata_are_refused() {
        let cap = Capability::parse(CHK).unwrap();
        for (name, md) in [
            ("", json!({})),
            ("a/b", json!({})),
            ("x", json!({"tahoe": 1})),
            ("y", json!([1])),
        ] {
            let mut children = DirChildren::new();
            children.insert(
                name.into(),
                DirEntry {
                    cap: cap.clone(),
                    metadata: md,
                },
            );
            assert!(
                matches!(children_body(&children, false), Err(GridError::Protocol(_))),
                "{name}"
            );
        }
    }
}
