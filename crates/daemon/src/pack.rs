//! Snapshot packs: several snapshots in one immutable directory.
//!
//! A snapshot in 24.3's format is an immutable directory of its own
//! (`content`, `metadata`). Small contents and all metadata travel in
//! literal capabilities, so that directory is the one object a small
//! file's version costs the grid — on Tahoe one upload (~0.2 s of the
//! node's work) and one read per version. In a folder whose collective
//! records [`Snapshots::Packed`], the snapshots uploaded together go in
//! one directory, a *pack*: member `m`'s parts are the children
//! `<m>.content` (absent for a deletion or a directory) and `<m>.metadata`,
//! whose edge carries the author's signature as a snapshot's does.
//!
//! A member is named `<pack capability>#<m>` ([`SnapshotRef`]): that string
//! is the snapshot's capability for the engine, the state database and the
//! parents of later versions. A personal directory's entry links the pack
//! itself, its edge naming the member ([`MEMBER_KEY`]). Nothing about the
//! signature changes: it covers the content and metadata capabilities and
//! the path, and the metadata names the parents, so a member is verified
//! exactly as a snapshot of its own is. A peer can at most re-link another
//! author's member, as it could re-link a snapshot.
//!
//! Uploads meet in a [`Packer`] (group commit): a member waits while packs
//! are being written and goes into the next one with everyone who came
//! meanwhile, a full one as soon as it is full, so one upload carries a
//! whole pack of a burst and a lone edit waits for nothing. Readers keep
//! the last packs they listed ([`PackCache`]): the members of one pack are
//! fetched with one listing.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use mf_core::engine::EffectError;
use mf_core::snapshot::{signature_edge_metadata, Cap};
use mf_grid::{CapKind, Capability, DirChildren, DirEntry, Grid, GridResult};
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, Notify, OnceCell, Semaphore};

/// The key of a personal-directory entry's edge metadata that names the
/// member of the pack it links.
pub const MEMBER_KEY: &str = "pack_member";

/// Most members in one pack: bounds the directory a reader lists for one
/// member (a member with an 8 KiB literal content is ~14 KB of it).
pub const MAX_MEMBERS: usize = 128;

/// Full packs written at once: while they are written, the next members
/// gather.
const PACKS_IN_FLIGHT: usize = 4;

/// Uploads that keep every pack of a bulk full: those in the packs being
/// written and a whole pack gathering. With fewer, packs are as small as
/// the uploads running allow: 256 at once made packs of ~39 members, so a
/// bulk cost the grid three times the directories of full packs, each
/// written and read at a fixed cost (on Tahoe most of a pack's time).
pub const MEMBERS_IN_FLIGHT: usize = (PACKS_IN_FLIGHT + 1) * MAX_MEMBERS;

/// Packs a reader keeps listed, the least recently used going first: the
/// fetches running at once span a few packs, and a pack of 128 files of
/// 4 KiB, their contents literal, is ~1 MB listed (~1.8 MB at the 8 KiB
/// literal bound), so eight bound the cache at 8–15 MB once no fetch waits
/// for a listing. While fetches wait, their packs stay, however many:
/// evicting a pack that fetches in flight still waited for had it listed
/// again for its other members (three of 14 packs in a 1,000-file run on
/// Tahoe, whose fetches in flight spanned more than eight).
const CACHED_PACKS: usize = 8;

/// How a folder stores its snapshots; recorded in the collective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Snapshots {
    /// One immutable directory per snapshot: magic-folder 24.3's.
    #[default]
    Single,
    /// The snapshots uploaded together share one directory (this module).
    Packed,
}

