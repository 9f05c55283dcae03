//! Our own invite codes, for any grid and without a rendezvous server
//! (the embedded grid, offline): `invite`, `join` of such a code, `admit`
//! and `invite --cancel`. (Magic Wormhole invites, 24.3's, are
//! [`super::invite_v1`].)
//!
//! # How an invite goes
//!
//! 1. `invite` makes a *reply slot* — a new mutable directory — and prints
//!    a code holding the folder's location, the collective's **read**
//!    capability, the slot's write capability and an expiry time. The
//!    inviter remembers the slot (`folders/NAME/invites/WHO.json`).
//! 2. `join` makes the invitee's own personal directory and writes its
//!    **read** capability into the slot, with no-replace: a second use of
//!    the code fails there, loudly. The invitee's write capability never
//!    leaves their machine.
//! 3. The inviter's daemon (every few seconds while an invite waits, or
//!    `admit` by hand) finds the answer and links it into the collective;
//!    from then on the invitee is a participant. The slot is forgotten.
//!
//! A code is `mf-invite-v3:` + base64url (no padding) of the JSON
//! ([`InviteCode`]) and the first four bytes of its SHA-256, so a character
//! changed or lost in copying is a clear error.
//!
//! # What a code gives whoever reads it
//!
//! * The whole folder, read-only, for ever (the collective's read
//!   capability reaches every version of every file), and the convergence
//!   secret of an embedded grid (enough to test guesses of file contents).
//!   This is what an invite is for; send codes privately.
//! * Until the code is used, expires (7 days by default, `--expires`) or is
//!   cancelled: the chance to join as the invitee in their place. The real
//!   invitee then hears "already used", and the admin sees who answered
//!   (`participants list`), and can `participants remove` them.
//!
//! Nothing more: not the right to write as anyone (only read capabilities
//! cross, and each participant's key is declared in its own directory).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use data_encoding::BASE64URL_NOPAD;
use mf_core::relpath::check_participant_name;
use mf_grid::{read_only, CapKind, Capability, DirChildren, DirEntry, Grid, GridError, Replace};
use serde::{Deserialize, Serialize};

use super::grid::{AnyGrid, OpenMode};
use super::setup::{self, FolderInfo, JoinOptions};
use crate::config::{write_private, ConfigDir, GridLocation, Secret32};

/// The prefix of every invite code this version writes.
pub const INVITE_PREFIX: &str = "mf-invite-v3:";

/// How long a code is good for, unless `invite --expires` says otherwise.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Bytes of SHA-256 of the JSON that end a code's payload.
const INVITE_CHECK: usize = 4;

/// The slot's entry holding the invitee's answer.
const ANSWER: &str = "personal";
/// The slot's entry that marks a cancelled invite.
const CANCELLED: &str = "cancelled";

fn invite_check(json: &[u8]) -> [u8; INVITE_CHECK] {
    use sha2::Digest;
    let d = sha2::Sha256::digest(json);
    d[..INVITE_CHECK].try_into().expect("4 bytes")
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The decoded content of an invite code. Secret.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InviteCode {
    /// The folder's name at the inviter (the default local name).
    pub folder: String,
    /// The invitee's participant name.
    pub participant: String,
    /// The inviter's participant name.
    pub inviter: String,
    /// Where the grid is.
    pub grid: GridLocation,
    /// The collective's read capability.
    pub collective: Capability,
    /// The reply slot's write capability.
    pub reply: Capability,
    /// The folder's convergence secret (the embedded grid's).
    pub convergence_secret: Secret32,
    /// When the code stops working, seconds since the Unix epoch.
    pub expires: u64,
}

impl InviteCode {
    /// The printable code.
    pub fn encode(&self) -> String {
        let mut payload = serde_json::to_vec(self).expect("serialises");
        let check = invite_check(&payload);
        payload.extend_from_slice(&check);
        format!("{INVITE_PREFIX}{}", BASE64URL_NOPAD.encode(&payload))
    }

    /// Parses and checks a code.
    pub fn decode(code: &str) -> anyhow::Result<InviteCode> {
        let code = code.trim();
        let body = code.strip_prefix(INVITE_PREFIX).ok_or_else(|| {
            if code.starts_with("mf-invite-") {
                anyhow!("this invite code is from another version of Magic Folder (expected {INVITE_PREFIX}...); ask for a new one")
            } else {
                anyhow!("not a Magic Folder invite code (it should start with {INVITE_PREFIX}, or be a Magic Wormhole code)")
            }
        })?;
        let payload = BASE64URL_NOPAD.decode(body.as_bytes()).map_err(|_| {
            anyhow!("the invite code is damaged (not base64url); copy it again, whole")
        })?;
        let (json, check) = payload
            .split_at_checked(payload.len().saturating_sub(INVITE_CHECK))
            .filter(|(_, c)| c.len() == INVITE_CHECK)
            .ok_or_else(|| {
                anyhow!("the invite code is damaged (too short); copy it again, whole")
            })?;
        if invite_check(json) != check {
            bail!("the invite code is damaged (a character changed or went missing); copy it again, whole");
        }
        let inv: InviteCode = serde_json::from_slice(json)
            .map_err(|e| anyhow!("the invite code is damaged ({e}); copy it again, whole"))?;
        check_participant_name(&inv.participant)
            .map_err(|e| anyhow!("the invite code is invalid: {e}"))?;
        if inv.collective.kind() != CapKind::MutableDirRead {
            bail!("the invite code is invalid: the collective capability is not a directory read capability");
        }
        if inv.reply.kind() != CapKind::MutableDirWrite {
            bail!("the invite code is invalid: its reply slot is not a directory write capability");
        }
        Ok(inv)
    }
}

/// An invite the inviter waits to hear back from.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Pending {
    participant: String,
    reply: Capability,
    expires: u64,
}

