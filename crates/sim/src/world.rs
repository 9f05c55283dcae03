//! The simulated world: in-memory filesystems, an in-memory grid, and the
//! effect contract of `mf_core::engine::Action` carried out against them.
//!
//! Effects here follow the same contract the daemon's executor implements
//! (documented on each `Action` variant): the engine cannot tell the two apart.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use mf_core::engine::{
    Action, EffectError, Event, RemoteListing, ScanReport, UploadOutcome, WriteOutcome,
};
use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, ShardId, SnapshotInfo};
use mf_core::store::{LocalState, PathState};

/// A node of a simulated filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Node {
    /// A regular file.
    File {
        /// Its bytes.
        content: Vec<u8>,
        /// Modification time, ns.
        mtime_ns: i64,
        /// Change time, ns: unique per change, like a real ctime.
        ctime_ns: i64,
    },
    /// A directory.
    Dir,
}

/// One participant's folder.
#[derive(Clone, Debug, Default)]
pub struct MemFs {
    /// Every entry by path (parents are explicit `Dir` nodes).
    pub nodes: BTreeMap<RelPath, Node>,
    /// What the versions area holds: replaced or deleted files.
    pub versions: Vec<(RelPath, Vec<u8>)>,
}

impl MemFs {
    /// The state of a path.
    pub fn state(&self, p: &RelPath) -> LocalState {
        match self.nodes.get(p) {
            None => LocalState::Absent,
            Some(Node::Dir) => LocalState::Dir,
            Some(Node::File {
                content,
                mtime_ns,
                ctime_ns,
            }) => LocalState::File(PathState {
                size: content.len() as u64,
                mtime_ns: *mtime_ns,
                ctime_ns: *ctime_ns,
            }),
        }
    }

    /// True if `p`'s parent chain exists as directories (creating none).
    fn parents_are_dirs(&self, p: &RelPath) -> bool {
        let mut cur = p.parent();
        while let Some(d) = cur {
            match self.nodes.get(&d) {
                Some(Node::Dir) => {}
                _ => return false,
            }
            cur = d.parent();
        }
        true
    }

    /// Creates missing parent directories; false if a parent is a file.
    /// Returns the directories it created.
    pub fn make_parents(&mut self, p: &RelPath) -> Option<Vec<RelPath>> {
        let mut chain = Vec::new();
        let mut cur = p.parent();
        while let Some(d) = cur {
            chain.push(d.clone());
            cur = d.parent();
        }
        let mut made = Vec::new();
        for d in chain.into_iter().rev() {
            match self.nodes.get(&d) {
                Some(Node::Dir) => {}
                Some(Node::File { .. }) => return None,
                None => {
                    self.nodes.insert(d.clone(), Node::Dir);
                    made.push(d);
                }
            }
        }
        Some(made)
    }

    /// True if a directory has entries.
    pub fn has_children(&self, p: &RelPath) -> bool {
        self.nodes.keys().any(|k| k != p && k.starts_with(p))
    }

    /// Moves a file into the versions area.
    fn retire(&mut self, p: &RelPath) {
        if let Some(Node::File { content, .. }) = self.nodes.remove(p) {
            self.versions.push((p.clone(), content));
        }
    }
}

/// The shared in-memory grid.
#[derive(Clone, Debug, Default)]
pub struct MemGrid {
    /// Immutable file contents by capability (a literal's are in its
    /// capability instead).
    pub files: HashMap<Cap, Vec<u8>>,
    /// Snapshots by capability.
    pub snapshots: HashMap<Cap, SnapshotInfo>,
    /// Each participant's personal directory: entry name → snapshot.
    pub personal: BTreeMap<String, BTreeMap<String, Cap>>,
    /// The author each honest participant declares in its directory, from
    /// its first publish on (as the daemon does).
    pub declared: BTreeMap<String, mf_core::engine::DeclaredAuthor>,
    /// Personal directories are sharded (see [`crate::SimConfig::sharded`]).
    pub sharded: bool,
    /// Participants whose directories moved to shards (see
    /// [`crate::SimConfig::converts`]).
    pub moved: BTreeSet<String>,
    /// Per (reader, participant, shard), a digest of the shard as the reader
    /// last listed it: a reader lists only the shards that changed since,
    /// as the daemon's executor does. Forgotten when the reader crashes.
    pub listed: BTreeMap<(String, String, ShardId), u64>,
    /// Of each sharded directory, its entries as filed in its hashed
    /// shards, which may be older than `personal`'s: an entry published
    /// since is in its recent shard.
    pub filed: BTreeMap<String, BTreeMap<String, Cap>>,
}