impl Snapshots {
    /// How a new folder of `layout` stores its snapshots: packed in a
    /// sharded folder, one directory each in a flat one. A flat personal
    /// directory is read and rewritten whole, and a pack member's entry
    /// carries its number as JSON metadata, several times the entry's size
    /// in memory: at 100,000 files a flat, packed directory on the embedded
    /// grid took a reader's peak to 244 MiB in the initial sync, against
    /// 146–162 MiB with single snapshots. A sharded folder reads and writes
    /// a shard (≤ ~512 entries) at a time.
    pub fn for_layout(layout: crate::personal::Layout) -> Snapshots {
        match layout {
            crate::personal::Layout::Flat => Snapshots::Single,
            crate::personal::Layout::Sharded => Snapshots::Packed,
        }
    }
}

impl fmt::Display for Snapshots {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Snapshots::Single => "single",
            Snapshots::Packed => "packed",
        })
    }
}

impl std::str::FromStr for Snapshots {
    type Err = String;
    fn from_str(s: &str) -> Result<Snapshots, String> {
        match s {
            "single" => Ok(Snapshots::Single),
            "packed" => Ok(Snapshots::Packed),
            other => Err(format!(
                "unknown snapshot storage {other:?} (single or packed)"
            )),
        }
    }
}

/// Where a snapshot is: a directory of its own, or a member of a pack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotRef {
    /// 24.3's: the snapshot's own immutable directory.
    Own(Capability),
    /// Member `member` of the pack `pack`.
    Member {
        /// The pack's immutable directory.
        pack: Capability,
        /// The member's number in it.
        member: u32,
    },
}

impl SnapshotRef {
    /// Reads a snapshot capability; an error says what is wrong with it.
    pub fn parse(cap: &Cap) -> Result<SnapshotRef, String> {
        // At the first `#`: a second one fails as a member number, so no
        // directory part holds one.
        let (dir, member) = match cap.as_str().split_once('#') {
            Some((pack, m)) => (pack, Some(parse_member(m)?)),
            None => (cap.as_str(), None),
        };
        let dir = Capability::parse(dir).map_err(|e| e.to_string())?;
        if dir.kind() != CapKind::ImmutableDir {
            return Err("not an immutable directory capability".into());
        }
        Ok(match member {
            None => SnapshotRef::Own(dir),
            Some(member) => SnapshotRef::Member { pack: dir, member },
        })
    }

    /// The snapshot a personal directory's entry links (its member, when
    /// its edge names one), or why it links none.
    pub fn of_entry(entry: &DirEntry) -> Result<SnapshotRef, String> {
        if entry.cap.kind() != CapKind::ImmutableDir {
            return Err("not a snapshot (immutable directory) capability".into());
        }
        // A `#` would give one snapshot a second spelling (see `cap`).
        if entry.cap.as_str().contains('#') {
            return Err("a snapshot capability with a '#' in it".into());
        }
        Ok(match entry.metadata.get(MEMBER_KEY) {
            None => SnapshotRef::Own(entry.cap.clone()),
            Some(serde_json::Value::String(m)) => SnapshotRef::Member {
                pack: entry.cap.clone(),
                member: parse_member(m)?,
            },
            Some(other) => return Err(format!("names the pack member {other}")),
        })
    }

    /// The personal-directory entry that links this snapshot.
    pub fn entry(&self) -> DirEntry {
        match self {
            SnapshotRef::Own(dir) => DirEntry::new(dir.clone()),
            SnapshotRef::Member { pack, member } => DirEntry {
                cap: pack.clone(),
                metadata: serde_json::json!({ MEMBER_KEY: member.to_string() }),
            },
        }
    }

    /// The snapshot's capability as the engine and the database hold it.
    pub fn cap(&self) -> Cap {
        match self {
            SnapshotRef::Own(dir) => Cap::from(dir.shared_text()),
            SnapshotRef::Member { pack, member } => {
                Cap::from(format!("{}#{member}", pack.as_str()))
            }
        }
    }

    /// The directory holding the snapshot (its own, or its pack).
    pub fn dir(&self) -> &Capability {
        match self {
            SnapshotRef::Own(dir) | SnapshotRef::Member { pack: dir, .. } => dir,
        }
    }

