//! Crash-safe local state for Magic Folder: the engine's
//! [`Store`] on SQLite.
//!
//! The sync engine (`mf-core`) is sans-IO. It keeps a mirror of its durable
//! state in memory and writes every decision through the `Store` trait as one
//! batch of [`Change`]s. This crate is the store the daemon uses:
//!
//! * [`SqliteStore`] is the read-write store of one folder. It implements
//!   `Store` with exactly the semantics of the reference
//!   [`MemStore`](mf_core::store::MemStore) (a property test checks that),
//!   applying each batch in one SQLite transaction, all or nothing. It also
//!   keeps a short log of recent [`Event`]s and folder-level settings for the
//!   daemon.
//! * [`StateReader`] opens the same file read-only, so the CLI can inspect a
//!   folder while its daemon runs (WAL mode lets readers and one writer work
//!   concurrently, each reader seeing a consistent committed state).
//!
//! Commits are atomic and survive a crash of the process as soon as they
//! return; by default the last ones may roll back on power loss, which the
//! engine's recovery absorbs (see [`Durability`] for the reasoning and the
//! stricter choice).
//!
//! The schema is versioned and migrated at open (see the `schema` module).
//! The file holds capabilities, which are secrets: it is created (and, if
//! found looser, reset to) owner-only permissions `0600`; SQLite gives its
//! `-wal` and `-shm` files the same mode as the database. Error messages
//! never include a capability, only paths and the failed operation.
//!
//! Every SQLite failure becomes a [`StoreError`] naming the operation that
//! failed (and, for the usual causes, what to do); nothing here panics on a
//! damaged or locked database.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mf_core::engine::DeclaredAuthor;
use mf_core::relpath::RelPath;
use mf_core::snapshot::{Cap, Content, SnapshotInfo};
use mf_core::store::{Change, Conflict, Current, Loaded, LocalState, PathState, Store};
use rusqlite::{CachedStatement, Connection, OpenFlags, OptionalExtension, TransactionBehavior};

pub use mf_core::store::StoreError;

mod schema;

/// The schema version this program writes (and the newest it can open).
pub const SCHEMA_VERSION: u32 = schema::MIGRATIONS.len() as u32;

/// How long an operation waits for a lock held by another connection before
/// failing with a "database is locked" error.
pub const DEFAULT_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// How many recent events [`SqliteStore::record_event`] keeps by default.
pub const DEFAULT_EVENT_RETENTION: usize = 1000;

/// Statements kept prepared per connection: the commit path uses five, the
/// readers a handful more.
const STATEMENT_CACHE: usize = 32;

/// The writer's page cache, in KiB (SQLite's default is 2 MiB). A large
/// batch whose dirty pages overflow the cache spills them into the WAL
/// mid-transaction and rewrites them at commit; 100,000 `PutCurrent`s touch
/// ~20 MiB of B-tree. Measured on the reference machine: 160k rows/s with
/// the default cache, 255k rows/s with this one. Pages are allocated only as
/// used: a small folder's connection stays small, a large one's holds at
/// most this much.
const CACHE_KIB: i64 = 4 * 1024;

/// Caps the `-wal` file left after a checkpoint (one large batch can grow it
/// to tens of MiB; without a limit it would stay that size).
const JOURNAL_SIZE_LIMIT: i64 = 32 << 20;

/// How commits reach the disk.
///
/// The store always runs in WAL mode, where every commit is atomic and is
/// durable against a *process* crash (`kill -9`, panic, OOM) as soon as
/// [`Store::commit`] returns: the transaction is in the `-wal` file, which
/// the next open replays. The choice is only about an *operating-system*
/// crash or power loss.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `synchronous=NORMAL` (the default): the WAL is synced at checkpoints,
    /// not at each commit, so a power loss may roll back the last
    /// transactions, never corrupt the database or split a batch. This costs
    /// ~0.04 ms per commit on the reference machine against ~0.7 ms for
    /// [`Durability::Full`], and the engine commits one batch per event.
    ///
    /// It is the right default because of how the engine recovers: the
    /// folder itself is the queue of work (a path whose disk state differs
    /// from its current record is uploaded again) and the grid holds
    /// everything published, so whatever a power loss rolls back is
    /// re-derived from the folder and the grid after restart. The one
    /// consequence the engine must tolerate is finding its own personal
    /// directory on the grid *ahead* of the rolled-back database.
    #[default]
    Normal,
    /// `synchronous=FULL`: each commit is synced to disk before it returns,
    /// so nothing committed is lost even on power loss.
    Full,
}

