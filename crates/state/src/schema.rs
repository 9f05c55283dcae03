//! The on-disk schema and its numbered migrations.
//!
//! A state database records its schema version in SQLite's `PRAGMA
//! user_version` (a header field, so changing it is part of the same
//! transaction as the migration that produced it) and marks itself as ours
//! with `PRAGMA application_id`. [`MIGRATIONS`] is the whole history: step
//! `i` (0-based) turns version `i` into version `i + 1`. Steps are embedded
//! in the binary, never edited once released, and only ever appended to.
//!
//! [`migrate`] applies the missing steps at open, all in one `IMMEDIATE`
//! transaction: a crash mid-upgrade leaves the previous version intact, and
//! two processes opening the same file at once cannot both migrate it. A
//! database at a *newer* version than this binary knows is refused rather
//! than guessed at, and so is an SQLite file that is not ours.
//!
//! ## Design choices
//!
//! * Paths, capabilities and names are `TEXT` (valid UTF-8 by construction),
//!   compared with SQLite's default `BINARY` collation, which orders exactly
//!   like Rust's `str` (bytewise), so `ORDER BY relpath, author` reproduces
//!   the engine's `BTreeMap` order.
//! * `current` and `conflicts` are `WITHOUT ROWID`: their rows are small and
//!   always reached by their text key, so the table *is* the key's B-tree
//!   (no second index holding the path again, and `load` is one in-order
//!   scan). A rowid table inserts paths in random order somewhat faster
//!   (measured ~315k against ~265k rows/s) at the price of storing every
//!   path twice; both are far above what the engine needs.
//! * Sizes are `u64` in Rust and stored as their two's-complement `i64`
//!   bit pattern (SQLite integers are signed 64-bit), which round-trips every
//!   value exactly.
//! * A snapshot's parents are a JSON array of capability strings in the
//!   `parents` column rather than a child table. A snapshot is immutable and
//!   always read whole, by its own capability; its parents are a short,
//!   *ordered* list (0 for a new path, 1 for an edit, a few for a merge). One
//!   row keeps the order intrinsic, makes a lookup a single B-tree probe with
//!   no join, and makes "put" a single `INSERT OR REPLACE` (a child table
//!   would need a delete-then-insert of its rows to match replace
//!   semantics). Should a query by parent ever be needed, SQLite's
//!   `json_each` can do it.
//! * No foreign keys between tables: the engine's reference store
//!   (`MemStore`) accepts, for instance, a current record naming a snapshot
//!   that is not cached, and this store must accept exactly what it accepts.
//!   `CHECK` constraints guard the encodings of enums and optional groups
//!   instead, so a hand-edited or damaged row is caught on write.

use rusqlite::{Connection, TransactionBehavior};

use crate::{Context, StoreError};

/// `PRAGMA application_id` of a Magic Folder state database: "MFst".
pub(crate) const APPLICATION_ID: i32 = 0x4d46_7374;