/// How the simulated grid's literal capabilities begin (the embedded
/// grid's prefix, with the bytes in hex).
const LITERAL: &str = "URI:MF-LIT:";

fn digest(h: impl Hash) -> u64 {
    let mut s = DefaultHasher::new();
    h.hash(&mut s);
    s.finish()
}

/// A one-digit shard of more entries than this is listed as its two-digit
/// shards, as a split leaves it. The daemon splits at
/// `mf_daemon::personal::SPLIT_AT`; here, at the second entry, so that the
/// simulated folders' few paths split as they appear (`a`, `d/e` and `h/i`
/// share the one-digit shard `c`; most others are alone in theirs).
const SPLIT_AT: usize = 1;

/// A publish that would leave more entries than this in the recent shard
/// files them all in their hashed shards (the daemon's
/// `mf_daemon::personal::RECENT_AT_MOST`, small here so that it happens).
const RECENT_AT_MOST: usize = 2;

/// A sharded directory's parts: each shard with its entries. The recent
/// shard holds the entries of `dir` that differ from those `filed` in
/// their hashed shards; each hashed shard, its one-digit shard's entries,
/// or its two-digit one's where the one-digit shard has grown past
/// [`SPLIT_AT`] (a directory only grows: a deletion is an entry too).
pub fn shard_parts(
    dir: &BTreeMap<String, Cap>,
    filed: Option<&BTreeMap<String, Cap>>,
) -> BTreeMap<ShardId, BTreeMap<String, Cap>> {
    let empty = BTreeMap::new();
    let filed = filed.unwrap_or(&empty);
    let mut in_one: BTreeMap<ShardId, usize> = BTreeMap::new();
    for e in filed.keys() {
        *in_one.entry(ShardId::of(e, 1)).or_default() += 1;
    }
    let mut parts: BTreeMap<ShardId, BTreeMap<String, Cap>> = BTreeMap::new();
    for (e, cap) in filed {
        let one = ShardId::of(e, 1);
        let id = if in_one[&one] > SPLIT_AT {
            ShardId::of(e, 2)
        } else {
            one
        };
        parts.entry(id).or_default().insert(e.clone(), cap.clone());
    }
    for (e, cap) in dir {
        if filed.get(e) != Some(cap) {
            parts
                .entry(ShardId::RECENT)
                .or_default()
                .insert(e.clone(), cap.clone());
        }
    }
    parts
}

