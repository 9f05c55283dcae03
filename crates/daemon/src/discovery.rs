//! How magic-folder 24.3's clients find the running daemon in its config
//! directory, written so that they find ours.
//!
//! Clients written for 24.3 — its own `magic-folder-api`, GridSync — open
//! `<config>/global.sqlite` (24.3's global configuration database, schema
//! version 3) before anything else, read the API token from
//! `<config>/api_token`, and the address from `<config>/api_client_endpoint`
//! (a Twisted client endpoint string, `tcp:127.0.0.1:PORT`, or `not
//! running`), falling back to the database's `config.api_client_endpoint`.
//! So `run` writes both, and says `not running` when it stops. (Our own CLI
//! reads `api.url`; it was there first, and a URL needs no parsing of
//! Twisted's endpoint syntax.) Nothing secret goes into either.

use std::path::Path;

use rusqlite::Connection;

use crate::config::{write_private, ConfigDir, ConfigError, ConfigResult};

/// 24.3's global schema, at its version 3 (`config.py`,
/// `_global_config_schema`): its clients refuse a database without it.
const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS magic_folders (name TEXT PRIMARY KEY, location TEXT);
    CREATE TABLE IF NOT EXISTS config (
        api_endpoint TEXT, tahoe_node_directory TEXT, api_client_endpoint TEXT, wormhole_uri TEXT
    );
    CREATE TABLE IF NOT EXISTS features ([name] TEXT, [enabled] BOOL);
    PRAGMA user_version = 3;
";

/// What a stopped daemon leaves in `api_client_endpoint`.
const NOT_RUNNING: &str = "not running";

/// Records where the API listens (`Some(port)`, on 127.0.0.1) or that it
/// does not (`None`), in 24.3's discovery file and database.
pub fn announce(config: &ConfigDir, port: Option<u16>) -> ConfigResult<()> {
    let client = match port {
        Some(p) => format!("tcp:127.0.0.1:{p}"),
        None => NOT_RUNNING.to_owned(),
    };
    let server = port.map(|p| format!("tcp:{p}:interface=127.0.0.1"));
    // What 24.3's clients read besides the endpoint: its node and mailbox.
    let node = config.tahoe_node().unwrap_or_default();
    record(
        &config.path().join("global.sqlite"),
        server.as_deref(),
        &client,
        (&node, &config.mailbox_url()),
    )?;
    write_private(
        &config.path().join("api_client_endpoint"),
        format!("{client}\n").as_bytes(),
    )
}

fn record(
    db: &Path,
    server: Option<&str>,
    client: &str,
    (node, mailbox): (&str, &str),
) -> ConfigResult<()> {
    let fail = |e: rusqlite::Error| ConfigError::Corrupt {
        path: db.to_path_buf(),
        detail: format!("writing 24.3's discovery database: {e}"),
    };
    let mut conn = Connection::open(db).map_err(fail)?;
    restrict(db)?;
    let tx = conn.transaction().map_err(fail)?;
    tx.execute_batch(SCHEMA).map_err(fail)?;
    let rows: i64 = tx
        .query_row("SELECT count(*) FROM config", [], |r| r.get(0))
        .map_err(fail)?;
    if rows == 0 {
        tx.execute(
            "INSERT INTO config (api_endpoint, tahoe_node_directory, api_client_endpoint, wormhole_uri)
             VALUES (?1, ?3, ?2, ?4)",
            (server.unwrap_or("tcp:0:interface=127.0.0.1"), client, node, mailbox),
        )
        .map_err(fail)?;
    } else {
        tx.execute(
            "UPDATE config SET api_client_endpoint = ?1, api_endpoint = coalesce(?2, api_endpoint),
             tahoe_node_directory = ?3, wormhole_uri = ?4",
            (client, server, node, mailbox),
        )
        .map_err(fail)?;
    }
    tx.commit().map_err(fail)
}

/// The database is the owner's alone, like everything in the directory.
fn restrict(db: &Path) -> ConfigResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ConfigError::io(format!("restricting {}", db.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_and_withdraws_in_24_3s_form() {
        let dir = tempfile::tempdir().unwrap();
        let config = ConfigDir::at(dir.path().join("c"));
        config.init().unwrap();
        announce(&config, Some(4321)).unwrap();
        announce(&config, Some(4322)).unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join("c").join(f)).unwrap();
        assert_eq!(read("api_client_endpoint"), "tcp:127.0.0.1:4322\n");
        let conn = Connection::open(dir.path().join("c/global.sqlite")).unwrap();
        let (v, client, rows): (i64, String, i64) = conn
            .query_row(
                "SELECT (SELECT user_version FROM pragma_user_version), api_client_endpoint,
                        (SELECT count(*) FROM config) FROM config",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((v, client.as_str(), rows), (3, "tcp:127.0.0.1:4322", 1));
        announce(&config, None).unwrap();
        assert_eq!(read("api_client_endpoint"), "not running\n");
        // 24.3's token form: 32 bytes, padded base64url, no newline.
        let token = read("api_token");
        assert_eq!(token.len(), 44);
        assert_eq!(
            data_encoding::BASE64URL
                .decode(token.as_bytes())
                .unwrap()
                .len(),
            32
        );
    }
}