/// Every schema step, oldest first; the schema version is the number applied.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the initial schema.
    r#"
    -- What our local copy of each path is: the engine's `Current` record.
    -- `local` is the `LocalState` kind; size/mtime_ns/ctime_ns are set only
    -- for a file.
    CREATE TABLE current (
        relpath   TEXT    NOT NULL PRIMARY KEY,
        snapshot  TEXT    NOT NULL,
        local     TEXT    NOT NULL CHECK (local IN ('absent', 'dir', 'file')),
        size      INTEGER,
        mtime_ns  INTEGER,
        ctime_ns  INTEGER,
        published INTEGER NOT NULL CHECK (published IN (0, 1)),
        CHECK ((local = 'file') =
               (size IS NOT NULL AND mtime_ns IS NOT NULL AND ctime_ns IS NOT NULL)),
        CHECK (local = 'file' OR (size IS NULL AND mtime_ns IS NULL AND ctime_ns IS NULL))
    ) WITHOUT ROWID;

    -- Verified snapshots, cached by their capability (immutable on the grid).
    -- `content` is the `Content` kind; content_cap/content_size only for a file.
    -- `parents` is a JSON array of capability strings, in order.
    CREATE TABLE snapshots (
        cap          TEXT    NOT NULL PRIMARY KEY,
        relpath      TEXT    NOT NULL,
        author       TEXT    NOT NULL,
        author_key   TEXT    NOT NULL,
        content      TEXT    NOT NULL CHECK (content IN ('file', 'dir', 'deleted')),
        content_cap  TEXT,
        content_size INTEGER,
        mtime_s      INTEGER NOT NULL,
        parents      TEXT    NOT NULL CHECK (json_valid(parents)),
        CHECK ((content = 'file') = (content_cap IS NOT NULL AND content_size IS NOT NULL)),
        CHECK (content = 'file' OR (content_cap IS NULL AND content_size IS NULL))
    );

    -- Conflict copies on disk, one per (path, author of the losing version).
    -- copy_* are all NULL until the copy is written, then all set.
    CREATE TABLE conflicts (
        relpath       TEXT    NOT NULL,
        author        TEXT    NOT NULL,
        snapshot      TEXT    NOT NULL,
        copy_size     INTEGER,
        copy_mtime_ns INTEGER,
        copy_ctime_ns INTEGER,
        resolved      INTEGER NOT NULL CHECK (resolved IN (0, 1)),
        PRIMARY KEY (relpath, author),
        CHECK ((copy_size IS NULL) = (copy_mtime_ns IS NULL)
               AND (copy_size IS NULL) = (copy_ctime_ns IS NULL))
    ) WITHOUT ROWID;

    -- Recent events for the daemon's status, pruned to the newest N.
    -- `id` is the rowid: increasing, since the newest row is never pruned.
    CREATE TABLE events (
        id      INTEGER PRIMARY KEY,
        unix_ms INTEGER NOT NULL,
        path    TEXT,
        kind    TEXT    NOT NULL,
        message TEXT    NOT NULL
    );

    -- Folder-level settings the daemon keeps with the state.
    CREATE TABLE settings (
        key   TEXT NOT NULL PRIMARY KEY,
        value TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
    // 2: `Current::adopting`, the remote version being written over the
    // local file (NULL: none). Existing rows adopt nothing.
    r#"
    ALTER TABLE current ADD COLUMN adopting TEXT;
    "#,
    // 3: `SnapshotInfo::generation`, which orders conflict winners. Snapshots
    // cached before it existed count as generation 0, as a Python peer's do.
    r#"
    ALTER TABLE snapshots ADD COLUMN generation INTEGER NOT NULL DEFAULT 0;
    "#,
    // 4: `Content::File::executable`. Snapshots cached before it existed
    // were read without it: not executable.
    r#"
    ALTER TABLE snapshots ADD COLUMN executable INTEGER NOT NULL DEFAULT 0
        CHECK (executable IN (0, 1));
    "#,
    // 5: the author each participant's directory declares
    // (`Change::PutDeclared`), so that a restart does not unpin them until
    // the directory is read again. A store from before knows none: as
    // before, they are learnt at the first poll.
    r#"
    CREATE TABLE declared (
        participant TEXT NOT NULL PRIMARY KEY,
        name        TEXT NOT NULL,
        verify_key  TEXT NOT NULL
    ) WITHOUT ROWID;
    "#,
];

/// Reads `(application_id, user_version)` from the open database.
fn header(conn: &Connection) -> Result<(i32, i64), StoreError> {
    let app: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .ctx("read the application id")?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .ctx("read the schema version")?;
    Ok((app, version))
}

/// Checks that the database is ours and at a version this binary can use
/// (`known` steps), without changing it. Returns the version on disk, which
/// may be older than `known` (a database still to be migrated).
pub(crate) fn check(conn: &Connection, known: usize) -> Result<u32, StoreError> {
    let (app, version) = header(conn)?;
    if app != 0 && app != APPLICATION_ID {
        return Err(StoreError(format!(
            "not a Magic Folder state database (application id {app:#x})"
        )));
    }
    if version < 0 || version > i64::from(u32::MAX) {
        return Err(StoreError(format!("invalid schema version {version}")));
    }
    if version as usize > known {
        return Err(StoreError(format!(
            "the state database has schema version {version}, newer than the {known} \
             this program knows: it was written by a newer Magic Folder; upgrade this one"
        )));
    }
    if version == 0 {
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .ctx("inspect an unversioned database")?;
        if objects > 0 {
            return Err(StoreError(
                "not a Magic Folder state database (it holds tables but no schema version)".into(),
            ));
        }
    } else if app != APPLICATION_ID {
        return Err(StoreError(
            "not a Magic Folder state database (missing application id)".into(),
        ));
    }
    Ok(version as u32)
}