impl Durability {
    fn pragma(self) -> &'static str {
        match self {
            Durability::Normal => "NORMAL",
            Durability::Full => "FULL",
        }
    }
}

/// One recorded event, for the daemon's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Increasing identifier: a later event has a larger id.
    pub id: i64,
    /// When it happened, milliseconds since the Unix epoch (as given to
    /// [`SqliteStore::record_event`]).
    pub unix_ms: i64,
    /// The path it concerns, if any (free text: it may be a rejected,
    /// invalid path).
    pub path: Option<String>,
    /// A short machine-readable kind, e.g. `"upload"` or `"conflict"`.
    pub kind: String,
    /// A human-readable message.
    pub message: String,
}

/// The read-write SQLite store of one folder.
///
/// It owns one connection, so it is `Send` (it can move to the thread that
/// drives the folder) but not `Sync`.
///
/// Several `SqliteStore`s may be open on one file (SQLite serialises their
/// transactions, each waiting up to the busy timeout for the others), e.g.
/// one for the engine and one recording events and settings. But only one
/// may [`commit`](Store::commit) engine changes: the engine's in-memory
/// mirror is correct only while it is their sole writer.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    event_retention: usize,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the state database at `path` and migrates
    /// it to the current schema.
    ///
    /// On Unix a new file is created with mode `0600`, and an existing one
    /// readable by group or others is reset to `0600` (it holds
    /// capabilities). The connection runs in WAL mode with
    /// [`Durability::Normal`] and a [`DEFAULT_BUSY_TIMEOUT`].
    ///
    /// # Errors
    ///
    /// If the file cannot be created or opened, is not an SQLite database or
    /// not a Magic Folder one, was written by a newer version of this program
    /// (a newer schema version), or a migration fails (then nothing of it is
    /// applied).
    pub fn open(path: impl AsRef<Path>) -> Result<SqliteStore, StoreError> {
        let path = path.as_ref();
        let in_path = |op: &str| format!("{op} {}", path.display());
        create_private(path).map_err(|e| StoreError(format!("{}: {e}", in_path("create"))))?;
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags).with_ctx(|| in_path("open"))?;
        conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)
            .ctx("set busy timeout")?;
        // WAL: atomic commits without a rollback journal, readers concurrent
        // with the writer. Not available on every filesystem (e.g. some
        // network mounts), in which case we say so rather than run without.
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .with_ctx(|| in_path("enable WAL mode on"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError(format!(
                "{}: the filesystem does not support SQLite's WAL mode (got {mode:?})",
                in_path("open")
            )));
        }
        conn.pragma_update(None, "synchronous", Durability::Normal.pragma())
            .ctx("set synchronous")?;
        // No foreign keys are declared (see the schema module); enforcing
        // them keeps any a later migration adds honest.
        conn.pragma_update(None, "foreign_keys", true)
            .ctx("enable foreign keys")?;
        conn.pragma_update(None, "journal_size_limit", JOURNAL_SIZE_LIMIT)
            .ctx("set journal size limit")?;
        conn.pragma_update(None, "cache_size", -CACHE_KIB)
            .ctx("set cache size")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn, schema::MIGRATIONS).map_err(|e| in_file(path, e))?;
        Ok(SqliteStore {
            conn,
            path: path.to_owned(),
            event_retention: DEFAULT_EVENT_RETENTION,
        })
    }

    /// Opens the database at `path` read-only; the same as
    /// [`StateReader::open`].
    ///
    /// # Errors
    ///
    /// As [`StateReader::open`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<StateReader, StoreError> {
        StateReader::open(path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Chooses how commits reach the disk (see [`Durability`]).
    ///
    /// # Errors
    ///
    /// If SQLite refuses the setting (e.g. inside a transaction, which
    /// cannot happen through this API).
    pub fn set_durability(&mut self, durability: Durability) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", durability.pragma())
            .ctx("set synchronous")
    }

    /// Sets how long an operation waits for another connection's lock before
    /// failing (default [`DEFAULT_BUSY_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// If SQLite refuses the setting.
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), StoreError> {
        self.conn.busy_timeout(timeout).ctx("set busy timeout")
    }

    /// Sets how many of the newest events [`SqliteStore::record_event`]
    /// keeps (default [`DEFAULT_EVENT_RETENTION`]); older ones are pruned at
    /// the next record. Zero keeps none.
    pub fn set_event_retention(&mut self, keep: usize) {
        self.event_retention = keep;
    }

    /// Records an event and prunes the log to the newest events (see
    /// [`SqliteStore::set_event_retention`]), in one transaction of its own.
    /// Returns the new event's id.
    ///
    /// The caller supplies the time, so the store stays free of clocks.
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub fn record_event(
        &mut self,
        unix_ms: i64,
        path: Option<&str>,
        kind: &str,
        message: &str,
    ) -> Result<i64, StoreError> {
        let keep = i64::try_from(self.event_retention).unwrap_or(i64::MAX);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("record event: begin")?;
        let id = {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO events (unix_ms, path, kind, message) VALUES (?1, ?2, ?3, ?4)",
                )
                .ctx("record event")?;
            insert
                .execute((unix_ms, path, kind, message))
                .ctx("record event")?;
            let id = tx.last_insert_rowid();
            // Everything at or below the (keep+1)-th newest id goes; with
            // fewer rows the subquery is NULL and nothing matches.
            let mut prune = tx
                .prepare_cached(
                    "DELETE FROM events WHERE id <= \
                     (SELECT id FROM events ORDER BY id DESC LIMIT 1 OFFSET ?1)",
                )
                .ctx("prune events")?;
            prune.execute([keep]).ctx("prune events")?;
            id
        };
        tx.commit().ctx("record event: commit")?;
        Ok(id)
    }

    /// The newest `limit` events, newest first.
    ///
    /// # Errors
    ///
    /// If the read fails or a row is damaged.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        read_events(&self.conn, limit)
    }

    /// A folder-level setting, if set.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        read_setting(&self.conn, key)
    }

    /// Sets (or replaces) a folder-level setting, in a transaction of its own.
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("INSERT OR REPLACE INTO settings (key, value) VALUES (?1, ?2)")
            .and_then(|mut s| s.execute([key, value]))
            .with_ctx(|| format!("set setting {key:?}"))?;
        Ok(())
    }

    /// Removes a folder-level setting (no error if it was not set).
    ///
    /// # Errors
    ///
    /// If the write fails.
    pub fn remove_setting(&mut self, key: &str) -> Result<(), StoreError> {
        self.conn
            .prepare_cached("DELETE FROM settings WHERE key = ?1")
            .and_then(|mut s| s.execute([key]))
            .with_ctx(|| format!("remove setting {key:?}"))?;
        Ok(())
    }

    /// Every path's current record, ordered by path.
    ///
    /// # Errors
    ///
    /// If the read fails or a row is damaged.
    pub fn current_entries(&self) -> Result<Vec<(RelPath, Current)>, StoreError> {
        read_current(&self.conn)
    }

    /// Every conflict record, ordered by (path, author).
    ///
    /// # Errors
    ///
    /// If the read fails or a row is damaged.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, StoreError> {
        read_conflicts(&self.conn)
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> Result<Loaded, StoreError> {
        read_loaded(&self.conn)
    }

    fn snapshot(&self, cap: &Cap) -> Result<Option<SnapshotInfo>, StoreError> {
        read_snapshot(&self.conn, cap)
    }

    fn commit(&mut self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let n = changes.len();
        // IMMEDIATE takes the write lock up front (waiting up to the busy
        // timeout), so a batch never fails half-way for want of the lock.
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .with_ctx(|| format!("commit a batch of {n} changes: begin"))?;
        {
            let mut stmts = Statements::new(&tx);
            for (i, change) in changes.iter().enumerate() {
                stmts.apply(change).with_ctx(|| {
                    format!(
                        "commit a batch of {n} changes: change {i} ({})",
                        describe(change)
                    )
                })?;
            }
        }
        // On any error above, dropping `tx` rolls the whole batch back.
        tx.commit()
            .with_ctx(|| format!("commit a batch of {n} changes"))
    }

    /// Empties the page cache ([`CACHE_KIB`], filled by a burst's commits)
    /// and the prepared statements. The next reads take their pages from
    /// the system's file cache again.
    fn release_memory(&mut self) {
        // A failure only leaves the cache as it was.
        let _ = self.conn.execute_batch("PRAGMA shrink_memory");
        self.conn.flush_prepared_statement_cache();
    }
}