    /// The snapshot's `content` and `metadata` children, out of the
    /// listing of [`SnapshotRef::dir`].
    pub fn parts(&self, listed: &DirChildren) -> DirChildren {
        match self {
            SnapshotRef::Own(_) => listed
                .iter()
                .filter(|(name, _)| matches!(name.as_str(), "content" | "metadata"))
                .map(|(name, entry)| (name.clone(), entry.clone()))
                .collect(),
            SnapshotRef::Member { member, .. } => ["content", "metadata"]
                .into_iter()
                .filter_map(|part| {
                    let entry = listed.get(&format!("{member}.{part}"))?;
                    Some((part.to_owned(), entry.clone()))
                })
                .collect(),
        }
    }
}

/// A member number: decimal, no sign, no leading zero (one spelling each,
/// so one member has one capability).
fn parse_member(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a pack member number");
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) {
        return Err(bad());
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    text.parse().map_err(|_| bad())
}

/// A snapshot's parts read from the grid: `content` and `metadata`, as
/// the children of its own directory are named.
async fn read_parts<G: Grid>(grid: &G, snapshot: &SnapshotRef) -> GridResult<DirChildren> {
    Ok(snapshot.parts(&grid.list(snapshot.dir()).await?))
}

/// What one member brings to a pack.
#[derive(Debug)]
pub struct MemberParts {
    /// The content's capability; `None` for a deletion or a directory.
    pub content: Option<Capability>,
    /// The metadata document's capability.
    pub metadata: Capability,
    /// The author's signature (base64) over both and the path.
    pub signature: String,
}

type Waiting = (MemberParts, oneshot::Sender<Result<Cap, EffectError>>);

/// Gathers the members uploaded at about the same time into packs (see
/// the module's documentation). Cheap to share; every method takes `&self`.
#[derive(Default)]
pub struct Packer {
    state: Mutex<Gathering>,
    /// Told when a pack may be due: a full pack's worth is waiting, or a
    /// pack was written.
    changed: Notify,
}

#[derive(Default)]
struct Gathering {
    queue: VecDeque<Waiting>,
    /// Packs being written.
    writing: usize,
}

impl Gathering {
    /// The next pack's members, if one is due: the oldest waiting, at most
    /// [`MAX_MEMBERS`], skipping those whose uploads were abandoned. A full
    /// pack goes while others are written, up to [`PACKS_IN_FLIGHT`]; a
    /// partial one only when none is, so a lone edit waits for nothing
    /// while a burst fills its packs. (Starting a pack whenever a writer
    /// was free, a 1,000-file burst on Tahoe made 14 packs of ~72 members,
    /// each costing the nodes nearly as much to write and to list as a
    /// full one. Nor does a partial pack go when the uploads running have
    /// all reached the packer: the engine holds more than run at once, and
    /// on a slow evening that made 13.)
    fn take_batch(&mut self) -> Option<Vec<Waiting>> {
        let due = self.writing == 0
            || (self.writing < PACKS_IN_FLIGHT && self.queue.len() >= MAX_MEMBERS);
        if !due {
            return None;
        }
        let mut batch = Vec::new();
        while batch.len() < MAX_MEMBERS {
            let Some(waiting) = self.queue.pop_front() else {
                break;
            };
            if !waiting.1.is_closed() {
                batch.push(waiting);
            }
        }
        if batch.is_empty() {
            return None;
        }
        self.writing += 1;
        Some(batch)
    }
}

/// A pack being written: when it ends (written, failed, or its writer
/// cancelled), the next may be due.
struct Writing<'a>(&'a Packer);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.lock().writing -= 1;
        self.0.changed.notify_waiters();
    }
}