/// Where a folder's pending invites are kept, one file each.
pub fn pending_dir(config: &ConfigDir, folder: &str) -> PathBuf {
    config.folder_dir(folder).join("invites")
}

/// True if an invite of the folder waits for its answer (or cannot be
/// read: `admit` reports that).
pub fn has_pending(config: &ConfigDir, folder: &str) -> bool {
    pending(config, folder).map_or(true, |p| !p.is_empty())
}

/// The folder's pending invites (unreadable files are reported, not
/// skipped).
fn pending(config: &ConfigDir, folder: &str) -> anyhow::Result<Vec<Pending>> {
    read_pending(&pending_dir(config, folder))
}

fn read_pending(dir: &std::path::Path) -> anyhow::Result<Vec<Pending>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_some_and(|x| x == "json") {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            out.push(
                serde_json::from_slice(&bytes)
                    .with_context(|| format!("{} is damaged", path.display()))?,
            );
        }
    }
    Ok(out)
}

/// One file per invite: adding and dropping never rewrite another's, so a
/// CLI `invite` and the daemon's `admit` cannot lose each other's work.
fn pending_file(config: &ConfigDir, folder: &str, participant: &str) -> PathBuf {
    pending_dir(config, folder).join(format!("{participant}.json"))
}

/// An invite no longer waited for (used, cancelled or expired) moves to
/// `invites/done/`: its slot stays on the grid, and `gc` must know it
/// belongs to this folder.
fn forget(config: &ConfigDir, folder: &str, participant: &str) -> anyhow::Result<()> {
    let done = pending_dir(config, folder).join("done");
    std::fs::create_dir_all(&done).context("forgetting an invite")?;
    let to = done.join(format!("{participant}-{}.json", now_s()));
    match std::fs::rename(pending_file(config, folder, participant), to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).context("forgetting an invite"),
    }
}

/// Every reply slot this folder's invites made, waiting or done (for `gc`:
/// they are this folder's mutable directories).
pub fn reply_slots(config: &ConfigDir, folder: &str) -> anyhow::Result<Vec<Capability>> {
    let dir = pending_dir(config, folder);
    let mut out: Vec<Capability> = read_pending(&dir)?.into_iter().map(|p| p.reply).collect();
    out.extend(
        read_pending(&dir.join("done"))?
            .into_iter()
            .map(|p| p.reply),
    );
    Ok(out)
}

/// What `invite` produced.
#[derive(Clone, Debug, Serialize)]
pub struct Invite {
    /// The folder.
    pub folder: String,
    /// The invited participant.
    pub participant: String,
    /// The code to give them (secret).
    pub code: String,
    /// When the code stops working, seconds since the Unix epoch.
    pub expires: u64,
}