/// A read-only view of a folder's state database, for inspecting it while
/// the daemon runs.
///
/// WAL mode lets it read concurrently with the daemon's writes: each call
/// sees the latest committed state (never a partial batch), and
/// [`StateReader::load`] reads everything from one consistent snapshot.
/// Keep calls short: a read in progress delays WAL checkpoints.
pub struct StateReader {
    conn: Connection,
    path: PathBuf,
}

impl fmt::Debug for StateReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl StateReader {
    /// Opens an existing state database read-only. It never creates or
    /// migrates anything.
    ///
    /// # Errors
    ///
    /// If the file does not exist or cannot be read, is not a Magic Folder
    /// state database, or has a schema version other than this program's
    /// (newer: upgrade this program; older: let the daemon open it once to
    /// migrate it).
    pub fn open(path: impl AsRef<Path>) -> Result<StateReader, StoreError> {
        let path = path.as_ref();
        let in_path = |op: &str| format!("{op} {} read-only", path.display());
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).with_ctx(|| in_path("open"))?;
        conn.busy_timeout(DEFAULT_BUSY_TIMEOUT)
            .ctx("set busy timeout")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let version =
            schema::check(&conn, schema::MIGRATIONS.len()).map_err(|e| in_file(path, e))?;
        if version != SCHEMA_VERSION {
            return Err(in_file(
                path,
                StoreError(format!(
                    "the state database has schema version {version}, older than this \
                     program's {}; start the daemon once to upgrade it",
                    SCHEMA_VERSION
                )),
            ));
        }
        Ok(StateReader {
            conn,
            path: path.to_owned(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything the engine would load, from one consistent snapshot.
    ///
    /// # Errors
    ///
    /// If the read fails or a row is damaged.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        read_loaded(&self.conn)
    }

    /// Every path's current record, ordered by path.
    ///
    /// # Errors
    ///
    /// If the read fails or a row is damaged.
    pub fn current_entries(&self) -> Result<Vec<(RelPath, Current)>, StoreError> {
        read_current(&self.conn)
    }

    /// Every conflict record, ordered by (path, author).
    ///
    /// # Errors
    ///
    /// If the read fails or a row is damaged.
    pub fn conflicts(&self) -> Result<Vec<Conflict>, StoreError> {
        read_conflicts(&self.conn)
    }

    /// A cached snapshot.
    ///
    /// # Errors
    ///
    /// If the read fails or the row is damaged.
    pub fn snapshot(&self, cap: &Cap) -> Result<Option<SnapshotInfo>, StoreError> {
        read_snapshot(&self.conn, cap)
    }

    /// The newest `limit` events, newest first.
    ///
    /// # Errors
    ///
    /// If the read fails or a row is damaged.
    pub fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        read_events(&self.conn, limit)
    }

    /// A folder-level setting, if set.
    ///
    /// # Errors
    ///
    /// If the read fails.
    pub fn get_setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        read_setting(&self.conn, key)
    }
}

