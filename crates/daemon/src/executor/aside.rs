//! Entries kept *aside*, under a personal directory's `@metadata`: what a
//! magic-folder 24.3 peer must not read, and the author its owner declares.

use super::*;

/// A personal directory as readers take it (see [`with_aside`]).
pub struct PersonalDir {
    /// The entries: those in the directory itself, overridden by those
    /// kept aside.
    pub children: DirChildren,
    /// The aside directory, if there is one.
    pub aside: Option<Capability>,
    /// The author its owner declares.
    pub author: Option<DeclaredAuthor>,
}

/// A personal directory's entries as readers take them: those in the
/// directory itself, overridden by those kept aside under its `@metadata`
/// (see [`Executor::publish`]), and the author its owner declares there.
/// A `@metadata` that is not an immutable directory (24.3's is a small
/// JSON file) holds nothing aside.
pub async fn with_aside<G: Grid>(
    grid: &G,
    mut children: DirChildren,
) -> Result<PersonalDir, GridError> {
    let meta = children
        .remove(METADATA_ENTRY)
        .filter(|m| m.cap.kind() == CapKind::ImmutableDir);
    let Some(meta) = meta else {
        return Ok(PersonalDir {
            children,
            aside: None,
            author: None,
        });
    };
    let mut aside = grid.list(&meta.cap).await?;
    let author = aside.remove(AUTHOR_ENTRY).and_then(|e| declared_author(&e));
    children.extend(aside);
    Ok(PersonalDir {
        children,
        aside: Some(meta.cap),
        author,
    })
}

/// The entry, aside, in which a participant declares its author name and
/// key: a child that names no object, whose edge metadata is
/// `{"name": …, "verify_key": …}` (`@` + a letter: never a mangled path).
pub(super) const AUTHOR_ENTRY: &str = "@author";

/// The author entry's metadata field that makes each written record unique
/// (see [`Executor::publish`]).
pub(super) const NONCE_KEY: &str = "nonce";

pub(super) fn author_entry(author: &Author) -> DirEntry {
    DirEntry {
        cap: Capability::empty(),
        metadata: serde_json::json!({
            "name": author.name,
            "verify_key": author.verify_key(),
        }),
    }
}

fn declared_author(entry: &DirEntry) -> Option<DeclaredAuthor> {
    let field = |k: &str| entry.metadata.get(k).and_then(serde_json::Value::as_str);
    Some(DeclaredAuthor {
        name: field("name")?.to_owned(),
        verify_key: field("verify_key")?.to_owned(),
    })
}

/// True for a conflict entry's name (`<mangled path>@c<label>`).
pub(super) fn is_conflict_entry(name: &str) -> bool {
    matches!(parse_entry_name(name), Some(Ok((_, Some(_)))))
}