impl MemGrid {
    /// Convergent upload: the same bytes give the same capability. Half
    /// the contents (by their digest) travel in a literal capability, as
    /// small files do on a real grid, so that the engine meets both kinds.
    pub fn put_file(&mut self, bytes: Vec<u8>) -> Cap {
        let d = digest(&bytes);
        if d.is_multiple_of(2) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            return Cap::from(format!("{LITERAL}{hex}"));
        }
        let cap = Cap::from(format!("URI:MF-CHK:{d:016x}:{}", bytes.len()));
        self.files.insert(cap.clone(), bytes);
        cap
    }

    /// Every content uploaded: the stored files and the literals that
    /// snapshots carry.
    pub fn contents(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        let literals = self.snapshots.values().filter_map(|s| match &s.content {
            Content::File { cap, .. } if cap.is_literal() => self.file(cap),
            _ => None,
        });
        self.files.values().cloned().chain(literals)
    }

    /// The bytes of a content capability, if the grid has them.
    ///
    /// # Panics
    ///
    /// On a literal kept by reference (`Content::kept`): the engine must
    /// read such a snapshot again before it asks for a write of it.
    pub fn file(&self, cap: &Cap) -> Option<Vec<u8>> {
        assert!(
            !cap.is_literal_ref(),
            "a write was asked for with a literal's reference, not the literal"
        );
        match cap.as_str().strip_prefix(LITERAL) {
            Some(hex) => (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                .collect(),
            None => self.files.get(cap).cloned(),
        }
    }

    /// Stores a snapshot; identical snapshots get identical capabilities,
    /// as convergent immutable directories do on a real grid.
    pub fn put_snapshot(
        &mut self,
        relpath: RelPath,
        (author, signer): (&str, &str),
        parents: Vec<Cap>,
        content: Content,
        mtime_s: i64,
        generation: u64,
    ) -> SnapshotInfo {
        let key = (
            relpath.as_str(),
            author,
            signer,
            &parents,
            format!("{content:?}"),
            mtime_s,
            generation,
        );
        let cap = Cap::from(format!("URI:MF-DIR-CHK:{:016x}", digest(key)));
        let info = SnapshotInfo {
            cap: cap.clone(),
            relpath,
            author: author.to_owned(),
            author_key: format!("key-{signer}"),
            parents,
            content,
            mtime_s,
            generation,
        };
        self.snapshots.insert(cap, info.clone());
        info
    }
}

/// Knobs of the effect implementation.
#[derive(Clone, Debug, Default)]
pub struct EffectFaults {
    /// The grid refuses every operation (transiently).
    pub grid_away: bool,
    /// The grid answers "no such object" to snapshot reads, as a Tahoe node
    /// does while its storage servers reconnect after a restart.
    pub shares_hidden: bool,
    /// Listing this shard of a sharded directory fails (transiently).
    pub failing_shard: Option<ShardId>,
    /// Listing this participant's directory fails whole (transiently): its
    /// declared author is not read either.
    pub failing_dir: Option<String>,
    /// A planted bug for the detection test: writes skip the last-moment
    /// check of the target's state, as a careless driver would.
    pub skip_last_moment_check: bool,
}