// ---------------------------------------------------------------------------
// Writing.

const PUT_CURRENT: &str = "INSERT OR REPLACE INTO current \
    (relpath, snapshot, local, size, mtime_ns, ctime_ns, published, adopting) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const MARK_PUBLISHED: &str =
    "UPDATE current SET published = 1 WHERE relpath = ?1 AND snapshot = ?2";
const PUT_SNAPSHOT: &str = "INSERT OR REPLACE INTO snapshots \
    (cap, relpath, author, author_key, content, content_cap, content_size, mtime_s, parents, \
    generation, executable) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const PUT_CONFLICT: &str = "INSERT OR REPLACE INTO conflicts \
    (relpath, author, snapshot, copy_size, copy_mtime_ns, copy_ctime_ns, resolved) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
const REMOVE_CONFLICT: &str = "DELETE FROM conflicts WHERE relpath = ?1 AND author = ?2";
const PUT_DECLARED: &str = "INSERT OR REPLACE INTO declared (participant, name, verify_key) \
    VALUES (?1, ?2, ?3)";
const REMOVE_DECLARED: &str = "DELETE FROM declared WHERE participant = ?1";

/// The commit path's statements, prepared (from the connection's cache) on
/// first use within a batch and returned to the cache when it ends.
struct Statements<'c> {
    conn: &'c Connection,
    put_current: Option<CachedStatement<'c>>,
    mark_published: Option<CachedStatement<'c>>,
    put_snapshot: Option<CachedStatement<'c>>,
    put_conflict: Option<CachedStatement<'c>>,
    remove_conflict: Option<CachedStatement<'c>>,
}