/// `invite`: makes a code for `participant` to join `folder`, good for
/// `expires_in`.
pub async fn invite(
    config: &ConfigDir,
    folder: &str,
    participant: &str,
    expires_in: Duration,
) -> anyhow::Result<Invite> {
    let (cfg, grid) = setup::inviting(config, folder, participant).await?;
    if pending_file(config, folder, participant).exists() {
        bail!(
            "{participant:?} is already invited to {folder:?}; `invite --cancel` that invite first"
        );
    }
    let reply = grid
        .create_mutable_dir()
        .await
        .context("making the invite's reply slot on the grid")?;
    let expires = now_s().saturating_add(expires_in.as_secs());
    let record = Pending {
        participant: participant.to_owned(),
        reply: reply.clone(),
        expires,
    };
    std::fs::create_dir_all(pending_dir(config, folder))?;
    write_private(
        &pending_file(config, folder, participant),
        &serde_json::to_vec(&record).expect("serialises"),
    )?;
    let code = InviteCode {
        folder: cfg.name.clone(),
        participant: participant.to_owned(),
        inviter: cfg.participant.clone(),
        grid: cfg.grid.clone(),
        collective: read_only(&cfg.collective_cap)?,
        reply,
        convergence_secret: cfg.convergence_secret.clone(),
        expires,
    };
    Ok(Invite {
        folder: cfg.name,
        participant: participant.to_owned(),
        code: code.encode(),
        expires,
    })
}

/// `invite --cancel`: the code stops working (a later `join` hears so).
pub async fn cancel(config: &ConfigDir, folder: &str, participant: &str) -> anyhow::Result<()> {
    let cfg = config.load_folder(folder)?;
    let Some(p) = pending(config, folder)?
        .into_iter()
        .find(|p| p.participant == participant)
    else {
        bail!("there is no invite of {participant:?} to {folder:?} waiting");
    };
    let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
    // The name says it all; its child is an empty immutable directory
    // (a mutable directory's children must name an object).
    let marker = grid.create_immutable_dir(DirChildren::new()).await?;
    let mut mark = DirChildren::new();
    mark.insert(CANCELLED.to_owned(), DirEntry::new(marker));
    match grid.set_children(&p.reply, mark, Replace::No).await {
        Ok(()) | Err(GridError::Exists(_)) => {}
        Err(e) => return Err(e).context("marking the invite cancelled on the grid"),
    }
    forget(config, folder, participant)
}

/// `admit`: links every invitee who has answered into the collective, and
/// forgets invites that expired. Returns who was let in. The daemon runs
/// it every few seconds, while an invite waits, for the folders it
/// administers (see `run`).
pub async fn admit(config: &ConfigDir, folder: &str) -> anyhow::Result<Vec<String>> {
    let invites = pending(config, folder)?;
    if invites.is_empty() {
        return Ok(Vec::new());
    }
    let cfg = config.load_folder(folder)?;
    let grid = AnyGrid::open(&cfg.grid, &cfg.convergence_secret, OpenMode::MustExist)?;
    let mut admitted = Vec::new();
    for p in invites {
        let slot = grid
            .list(&p.reply)
            .await
            .with_context(|| format!("reading {:?}'s answer", p.participant))?;
        let answer = slot
            .get(ANSWER)
            .filter(|a| a.cap.kind() == CapKind::MutableDirRead)
            .filter(|a| a.cap.scheme() == cfg.collective_cap.scheme());
        match answer {
            Some(a) => {
                let mut link = DirChildren::new();
                link.insert(p.participant.clone(), DirEntry::new(a.cap.clone()));
                match grid
                    .set_children(&cfg.collective_cap, link, Replace::No)
                    .await
                {
                    Ok(()) => admitted.push(p.participant.clone()),
                    // Taken meanwhile (a retry after a crash finds its own
                    // link; a participant added by hand, someone else).
                    Err(GridError::Exists(_)) => {}
                    Err(e) => {
                        return Err(e).with_context(|| format!("admitting {:?}", p.participant))
                    }
                }
                forget(config, folder, &p.participant)?;
            }
            None if now_s() > p.expires => forget(config, folder, &p.participant)?,
            None => {}
        }
    }
    Ok(admitted)
}