/// Brings the database up to `migrations.len()`, all steps in one
/// transaction. Returns the resulting version.
pub(crate) fn migrate(conn: &mut Connection, migrations: &[&str]) -> Result<u32, StoreError> {
    // IMMEDIATE takes the write lock before reading the version, so a
    // concurrent opener waits (busy_timeout) and then sees our result.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .ctx("begin schema migration")?;
    let from = check(&tx, migrations.len())? as usize;
    if from == migrations.len() {
        return Ok(from as u32);
    }
    for (i, step) in migrations.iter().enumerate().skip(from) {
        tx.execute_batch(step)
            .with_ctx(|| format!("apply schema migration {}", i + 1))?;
    }
    tx.pragma_update(None, "application_id", APPLICATION_ID)
        .ctx("set the application id")?;
    tx.pragma_update(None, "user_version", migrations.len() as i64)
        .ctx("set the schema version")?;
    tx.commit().ctx("commit schema migration")?;
    Ok(migrations.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(conn: &Connection) -> i64 {
        conn.pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap()
    }

    fn tables(conn: &Connection) -> Vec<String> {
        let mut s = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name")
            .unwrap();
        let names = s.query_map([], |r| r.get(0)).unwrap();
        names.collect::<Result<_, _>>().unwrap()
    }

    #[test]
    fn empty_database_gets_every_step() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).unwrap(),
            crate::SCHEMA_VERSION
        );
        assert_eq!(version(&conn), i64::from(crate::SCHEMA_VERSION));
        assert_eq!(
            tables(&conn),
            [
                "conflicts",
                "current",
                "declared",
                "events",
                "settings",
                "snapshots"
            ]
        );
        // Idempotent: a second open applies nothing.
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).unwrap(),
            crate::SCHEMA_VERSION
        );
    }

    #[test]
    fn steps_apply_in_order_from_any_version() {
        let steps = [
            "CREATE TABLE a (x)",
            "CREATE TABLE b (y); INSERT INTO a VALUES (1)",
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, &steps[..1]).unwrap(), 1);
        assert_eq!(tables(&conn), ["a"]);
        // A later binary knows one more step: only that one runs.
        assert_eq!(migrate(&mut conn, &steps).unwrap(), 2);
        assert_eq!(tables(&conn), ["a", "b"]);
        let n: i64 = conn
            .query_row("SELECT count(*) FROM a", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn version_1_rows_survive_the_upgrade() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn, &MIGRATIONS[..1]).unwrap(), 1);
        conn.execute_batch(
            "INSERT INTO current VALUES ('a', 's1', 'file', 1, 2, 3, 1);
             INSERT INTO current VALUES ('b', 's2', 'dir', NULL, NULL, NULL, 0);",
        )
        .unwrap();
        assert_eq!(
            migrate(&mut conn, MIGRATIONS).unwrap(),
            crate::SCHEMA_VERSION
        );
        let rows = crate::read_current(&conn).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0.as_str(), "a");
        assert!(rows[0].1.published);
        assert!(rows.iter().all(|(_, c)| c.adopting.is_none()));
    }

    #[test]
    fn a_failing_step_leaves_the_previous_version_intact() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, &["CREATE TABLE a (x)"]).unwrap();
        let steps = [
            "CREATE TABLE a (x)",
            "CREATE TABLE b (y)",
            "CREATE TABLE c (z); BOGUS",
        ];
        let err = migrate(&mut conn, &steps).unwrap_err();
        assert!(err.0.contains("apply schema migration 3"), "{err}");
        assert_eq!(version(&conn), 1);
        assert_eq!(tables(&conn), ["a"], "step 2 was rolled back with step 3");
    }

    #[test]
    fn a_newer_version_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, MIGRATIONS).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        let err = migrate(&mut conn, MIGRATIONS).unwrap_err();
        assert!(
            err.0.contains("schema version 99") && err.0.contains("newer"),
            "{err}"
        );
        assert_eq!(version(&conn), 99, "left untouched");
    }

    #[test]
    fn foreign_databases_are_refused() {
        // Someone else's tables, no version.
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE theirs (x)").unwrap();
        let err = migrate(&mut conn, MIGRATIONS).unwrap_err();
        assert!(err.0.contains("not a Magic Folder state database"), "{err}");
        assert_eq!(tables(&conn), ["theirs"]);
        // Another application's id.
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "application_id", 1234).unwrap();
        let err = migrate(&mut conn, MIGRATIONS).unwrap_err();
        assert!(err.0.contains("application id 0x4d2"), "{err}");
        // A version but not our id.
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        assert!(migrate(&mut conn, MIGRATIONS).is_err());
    }

    #[test]
    fn check_constraints_reject_inconsistent_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, MIGRATIONS).unwrap();
        for bad in [
            "INSERT INTO current VALUES ('a', 's', 'file', NULL, 1, 1, 0, NULL)",
            "INSERT INTO current VALUES ('a', 's', 'dir', 1, 1, 1, 0, NULL)",
            "INSERT INTO current VALUES ('a', 's', 'link', NULL, NULL, NULL, 0, NULL)",
            "INSERT INTO current VALUES ('a', 's', 'dir', NULL, NULL, NULL, 2, NULL)",
            "INSERT INTO snapshots VALUES ('c', 'a', 'x', 'k', 'dir', 'cc', NULL, 0, '[]', 0, 0)",
            "INSERT INTO snapshots VALUES ('c', 'a', 'x', 'k', 'file', 'cc', 1, 0, '[', 0, 0)",
            "INSERT INTO snapshots VALUES ('c', 'a', 'x', 'k', 'file', 'cc', 1, 0, '[]', 0, 2)",
            "INSERT INTO conflicts VALUES ('a', 'x', 's', 1, NULL, 1, 0)",
        ] {
            assert!(conn.execute(bad, []).is_err(), "accepted: {bad}");
        }
        for good in [
            "INSERT INTO current VALUES ('a', 's', 'file', 1, 1, 1, 0, NULL)",
            "INSERT INTO current VALUES ('b', 's', 'dir', NULL, NULL, NULL, 1, 'r')",
            "INSERT INTO snapshots VALUES ('c', 'a', 'x', 'k', 'file', 'cc', 1, 0, '[\"p\"]', 1, 1)",
            "INSERT INTO conflicts VALUES ('a', 'x', 's', NULL, NULL, NULL, 1)",
        ] {
            conn.execute(good, []).unwrap();
        }
    }
}