/// The prepared statement in `slot`, preparing it first if needed.
fn prepared<'s, 'c>(
    conn: &'c Connection,
    slot: &'s mut Option<CachedStatement<'c>>,
    sql: &str,
) -> rusqlite::Result<&'s mut CachedStatement<'c>> {
    let stmt = match slot.take() {
        Some(stmt) => stmt,
        None => conn.prepare_cached(sql)?,
    };
    Ok(slot.insert(stmt))
}

impl<'c> Statements<'c> {
    fn new(conn: &'c Connection) -> Statements<'c> {
        Statements {
            conn,
            put_current: None,
            mark_published: None,
            put_snapshot: None,
            put_conflict: None,
            remove_conflict: None,
        }
    }

    /// Executes one change, exactly as `MemStore` applies it.
    fn apply(&mut self, change: &Change) -> rusqlite::Result<()> {
        let conn = self.conn;
        match change {
            Change::PutCurrent(path, cur) => {
                let (kind, st) = encode_local(&cur.local);
                prepared(conn, &mut self.put_current, PUT_CURRENT)?.execute((
                    path.as_str(),
                    cur.snapshot.as_str(),
                    kind,
                    st.map(|s| s.size as i64),
                    st.map(|s| s.mtime_ns),
                    st.map(|s| s.ctime_ns),
                    cur.published,
                    cur.adopting.as_ref().map(Cap::as_str),
                ))?;
            }
            Change::MarkPublished(path, cap) => {
                // Only if the path's current snapshot is still `cap`.
                prepared(conn, &mut self.mark_published, MARK_PUBLISHED)?
                    .execute((path.as_str(), cap.as_str()))?;
            }
            Change::PutSnapshot(s) => {
                let (kind, content_cap, content_size, executable) = match &s.content {
                    Content::File {
                        cap,
                        size,
                        executable,
                    } => ("file", Some(cap.as_str()), Some(*size as i64), *executable),
                    Content::Dir => ("dir", None, None, false),
                    Content::Deleted => ("deleted", None, None, false),
                };
                let parents = serde_json::to_string(&s.parents)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                prepared(conn, &mut self.put_snapshot, PUT_SNAPSHOT)?.execute((
                    s.cap.as_str(),
                    s.relpath.as_str(),
                    s.author.as_str(),
                    s.author_key.as_str(),
                    kind,
                    content_cap,
                    content_size,
                    s.mtime_s,
                    parents,
                    s.generation as i64,
                    executable,
                ))?;
            }
            Change::PutConflict(c) => {
                prepared(conn, &mut self.put_conflict, PUT_CONFLICT)?.execute((
                    c.path.as_str(),
                    c.author.as_str(),
                    c.snapshot.as_str(),
                    c.copy.map(|s| s.size as i64),
                    c.copy.map(|s| s.mtime_ns),
                    c.copy.map(|s| s.ctime_ns),
                    c.resolved,
                ))?;
            }
            Change::RemoveConflict(path, author) => {
                prepared(conn, &mut self.remove_conflict, REMOVE_CONFLICT)?
                    .execute((path.as_str(), author.as_str()))?;
            }
            // Rare (when a directory's declaration changes): not cached.
            Change::PutDeclared(participant, author) => {
                conn.prepare_cached(PUT_DECLARED)?.execute((
                    participant.as_str(),
                    author.name.as_str(),
                    author.verify_key.as_str(),
                ))?;
            }
            Change::RemoveDeclared(participant) => {
                conn.prepare_cached(REMOVE_DECLARED)?
                    .execute([participant.as_str()])?;
            }
        }
        Ok(())
    }
}

/// A change for an error message: its kind and path, never a capability.
fn describe(change: &Change) -> String {
    match change {
        Change::PutCurrent(p, _) => format!("PutCurrent {p:?}"),
        Change::MarkPublished(p, _) => format!("MarkPublished {p:?}"),
        Change::PutSnapshot(s) => format!("PutSnapshot of {:?}", s.relpath),
        Change::PutConflict(c) => format!("PutConflict {:?} by {:?}", c.path, c.author),
        Change::RemoveConflict(p, a) => format!("RemoveConflict {p:?} by {a:?}"),
        Change::PutDeclared(p, _) => format!("PutDeclared of {p:?}"),
        Change::RemoveDeclared(p) => format!("RemoveDeclared of {p:?}"),
    }
}

fn encode_local(local: &LocalState) -> (&'static str, Option<PathState>) {
    match local {
        LocalState::Absent => ("absent", None),
        LocalState::Dir => ("dir", None),
        LocalState::File(st) => ("file", Some(*st)),
    }
}

// ---------------------------------------------------------------------------
// Reading. Rows are decoded strictly: anything the writer could not have
// produced is reported as a damaged row rather than guessed at.

/// A damaged row in `table`, identified by `key`.
fn corrupt(table: &str, key: impl fmt::Debug, why: impl fmt::Display) -> StoreError {
    StoreError(format!("damaged row in {table} for {key:?}: {why}"))
}

/// Decodes a stored path.
fn decode_path(table: &str, raw: String) -> Result<RelPath, StoreError> {
    RelPath::new(&raw).map_err(|e| corrupt(table, &raw, e))
}

/// Decodes the three columns of a `PathState` that are all set or all NULL.
fn decode_state(
    size: Option<i64>,
    mtime_ns: Option<i64>,
    ctime_ns: Option<i64>,
) -> Result<Option<PathState>, &'static str> {
    match (size, mtime_ns, ctime_ns) {
        (Some(size), Some(mtime_ns), Some(ctime_ns)) => Ok(Some(PathState {
            size: size as u64,
            mtime_ns,
            ctime_ns,
        })),
        (None, None, None) => Ok(None),
        _ => Err("file state partly missing"),
    }
}