impl Packer {
    /// Puts one member in the next pack and returns its snapshot's
    /// capability once that pack is written. The caller that finds a pack
    /// due writes it, for itself or for those who came before.
    pub async fn add<G: Grid>(&self, grid: &G, parts: MemberParts) -> Result<Cap, EffectError> {
        let (tx, mut rx) = oneshot::channel();
        {
            let mut state = self.lock();
            state.queue.push_back((parts, tx));
            if state.queue.len() == MAX_MEMBERS {
                self.changed.notify_waiters();
            }
        }
        // Dropped unanswered: the caller writing its pack was cancelled
        // (its folder stopping). Nothing was published.
        let answered = |done: Option<Result<Cap, EffectError>>| {
            done.unwrap_or_else(|| {
                Err(EffectError::transient(
                    "the pack being written was abandoned",
                ))
            })
        };
        loop {
            match rx.try_recv() {
                Ok(done) => return done,
                Err(oneshot::error::TryRecvError::Closed) => return answered(None),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            // Listening before looking, so that no change is missed between.
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let batch = self.lock().take_batch();
            if let Some(batch) = batch {
                let _writing = Writing(self);
                write_pack(grid, batch).await;
                continue;
            }
            tokio::select! {
                done = &mut rx => return answered(done.ok()),
                () = changed => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gathering> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes one pack and answers each member with its capability, or with
/// the error (transient ones are retried by the engine as any upload).
async fn write_pack<G: Grid>(grid: &G, batch: Vec<Waiting>) {
    let mut children = DirChildren::new();
    for (member, (parts, _)) in batch.iter().enumerate() {
        if let Some(content) = &parts.content {
            children.insert(format!("{member}.content"), DirEntry::new(content.clone()));
        }
        children.insert(
            format!("{member}.metadata"),
            DirEntry {
                cap: parts.metadata.clone(),
                metadata: signature_edge_metadata(&parts.signature),
            },
        );
    }
    let written = grid
        .create_immutable_dir(children)
        .await
        .map_err(|e| crate::executor::grid_error("cannot write a pack of snapshots", e));
    for (member, (_, tx)) in batch.into_iter().enumerate() {
        let answer = match &written {
            Ok(pack) => Ok(SnapshotRef::Member {
                pack: pack.clone(),
                member: member as u32,
            }
            .cap()),
            Err(e) => Err(e.clone()),
        };
        // A member whose upload was abandoned meanwhile needs no answer.
        let _ = tx.send(answer);
    }
}

/// The packs a reader listed last, each listed once however many of its
/// members are fetched at the same time. A pack is immutable: a listing
/// never goes stale.
#[derive(Default)]
pub struct PackCache {
    packs: Mutex<Listings>,
    /// Held while a directory is listed, when given (the executor's
    /// transfers: see `ExecutorConfig::transfers`).
    slots: Option<Arc<Semaphore>>,
}

/// Each pack's listing, once listed, and the order they were last asked
/// for (the least recent goes first).
type Listings = (
    HashMap<Capability, Arc<OnceCell<Arc<DirChildren>>>>,
    VecDeque<Capability>,
);

impl PackCache {
    /// A cache whose listings each wait for one of `slots`, held only
    /// while the directory is read.
    pub fn with_slots(slots: Arc<Semaphore>) -> PackCache {
        PackCache {
            slots: Some(slots),
            ..PackCache::default()
        }
    }

    /// The parts of `snapshot`: a member's from its pack's listing (listed
    /// now unless listed recently), an own directory's from its listing.
    pub async fn parts<G: Grid>(
        &self,
        grid: &G,
        snapshot: &SnapshotRef,
    ) -> GridResult<DirChildren> {
        let SnapshotRef::Member { pack, .. } = snapshot else {
            let _slot = self.slot().await;
            return read_parts(grid, snapshot).await;
        };
        let cell = {
            let mut guard = self.packs.lock().unwrap_or_else(|e| e.into_inner());
            let (cells, order) = &mut *guard;
            if let Some(at) = order.iter().position(|p| p == pack) {
                order.remove(at);
            }
            order.push_back(pack.clone());
            let cell = cells.entry(pack.clone()).or_default().clone();
            // Past the bound the least recent listings go, but none that a
            // fetch still waits for: its pack's other members, fetched at
            // the same time, would list it again.
            while order.len() > CACHED_PACKS {
                let Some(at) = order
                    .iter()
                    .position(|p| cells.get(p).is_none_or(|c| Arc::strong_count(c) == 1))
                else {
                    break;
                };
                if let Some(idle) = order.remove(at) {
                    cells.remove(&idle);
                }
            }
            cell
        };
        // A failed listing leaves the cell empty: the next fetch tries again.
        let listed = cell
            .get_or_try_init(|| async {
                let _slot = self.slot().await;
                tracing::debug!(?pack, "listing a pack");
                grid.list(pack).await.map(Arc::new)
            })
            .await?;
        Ok(snapshot.parts(listed))
    }

    /// Forgets every listing, for when the folder runs out of work: an
    /// idle reader would otherwise keep the last packs it read, up to
    /// [`CACHED_PACKS`] of them (8–15 MB), for fetches that may never come.
    pub fn forget(&self) {
        *self.packs.lock().unwrap_or_else(|e| e.into_inner()) = Listings::default();
    }

    async fn slot(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        match &self.slots {
            Some(slots) => Some(
                slots
                    .acquire()
                    .await
                    .expect("the transfer semaphore is never closed"),
            ),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_cap() -> Capability {
        Capability::parse(&format!(
            "URI:DIR2-CHK:{}:{}:1:1:10",
            "a".repeat(26),
            "b".repeat(52)
        ))
        .unwrap()
    }

    #[test]
    fn a_member_has_one_spelling_and_round_trips_through_its_entry() {
        let pack = dir_cap();
        let member = SnapshotRef::Member {
            pack: pack.clone(),
            member: 17,
        };
        assert_eq!(SnapshotRef::parse(&member.cap()), Ok(member.clone()));
        assert_eq!(SnapshotRef::of_entry(&member.entry()), Ok(member.clone()));
        let own = SnapshotRef::Own(pack.clone());
        assert_eq!(SnapshotRef::parse(&own.cap()), Ok(own.clone()));
        assert_eq!(SnapshotRef::of_entry(&own.entry()), Ok(own));
        for bad in ["#017", "#", "#-1", "#+1", "#1a", "#99999999999"] {
            let cap = Cap::from(format!("{}{bad}", pack.as_str()));
            assert!(SnapshotRef::parse(&cap).is_err(), "{bad}");
        }
        let mut entry = member.entry();
        entry.metadata = serde_json::json!({ MEMBER_KEY: 17 });
        assert!(SnapshotRef::of_entry(&entry).is_err());
    }

    #[test]
    fn a_member_sees_only_its_own_parts() {
        let pack = dir_cap();
        let lit = |s: &str| DirEntry::new(Capability::parse(&format!("URI:LIT:{s}")).unwrap());
        let listed: DirChildren = [
            ("0.content", lit("mfrgg")),
            ("0.metadata", lit("mfrgi")),
            ("1.metadata", lit("mfrgk")),
            ("10.metadata", lit("mfrgm")),
        ]
        .into_iter()
        .map(|(n, e)| (n.to_owned(), e))
        .collect();
        let one = SnapshotRef::Member {
            pack: pack.clone(),
            member: 1,
        };
        let parts = one.parts(&listed);
        assert_eq!(parts.keys().collect::<Vec<_>>(), ["metadata"]);
        assert_eq!(parts["metadata"], listed["1.metadata"]);
        let zero = SnapshotRef::Member { pack, member: 0 };
        assert_eq!(zero.parts(&listed)["content"], listed["0.content"]);
    }

    /// The embedded grid, whose directory writes wait until released,
    /// counting them and the listings.
    struct Held {
        inner: mf_grid::embedded::EmbeddedGrid,
        release: tokio::sync::Semaphore,
        entered: std::sync::atomic::AtomicUsize,
        dirs: std::sync::atomic::AtomicUsize,
        lists: std::sync::atomic::AtomicUsize,
    }

    impl Grid for Held {
        async fn upload(&self, source: mf_grid::UploadSource) -> GridResult<Capability> {
            self.inner.upload(source).await
        }
        async fn download(&self, cap: &Capability) -> GridResult<mf_grid::Download> {
            self.inner.download(cap).await
        }
        async fn create_immutable_dir(&self, children: DirChildren) -> GridResult<Capability> {
            self.entered
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.release.acquire().await.unwrap().forget();
            self.dirs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.create_immutable_dir(children).await
        }
        async fn create_mutable_dir(&self) -> GridResult<Capability> {
            self.inner.create_mutable_dir().await
        }
        async fn list_changed(
            &self,
            dir: &Capability,
            known: Option<&mf_grid::Revision>,
        ) -> GridResult<Option<mf_grid::Listed>> {
            self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.list_changed(dir, known).await
        }
        async fn set_children(
            &self,
            dir: &Capability,
            children: DirChildren,
            replace: mf_grid::Replace,
        ) -> GridResult<()> {
            self.inner.set_children(dir, children, replace).await
        }
        async fn unlink(&self, dir: &Capability, name: &str) -> GridResult<()> {
            self.inner.unlink(dir, name).await
        }
    }

    fn member(i: usize) -> MemberParts {
        let lit = |text: String| {
            Capability::parse(&format!(
                "URI:LIT:{}",
                data_encoding::BASE32_NOPAD
                    .encode(text.as_bytes())
                    .to_lowercase()
            ))
            .unwrap()
        };
        MemberParts {
            content: i.is_multiple_of(2).then(|| lit(format!("content {i}"))),
            metadata: lit(format!("metadata {i}")),
            signature: format!("signature {i}"),
        }
    }

    // One thread: a spawned member pushes itself and looks for a due pack
    // in one turn, so what the queue holds when the test looks is settled.
    #[tokio::test]
    async fn members_that_come_while_packs_are_written_share_the_next_one() {
        // A bound, not a speed: a packer that loses a member never answers.
        let bound = std::time::Duration::from_secs(300);
        tokio::time::timeout(bound, share_the_next_pack())
            .await
            .expect("the packer left a member unanswered");
    }

    async fn share_the_next_pack() {
        use std::sync::atomic::Ordering::SeqCst;
        let store = tempfile::tempdir().unwrap();
        let grid = Arc::new(Held {
            inner: mf_grid::embedded::EmbeddedGrid::create(store.path(), [1; 32]).unwrap(),
            release: Semaphore::new(0),
            entered: Default::default(),
            dirs: Default::default(),
            lists: Default::default(),
        });
        let packer = Arc::new(Packer::default());
        let add = |i: usize| {
            let (grid, packer) = (grid.clone(), packer.clone());
            tokio::spawn(async move { packer.add(&*grid, member(i)).await })
        };
        let queued = |n: usize| {
            let packer = packer.clone();
            async move {
                while packer.lock().queue.len() != n {
                    tokio::task::yield_now().await;
                }
            }
        };
        // A lone member's pack is written at once, held by the grid.
        let mut tasks = vec![add(0)];
        while grid.entered.load(SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        // Those who come meanwhile wait: no pack of a few starts beside it.
        tasks.extend((1..10).map(add));
        queued(9).await;
        assert_eq!(grid.entered.load(SeqCst), 1);
        // A full pack's worth goes at once, beside the one being written.
        tasks.extend((10..=MAX_MEMBERS).map(add));
        queued(0).await;
        assert_eq!(grid.entered.load(SeqCst), 2);
        // The rest of a burst waits until no pack is written.
        tasks.extend((MAX_MEMBERS + 1..MAX_MEMBERS + 6).map(add));
        queued(5).await;
        assert_eq!(grid.entered.load(SeqCst), 2);
        grid.release.add_permits(3);
        let mut caps = Vec::new();
        for task in tasks {
            caps.push(SnapshotRef::parse(&task.await.unwrap().unwrap()).unwrap());
        }
        assert_eq!(grid.dirs.load(SeqCst), 3);
        let pack_of = |r: &SnapshotRef| r.dir().clone();
        // Each group shares a pack of its own, a member each (numbered in
        // the order they came, which is the scheduler's).
        let groups = [0..1, 1..MAX_MEMBERS + 1, MAX_MEMBERS + 1..MAX_MEMBERS + 6];
        let packs: std::collections::BTreeSet<_> = groups
            .iter()
            .map(|group| {
                let shared = pack_of(&caps[group.start]);
                let mut members: Vec<u32> = caps[group.clone()]
                    .iter()
                    .map(|r| match r {
                        SnapshotRef::Member { pack, member } if *pack == shared => *member,
                        other => panic!("not in the shared pack: {other:?}"),
                    })
                    .collect();
                members.sort_unstable();
                assert_eq!(members, (0..group.len() as u32).collect::<Vec<u32>>());
                shared
            })
            .collect();
        assert_eq!(packs.len(), 3);
        let shared = &caps[groups[1].clone()];

        // A reader lists the shared pack once for all its members, and
        // each sees its own parts.
        let cache = PackCache::with_slots(Arc::new(Semaphore::new(4)));
        let parts =
            futures_util::future::join_all(shared.iter().map(|r| cache.parts(&*grid, r))).await;
        assert_eq!(grid.lists.load(SeqCst), 1);
        for (got, n) in parts.into_iter().zip(groups[1].clone()) {
            let got = got.unwrap();
            let want = member(n);
            assert_eq!(got["metadata"].cap, want.metadata);
            assert_eq!(
                got["metadata"].metadata,
                signature_edge_metadata(&want.signature)
            );
            assert_eq!(got.get("content").map(|c| c.cap.clone()), want.content);
        }
        // Forgotten when the folder runs out of work: read again whole.
        cache.forget();
        let again = cache.parts(&*grid, &shared[0]).await.unwrap();
        assert_eq!(grid.lists.load(SeqCst), 2);
        assert_eq!(again["metadata"].cap, member(1).metadata);
    }

    /// Members of more packs than the cache keeps, fetched at the same
    /// time: each pack is listed once, none evicted while fetches wait.
    #[tokio::test]
    async fn packs_still_awaited_are_listed_once() {
        let store = tempfile::tempdir().unwrap();
        let grid = Held {
            inner: mf_grid::embedded::EmbeddedGrid::create(store.path(), [1; 32]).unwrap(),
            release: Semaphore::new(0),
            entered: Default::default(),
            dirs: Default::default(),
            lists: Default::default(),
        };
        let packs = CACHED_PACKS + 2;
        let mut refs = Vec::new();
        for member in 0..2u32 {
            for p in 0..packs {
                let children: DirChildren = (0..2)
                    .map(|m| {
                        let parts = self::member(p * 2 + m);
                        (format!("{m}.metadata"), DirEntry::new(parts.metadata))
                    })
                    .collect();
                let pack = grid.inner.create_immutable_dir(children).await.unwrap();
                refs.push(SnapshotRef::Member { pack, member });
            }
        }
        let slots = Arc::new(Semaphore::new(0));
        let cache = PackCache::with_slots(slots.clone());
        let mut all = std::pin::pin!(futures_util::future::join_all(
            refs.iter().map(|r| cache.parts(&grid, r))
        ));
        // One poll: every fetch has asked for its pack and waits for a turn.
        assert!(futures_util::FutureExt::now_or_never(all.as_mut()).is_none());
        slots.add_permits(2);
        for got in all.await {
            got.unwrap();
        }
        assert_eq!(grid.lists.load(std::sync::atomic::Ordering::SeqCst), packs);
        // Idle again, the cache keeps its bound.
        cache.parts(&grid, &refs[0]).await.unwrap();
        assert_eq!(cache.packs.lock().unwrap().1.len(), CACHED_PACKS);
    }

    #[test]
    fn snapshot_storage_names_round_trip() {
        for s in [Snapshots::Single, Snapshots::Packed] {
            assert_eq!(s.to_string().parse(), Ok(s));
        }
        assert!("zip".parse::<Snapshots>().is_err());
    }
}