/// `join` with one of our codes: the invitee's half (module docs).
pub(super) async fn join(config: &ConfigDir, opts: JoinOptions) -> anyhow::Result<FolderInfo> {
    let inv = InviteCode::decode(&opts.code)?;
    if now_s() > inv.expires {
        bail!("this invite expired; ask {:?} for a new one", inv.inviter);
    }
    config.init()?;
    let name = opts.name.clone().unwrap_or_else(|| inv.folder.clone());
    let author = opts
        .author
        .clone()
        .unwrap_or_else(|| inv.participant.clone());
    setup::check_new_names(config, &name, &author)?;
    let location = match opts.grid.clone() {
        Some(choice) => setup::grid_location(config, Some(choice))?,
        None => inv.grid.clone(),
    };
    let grid = AnyGrid::open(&location, &inv.convergence_secret, OpenMode::MustExist)?;
    let slot = grid
        .list(&inv.reply)
        .await
        .map_err(|e| anyhow!("cannot read the invite on the grid: {e}"))?;
    if slot.contains_key(CANCELLED) {
        bail!(
            "this invite was cancelled; ask {:?} for a new one",
            inv.inviter
        );
    }
    if slot.contains_key(ANSWER) {
        bail!(
            "this invite was already used; ask {:?} for a new one",
            inv.inviter
        );
    }
    let local_path = setup::prepare_local_dir(config, &opts.local_dir)?;
    let (info, personal) = setup::join_by_capability(
        config,
        setup::Joined {
            name: name.clone(),
            local_path,
            location,
            tuning: opts.tuning.clone(),
            collective: inv.collective.clone(),
            participant: inv.participant.clone(),
            author,
            convergence_secret: inv.convergence_secret.clone(),
        },
    )
    .await?;
    let mut answer = DirChildren::new();
    answer.insert(ANSWER.to_owned(), DirEntry::new(personal));
    match grid.set_children(&inv.reply, answer, Replace::No).await {
        Ok(()) => Ok(info),
        Err(e) => {
            // Not a participant after all: forget the folder (its
            // directory stays).
            let _ = config.remove_folder(&name);
            match e {
                GridError::Exists(_) => bail!(
                    "this invite was already used (just now); ask {:?} for a new one",
                    inv.inviter
                ),
                e => Err(anyhow!("cannot answer the invite on the grid: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code() -> InviteCode {
        InviteCode {
            folder: "docs".into(),
            participant: "bob".into(),
            inviter: "alice".into(),
            grid: GridLocation::Embedded {
                dir: "/tmp/grid".into(),
            },
            collective: Capability::parse("URI:MF-DIR-RO:abc:def").unwrap(),
            reply: Capability::parse("URI:MF-DIR:ghi").unwrap(),
            convergence_secret: Secret32([9; 32]),
            expires: 2_000_000_000,
        }
    }

    #[test]
    fn invite_codes_round_trip() {
        let c = code();
        let s = c.encode();
        assert!(s.starts_with(INVITE_PREFIX));
        let back = InviteCode::decode(&format!("  {s}\n")).unwrap();
        assert_eq!(back.participant, "bob");
        assert_eq!(back.convergence_secret, c.convergence_secret);
    }

    #[test]
    fn bad_invite_codes_are_clear_errors() {
        let msg = |s: &str| InviteCode::decode(s).unwrap_err().to_string();
        assert!(msg("hello").contains("not a Magic Folder invite code"));
        assert!(msg("mf-invite-v9:xyz").contains("another version"));
        assert!(msg("mf-invite-v1:xyz").contains("another version"));
        assert!(msg("mf-invite-v2:xyz").contains("another version"));
        assert!(msg("mf-invite-v3:!!!").contains("damaged"));
        assert!(msg("mf-invite-v3:").contains("damaged"));
        let mut json_only = b"{}".to_vec();
        json_only.extend_from_slice(&invite_check(b"{}"));
        assert!(msg(&format!(
            "{INVITE_PREFIX}{}",
            BASE64URL_NOPAD.encode(&json_only)
        ))
        .contains("damaged"));
        // One character changed anywhere, even inside the secret: caught.
        let good = code().encode();
        for i in [INVITE_PREFIX.len() + 3, good.len() / 2, good.len() - 8] {
            let mut bytes = good.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let edited = String::from_utf8(bytes).unwrap();
            assert!(msg(&edited).contains("damaged"), "{i}: {}", msg(&edited));
        }
        let mut c = code();
        c.collective = Capability::parse("URI:MF-DIR:abc").unwrap();
        assert!(msg(&c.encode()).contains("read capability"));
        let mut c = code();
        c.reply = Capability::parse("URI:MF-DIR-RO:abc:def").unwrap();
        assert!(msg(&c.encode()).contains("reply slot"));
        let mut c = code();
        c.participant = "bad name".into();
        assert!(msg(&c.encode()).contains("invalid"));
    }
}