fn decode_bool(v: i64) -> Result<bool, String> {
    match v {
        0 => Ok(false),
        1 => Ok(true),
        v => Err(format!("flag is {v}, not 0 or 1")),
    }
}

/// Reads the current records and the conflicts in one read transaction, so
/// they are consistent even while another connection writes.
fn read_loaded(conn: &Connection) -> Result<Loaded, StoreError> {
    let tx = conn.unchecked_transaction().ctx("load: begin")?;
    let current = read_current(&tx)?.into_iter().collect();
    let conflicts = read_conflicts(&tx)?;
    let declared = read_declared(&tx)?;
    tx.finish().ctx("load: end")?;
    Ok(Loaded {
        current,
        conflicts,
        declared,
    })
}

fn read_declared(conn: &Connection) -> Result<BTreeMap<String, DeclaredAuthor>, StoreError> {
    const OP: &str = "read declared authors";
    let mut stmt = conn
        .prepare_cached("SELECT participant, name, verify_key FROM declared")
        .ctx(OP)?;
    let mut rows = stmt.query([]).ctx(OP)?;
    let mut out = BTreeMap::new();
    while let Some(row) = rows.next().ctx(OP)? {
        let participant: String = row.get(0).ctx(OP)?;
        let author = DeclaredAuthor {
            name: row.get(1).ctx(OP)?,
            verify_key: row.get(2).ctx(OP)?,
        };
        out.insert(participant, author);
    }
    Ok(out)
}