/// Carries out one action for participant `me` at virtual time `now_ms`.
/// Returns the event, and the paths whose local state the effect changed
/// (for the simulated watcher).
pub fn execute(
    me: &str,
    action: &Action,
    fs: &mut MemFs,
    grid: &mut MemGrid,
    faults: EffectFaults,
    now_ms: u64,
    clock: &mut i64,
) -> (Event, Vec<RelPath>) {
    let away = || EffectError::transient("grid unavailable (simulated)");
    match action {
        Action::Scan => {
            let entries = fs.nodes.keys().map(|p| (p.clone(), fs.state(p))).collect();
            (
                Event::Scanned(Ok(ScanReport {
                    entries,
                    skipped: vec![],
                    problems: vec![],
                })),
                vec![],
            )
        }
        Action::Poll => {
            if faults.grid_away {
                return (
                    Event::Polled(Err("grid unavailable (simulated)".into())),
                    vec![],
                );
            }
            let mut listings = Vec::new();
            for (name, entries) in grid.personal.iter().filter(|(name, _)| name.as_str() != me) {
                if faults.failing_dir.as_ref() == Some(name) {
                    listings.push(RemoteListing {
                        participant: name.clone(),
                        shard: None,
                        entries: Err(away()),
                        rejected: vec![],
                        author: None,
                    });
                    continue;
                }
                let decode = |part: &BTreeMap<String, Cap>| {
                    let mut listing = mf_core::snapshot::Listing::new();
                    let mut rejected = vec![];
                    for (entry, cap) in part {
                        match mf_core::snapshot::parse_entry_name(entry) {
                            Some(Ok((path, _))) => {
                                listing.insert(entry.clone(), (path, cap.clone()));
                            }
                            Some(Err(e)) => rejected.push(e.to_string()),
                            None => {}
                        }
                    }
                    (listing, rejected)
                };
                let author = grid.declared.get(name).cloned();
                if !(grid.sharded || grid.moved.contains(name)) {
                    let (listing, rejected) = decode(entries);
                    listings.push(RemoteListing {
                        participant: name.clone(),
                        shard: None,
                        entries: Ok(listing),
                        rejected,
                        author,
                    });
                    continue;
                }
                // The directory itself declares the author; its shards
                // hold the entries.
                listings.push(RemoteListing {
                    participant: name.clone(),
                    shard: None,
                    entries: Ok(Default::default()),
                    rejected: vec![],
                    author,
                });
                // The shards that hold entries now, and those this reader
                // listed before (a shard may have been emptied).
                // The shards that hold entries now, and those this reader
                // listed before (a shard may have been emptied or split).
                let mut shards = shard_parts(entries, grid.filed.get(name));
                let before: Vec<ShardId> = grid
                    .listed
                    .keys()
                    .filter(|(reader, of, _)| reader == me && of == name)
                    .map(|(_, _, n)| *n)
                    .collect();
                for n in before {
                    shards.entry(n).or_default();
                }
                for (n, now) in shards {
                    let key = (me.to_owned(), name.clone(), n);
                    let d = digest(&now);
                    if grid.listed.get(&key) == Some(&d) {
                        continue;
                    }
                    if faults.failing_shard == Some(n) {
                        listings.push(RemoteListing {
                            participant: name.clone(),
                            shard: Some(n),
                            entries: Err(away()),
                            rejected: vec![],
                            author: None,
                        });
                        continue;
                    }
                    let (listing, rejected) = decode(&now);
                    grid.listed.insert(key, d);
                    listings.push(RemoteListing {
                        participant: name.clone(),
                        shard: Some(n),
                        entries: Ok(listing),
                        rejected,
                        author: None,
                    });
                }
            }
            (Event::Polled(Ok(listings)), vec![])
        }
        Action::Fetch { cap, listed_as } => {
            let result = if faults.grid_away {
                Err(away())
            } else if faults.shares_hidden {
                Err(EffectError::missing(
                    "no such object: not enough shares (simulated)",
                ))
            } else {
                match grid.snapshots.get(cap) {
                    Some(info) if info.relpath == *listed_as => Ok(info.clone()),
                    Some(_) => Err(EffectError::permanent("snapshot for another path")),
                    None => Err(EffectError::missing("no such snapshot")),
                }
            };
            (
                Event::Fetched {
                    cap: cap.clone(),
                    result,
                },
                vec![],
            )
        }
        Action::Upload {
            op,
            path,
            local,
            parents,
            generation,
        } => {
            let result = if faults.grid_away {
                UploadOutcome::Failed(away())
            } else if fs.state(path) != *local {
                UploadOutcome::Changed(fs.state(path))
            } else {
                let (content, mtime_s) = match fs.nodes.get(path) {
                    Some(Node::File {
                        content, mtime_ns, ..
                    }) => {
                        let size = content.len() as u64;
                        (
                            Content::File {
                                cap: grid.put_file(content.clone()),
                                size,
                                executable: false,
                            },
                            mtime_ns.div_euclid(1_000_000_000),
                        )
                    }
                    Some(Node::Dir) => (Content::Dir, (now_ms / 1000) as i64),
                    None => (Content::Deleted, (now_ms / 1000) as i64),
                };
                UploadOutcome::Done(grid.put_snapshot(
                    path.clone(),
                    (me, me),
                    parents.clone(),
                    content,
                    mtime_s,
                    *generation,
                ))
            };
            (Event::Uploaded { op: *op, result }, vec![])
        }
        Action::Publish { op, entries } => {
            let result = if faults.grid_away {
                Err(away())
            } else {
                let dir = grid.personal.entry(me.to_owned()).or_default();
                for e in entries {
                    dir.insert(e.name.clone(), e.snapshot.clone());
                }
                if grid.sharded || grid.moved.contains(me) {
                    let filed = grid.filed.entry(me.to_owned()).or_default();
                    let recent = dir.iter().filter(|(e, c)| filed.get(*e) != Some(c));
                    if recent.count() > RECENT_AT_MOST {
                        *filed = dir.clone();
                    }
                }
                grid.declared.entry(me.to_owned()).or_insert_with(|| {
                    mf_core::engine::DeclaredAuthor {
                        name: me.to_owned(),
                        verify_key: format!("key-{me}"),
                    }
                });
                Ok(())
            };
            // The simulator sets how long it took.
            let took = 0;
            (
                Event::Published {
                    op: *op,
                    result,
                    took,
                },
                vec![],
            )
        }
        Action::Write {
            op,
            target,
            content,
            mtime_s,
            expect,
        } => {
            let (result, touched) =
                write(fs, grid, faults, target, content, *mtime_s, *expect, clock);
            (Event::Written { op: *op, result }, touched)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn write(
    fs: &mut MemFs,
    grid: &MemGrid,
    faults: EffectFaults,
    target: &RelPath,
    content: &Content,
    mtime_s: i64,
    expect: LocalState,
    clock: &mut i64,
) -> (WriteOutcome, Vec<RelPath>) {
    let actual = fs.state(target);
    let unchanged = actual == expect || faults.skip_last_moment_check;
    match content {
        Content::File { cap, .. } => {
            if faults.grid_away {
                return (
                    WriteOutcome::Failed(EffectError::transient("grid unavailable (simulated)")),
                    vec![],
                );
            }
            let Some(bytes) = grid.file(cap) else {
                return (
                    WriteOutcome::Failed(EffectError::permanent("content missing from grid")),
                    vec![],
                );
            };
            if !unchanged {
                return (WriteOutcome::Changed(actual), vec![]);
            }
            if matches!(actual, LocalState::Dir) {
                return (
                    WriteOutcome::Failed(EffectError::permanent("a directory is in the way")),
                    vec![],
                );
            }
            let Some(mut touched) = fs.make_parents(target) else {
                return (
                    WriteOutcome::Failed(EffectError::permanent(
                        "a file is in the way of a parent directory",
                    )),
                    vec![],
                );
            };
            fs.retire(target);
            *clock += 1;
            fs.nodes.insert(
                target.clone(),
                Node::File {
                    content: bytes,
                    mtime_ns: mtime_s * 1_000_000_000,
                    ctime_ns: *clock,
                },
            );
            touched.push(target.clone());
            (WriteOutcome::Done(fs.state(target)), touched)
        }
        Content::Dir => {
            if actual == LocalState::Dir {
                return (WriteOutcome::Done(LocalState::Dir), vec![]);
            }
            if !unchanged {
                return (WriteOutcome::Changed(actual), vec![]);
            }
            let Some(mut touched) = fs.make_parents(target) else {
                return (
                    WriteOutcome::Failed(EffectError::permanent(
                        "a file is in the way of a parent directory",
                    )),
                    vec![],
                );
            };
            fs.retire(target);
            fs.nodes.insert(target.clone(), Node::Dir);
            touched.push(target.clone());
            (WriteOutcome::Done(LocalState::Dir), touched)
        }
        Content::Deleted => {
            if !unchanged {
                return (WriteOutcome::Changed(actual), vec![]);
            }
            match actual {
                LocalState::Absent => (WriteOutcome::Done(LocalState::Absent), vec![]),
                LocalState::Dir if fs.has_children(target) => (WriteOutcome::NotEmpty, vec![]),
                LocalState::Dir => {
                    fs.nodes.remove(target);
                    (WriteOutcome::Done(LocalState::Absent), vec![target.clone()])
                }
                LocalState::File(_) => {
                    fs.retire(target);
                    (WriteOutcome::Done(LocalState::Absent), vec![target.clone()])
                }
            }
        }
    }
}

/// True if the parents of `p` exist as directories.
pub fn parents_ok(fs: &MemFs, p: &RelPath) -> bool {
    fs.parents_are_dirs(p)
}