fn read_current(conn: &Connection) -> Result<Vec<(RelPath, Current)>, StoreError> {
    const OP: &str = "read current records";
    let mut stmt = conn
        .prepare_cached(
            "SELECT relpath, snapshot, local, size, mtime_ns, ctime_ns, published, adopting \
             FROM current ORDER BY relpath",
        )
        .ctx(OP)?;
    let mut rows = stmt.query([]).ctx(OP)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx(OP)? {
        let path = decode_path("current", row.get(0).ctx(OP)?)?;
        let snapshot = Cap::from(row.get::<_, String>(1).ctx(OP)?);
        let st = decode_state(
            row.get(3).ctx(OP)?,
            row.get(4).ctx(OP)?,
            row.get(5).ctx(OP)?,
        )
        .map_err(|e| corrupt("current", &path, e))?;
        let local = match (row.get_ref(2).ctx(OP)?.as_str().ctx(OP)?, st) {
            ("absent", None) => LocalState::Absent,
            ("dir", None) => LocalState::Dir,
            ("file", Some(st)) => LocalState::File(st),
            (kind, _) => return Err(corrupt("current", &path, format!("local state {kind:?}"))),
        };
        let published =
            decode_bool(row.get(6).ctx(OP)?).map_err(|e| corrupt("current", &path, e))?;
        let adopting = row.get::<_, Option<String>>(7).ctx(OP)?.map(Cap::from);
        out.push((
            path,
            Current {
                snapshot,
                local,
                published,
                adopting,
            },
        ));
    }
    Ok(out)
}

fn read_conflicts(conn: &Connection) -> Result<Vec<Conflict>, StoreError> {
    const OP: &str = "read conflicts";
    let mut stmt = conn
        .prepare_cached(
            "SELECT relpath, author, snapshot, copy_size, copy_mtime_ns, copy_ctime_ns, resolved \
             FROM conflicts ORDER BY relpath, author",
        )
        .ctx(OP)?;
    let mut rows = stmt.query([]).ctx(OP)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().ctx(OP)? {
        let path = decode_path("conflicts", row.get(0).ctx(OP)?)?;
        let author: String = row.get(1).ctx(OP)?;
        let snapshot = Cap::from(row.get::<_, String>(2).ctx(OP)?);
        let copy = decode_state(
            row.get(3).ctx(OP)?,
            row.get(4).ctx(OP)?,
            row.get(5).ctx(OP)?,
        )
        .map_err(|e| corrupt("conflicts", (&path, &author), e))?;
        let resolved = decode_bool(row.get(6).ctx(OP)?)
            .map_err(|e| corrupt("conflicts", (&path, &author), e))?;
        out.push(Conflict {
            path,
            author,
            snapshot,
            copy,
            resolved,
        });
    }
    Ok(out)
}

fn read_snapshot(conn: &Connection, cap: &Cap) -> Result<Option<SnapshotInfo>, StoreError> {
    const OP: &str = "read snapshot";
    let mut stmt = conn
        .prepare_cached(
            "SELECT relpath, author, author_key, content, content_cap, content_size, mtime_s, \
             parents, generation, executable FROM snapshots WHERE cap = ?1",
        )
        .ctx(OP)?;
    let mut rows = stmt.query([cap.as_str()]).ctx(OP)?;
    let Some(row) = rows.next().ctx(OP)? else {
        return Ok(None);
    };
    // `cap`'s Debug form shows only its tail: enough to find it, not to use it.
    let relpath = decode_path("snapshots", row.get(0).ctx(OP)?)?;
    let content_cap: Option<String> = row.get(4).ctx(OP)?;
    let content_size: Option<i64> = row.get(5).ctx(OP)?;
    let content = match (
        row.get_ref(3).ctx(OP)?.as_str().ctx(OP)?,
        content_cap,
        content_size,
    ) {
        ("file", Some(c), Some(size)) => Content::File {
            cap: Cap::from(c),
            size: size as u64,
            executable: row.get(9).ctx(OP)?,
        },
        ("dir", None, None) => Content::Dir,
        ("deleted", None, None) => Content::Deleted,
        (kind, _, _) => return Err(corrupt("snapshots", cap, format!("content {kind:?}"))),
    };
    let parents: Vec<Cap> = serde_json::from_str(row.get_ref(7).ctx(OP)?.as_str().ctx(OP)?)
        .map_err(|e| corrupt("snapshots", cap, format!("parents: {e}")))?;
    Ok(Some(SnapshotInfo {
        cap: cap.clone(),
        relpath,
        author: row.get(1).ctx(OP)?,
        author_key: row.get(2).ctx(OP)?,
        parents,
        content,
        mtime_s: row.get(6).ctx(OP)?,
        generation: row.get::<_, i64>(8).ctx(OP)? as u64,
    }))
}

fn read_events(conn: &Connection, limit: usize) -> Result<Vec<Event>, StoreError> {
    const OP: &str = "read events";
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, unix_ms, path, kind, message FROM events ORDER BY id DESC LIMIT ?1",
        )
        .ctx(OP)?;
    let rows = stmt
        .query_map([limit], |r| {
            Ok(Event {
                id: r.get(0)?,
                unix_ms: r.get(1)?,
                path: r.get(2)?,
                kind: r.get(3)?,
                message: r.get(4)?,
            })
        })
        .ctx(OP)?;
    rows.collect::<rusqlite::Result<Vec<_>>>().ctx(OP)
}

fn read_setting(conn: &Connection, key: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT value FROM settings WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get(0)).optional())
        .with_ctx(|| format!("read setting {key:?}"))
}

// ---------------------------------------------------------------------------
// Files and errors.

/// Creates `path` with mode 0600 if it does not exist; tightens an existing
/// file that group or others can access.
#[cfg(unix)]
fn create_private(path: &Path) -> std::io::Result<()> {
    use std::fs::{self, OpenOptions, Permissions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        fs::set_permissions(path, Permissions::from_mode(mode & 0o700 | 0o600))?;
    }
    Ok(())
}

/// Elsewhere SQLite creates the file with the platform's defaults.
#[cfg(not(unix))]
fn create_private(_path: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Prefixes an error with the database file it concerns.
fn in_file(path: &Path, e: StoreError) -> StoreError {
    StoreError(format!("{}: {}", path.display(), e.0))
}

/// Adds the failed operation (and, for the usual causes, advice) to an
/// SQLite error.
pub(crate) trait Context<T> {
    /// Maps the error to a `StoreError` saying which operation failed.
    fn ctx(self, op: &str) -> Result<T, StoreError>;
    /// Like [`Context::ctx`], with the description built only on failure.
    fn with_ctx(self, op: impl FnOnce() -> String) -> Result<T, StoreError>;
}

impl<T, E: Into<rusqlite::Error>> Context<T> for Result<T, E> {
    fn ctx(self, op: &str) -> Result<T, StoreError> {
        self.map_err(|e| sqlite_error(op, &e.into()))
    }

    fn with_ctx(self, op: impl FnOnce() -> String) -> Result<T, StoreError> {
        self.map_err(|e| sqlite_error(&op(), &e.into()))
    }
}

fn sqlite_error(op: &str, e: &rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    let hint = match e.sqlite_error_code() {
        Some(C::DatabaseBusy | C::DatabaseLocked) => {
            " (another process holds the database: is a second daemon running for this folder?)"
        }
        Some(C::DatabaseCorrupt | C::NotADatabase) => {
            " (the file is damaged or is not an SQLite database)"
        }
        Some(C::ReadOnly) => " (the database, or its directory, is read-only)",
        Some(C::DiskFull) => " (the disk is full)",
        Some(C::CannotOpen) => " (check that the file's directory exists and is accessible)",
        _ => "",
    };
    StoreError(format!("{op}: {e}{hint}"))
}
