//! Invites over Magic Wormhole in magic-folder 24.3's `invite-v1`
//! protocol, so that our `join` accepts a 24.3 invite and 24.3's `join`
//! accepts ours.
//!
//! Only small messages cross the wormhole (no transit), under the
//! application id [`APPID`], after each side checks that the other's
//! versions list `invite-v1`:
//!
//! 1. the inviter sends `join-folder`: the collective's **read**
//!    capability, the participant name and the mode;
//! 2. the invitee makes its own personal directory and answers
//!    `join-folder-accept` with that directory's **read** capability (or
//!    `join-folder-reject` with a reason);
//! 3. the inviter links it into the collective and answers
//!    `join-folder-ack` (`success` true, or false with the error).
//!
//! Only read capabilities cross, so the inviter never holds the invitee's
//! write capability, and a wormhole code works once: the mailbox server
//! hands each code's mailbox to two sides, and the PAKE makes a guessed or
//! overheard code fail loudly for both. A code's life is the inviter's
//! wait; cancelling it (Ctrl-C) ends it.
//!
//! A wormhole invite carries no grid location: it is for folders on a
//! Tahoe-LAFS grid, which each side reaches through its own node. Folders
//! on the embedded grid use our own invite codes (`setup`).

use crate::chunked::ContentFormat;
use crate::format::FolderFormat;
use crate::pack::Snapshots;
use crate::personal::Layout;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use mf_core::relpath::check_participant_name;
use mf_grid::{read_only, CapKind, Capability, DirChildren, DirEntry, Grid, GridError, Replace};
use mf_wormhole::{Mailbox, Mood, Wormhole};
use serde_json::{json, Value};

use super::grid::AnyGrid;
use super::setup::{self, FolderInfo, JoinOptions};
use crate::config::{ConfigDir, GridLocation, Secret32};

/// magic-folder 24.3's application id for invites.
pub const APPID: &str = "private.storage/magic-folder/invites";

/// The public mailbox server 24.3 uses by default.
pub const DEFAULT_MAILBOX: &str = "ws://relay.magic-wormhole.io:4000/v1";

const PROTOCOL: &str = "invite-v1";

/// How long `join` waits for the inviter on a wormhole code by default
/// (for its first word, and for each after).
pub const DEFAULT_JOIN_WAIT: Duration = Duration::from_secs(60);

/// How long the inviter waits for the invitee's answer once they met (the
/// invitee makes its personal directory on the grid first).
const INVITEE_PATIENCE: Duration = Duration::from_secs(300);

/// Whether a participant may write (a personal directory in the collective)
/// or only read (an empty immutable directory there, as 24.3 records one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Reads and writes.
    ReadWrite,
    /// Only reads.
    ReadOnly,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::ReadWrite => "read-write",
            Mode::ReadOnly => "read-only",
        }
    }
}

/// True if `code` has the shape of a wormhole code (`7-guitarist-revenge`).
pub fn is_wormhole_code(code: &str) -> bool {
    let code = code.trim();
    code.split_once('-').is_some_and(|(nameplate, words)| {
        !nameplate.is_empty() && nameplate.bytes().all(|b| b.is_ascii_digit()) && !words.is_empty()
    })
}

/// Our versions: 24.3's, and the folder formats we know: personal-directory
/// layouts, content formats and snapshot storage (24.3 sends none: it knows
/// only the flat layout, whole contents and single snapshots).
fn our_versions() -> Value {
    json!({"magic-folder": {
        "supported-messages": [PROTOCOL],
        "layouts": ["flat", "sharded"],
        "contents": ["whole", "chunked"],
        "snapshots": ["single", "packed"],
    }})
}

/// What in a folder of `format` the other side cannot read or write, if
/// anything.
fn unknown_part(theirs: &Value, format: FolderFormat) -> Option<String> {
    let knows = |key: &str, value: String| {
        theirs
            .get("magic-folder")
            .and_then(|m| m.get(key))
            .and_then(Value::as_array)
            .is_some_and(|l| l.iter().any(|v| v.as_str() == Some(&value)))
    };
    if format.layout != Layout::Flat && !knows("layouts", format.layout.to_string()) {
        return Some(format!("{} layout", format.layout));
    }
    if format.content != ContentFormat::Whole && !knows("contents", format.content.to_string()) {
        return Some(format!("{} contents", format.content));
    }
    if format.snapshots != Snapshots::Single && !knows("snapshots", format.snapshots.to_string()) {
        return Some(format!("{} snapshots", format.snapshots));
    }
    None
}

/// 24.3's check of the other side's versions.
fn check_versions(theirs: &Value) -> anyhow::Result<()> {
    let speaks = theirs
        .get("magic-folder")
        .and_then(|m| m.get("supported-messages"))
        .and_then(Value::as_array)
        .is_some_and(|m| m.iter().any(|v| v == PROTOCOL));
    if speaks {
        Ok(())
    } else {
        bail!("the other side of the wormhole is not a magic-folder that speaks {PROTOCOL}")
    }
}

fn field<'a>(msg: &'a Value, key: &str) -> Option<&'a str> {
    msg.get(key).and_then(Value::as_str)
}

/// An invite whose code is known and whose invitee has not answered yet.
pub struct PendingInvite {
    /// The wormhole code to give the invitee (secret until used).
    pub code: String,
    wormhole: mf_wormhole::Pending,
    admission: Admission,
}

/// What the inviter needs to admit the invitee.
struct Admission {
    grid: AnyGrid,
    collective: Capability,
    folder: String,
    participant: String,
    mode: Mode,
    /// The folder's format, which the invitee must know.
    format: FolderFormat,
}

/// What a completed invite did.
#[derive(Clone, Debug, serde::Serialize)]
pub struct InviteDone {
    /// The folder.
    pub folder: String,
    /// The participant now in its collective.
    pub participant: String,
    /// Their mode (a read-write invite answered without a personal
    /// directory is downgraded to read-only, as 24.3 does).
    pub mode: Mode,
}

/// Starts a wormhole invite of `participant` to `folder` (we must be its
/// admin): allocates the code and returns it before the invitee arrives.
pub async fn start_invite(
    config: &ConfigDir,
    folder: &str,
    participant: &str,
    mode: Mode,
    mailbox: &str,
) -> anyhow::Result<PendingInvite> {
    let (cfg, grid) = setup::inviting(config, folder, participant).await?;
    if !matches!(cfg.grid, GridLocation::Tahoe { .. }) {
        bail!("a wormhole invite is for a folder on a Tahoe-LAFS grid; {folder:?} is on the embedded grid (use `magic-folder invite` without --wormhole)");
    }
    let (mailbox, _welcome) = Mailbox::connect(mailbox, APPID).await.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "cannot reach the wormhole mailbox server {mailbox}"
        ))
    })?;
    let (code, wormhole) = mailbox
        .allocate_code(2)
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot get a wormhole code"))?;
    let format = cfg.format();
    Ok(PendingInvite {
        code,
        wormhole,
        admission: Admission {
            grid,
            collective: cfg.collective_cap,
            folder: cfg.name,
            participant: participant.to_owned(),
            mode,
            format,
        },
    })
}

impl PendingInvite {
    /// Waits for the invitee and admits them: the three messages of the
    /// module docs.
    pub async fn complete(self) -> anyhow::Result<InviteDone> {
        let (mut wormhole, theirs) = self
            .wormhole
            .finish(our_versions())
            .await
            .map_err(|e| anyhow::Error::new(e).context("the invite failed"))?;
        match self.admission.admit(&mut wormhole, &theirs).await {
            Ok(done) => {
                let _ = wormhole.close(Mood::Happy).await;
                Ok(done)
            }
            Err(e) => {
                let _ = wormhole.close(Mood::Errory).await;
                Err(e)
            }
        }
    }
}

impl Admission {
    async fn admit(&self, wormhole: &mut Wormhole, theirs: &Value) -> anyhow::Result<InviteDone> {
        check_versions(theirs)?;
        // Read-only too: the invitee reads the others' directories. 24.3
        // waits for the folder's message whatever happens (a closed wormhole
        // leaves its `join` waiting forever), so a refusal reaches it as the
        // failed acknowledgement of its answer.
        let refusal = unknown_part(theirs, self.format).map(|part| {
            format!(
                "the invitee cannot read or write this folder's {part} (magic-folder 24.3 \
                 knows only the flat layout and whole contents); share a folder created \
                 with --layout flat"
            )
        });
        let collective = read_only(&self.collective)?;
        wormhole
            .send_json(&json!({
                "kind": "join-folder",
                "protocol": PROTOCOL,
                "folder-name": self.folder,
                "collective": collective.as_str(),
                "participant-name": self.participant,
                "mode": self.mode.as_str(),
            }))
            .map_err(|e| anyhow::Error::new(e).context("the invite failed"))?;
        let reply = from_peer(wormhole, INVITEE_PATIENCE, "the invitee did not answer").await?;
        if field(&reply, "protocol") != Some(PROTOCOL) {
            bail!("the invitee answered in another protocol than {PROTOCOL}");
        }
        if let Some(why) = refusal {
            let _ = wormhole.send_json(&json!({
                "kind": "join-folder-ack",
                "protocol": PROTOCOL,
                "error": why,
                "success": false,
            }));
            bail!(why);
        }
        let (personal, mode) = match field(&reply, "kind") {
            Some("join-folder-reject") => bail!(
                "the invitee declined: {}",
                field(&reply, "reject-reason").unwrap_or("no reason given")
            ),
            Some("join-folder-accept") => match field(&reply, "personal") {
                Some(_) if self.mode == Mode::ReadOnly => {
                    bail!("the invitee answered a read-only invite with a personal directory")
                }
                Some(cap) => {
                    let cap = Capability::parse(cap)
                        .ok()
                        .filter(|c| c.kind() == CapKind::MutableDirRead)
                        .ok_or_else(|| anyhow!("the invitee's personal directory is not a directory read capability"))?;
                    if cap.scheme() != self.collective.scheme() {
                        bail!("the invitee's personal directory is on another kind of grid");
                    }
                    (cap, Mode::ReadWrite)
                }
                // 24.3 downgrades a read-write invite answered without a
                // directory, and records a read-only member as an empty
                // immutable directory.
                None => (
                    self.grid
                        .create_immutable_dir(DirChildren::new())
                        .await
                        .context("recording a read-only participant")?,
                    Mode::ReadOnly,
                ),
            },
            _ => bail!("the invitee sent an unexpected message"),
        };
        let mut link = DirChildren::new();
        link.insert(self.participant.clone(), DirEntry::new(personal));
        if let Err(e) = self
            .grid
            .set_children(&self.collective, link, Replace::No)
            .await
        {
            let error = match e {
                GridError::Exists(_) => format!("{:?} is already a participant", self.participant),
                e => e.to_string(),
            };
            let _ = wormhole.send_json(&json!({
                "kind": "join-folder-ack",
                "protocol": PROTOCOL,
                "error": format!("Failed to add '{}' to collective: {error}", self.participant),
                "success": false,
            }));
            bail!(
                "cannot add {:?} to the collective: {error}",
                self.participant
            );
        }
        wormhole
            .send_json(&json!({
                "kind": "join-folder-ack",
                "protocol": PROTOCOL,
                "participant-name": self.participant,
                "success": true,
            }))
            .map_err(|e| {
                anyhow!(
                    "{:?} was added, but the wormhole failed before they heard: {e}",
                    self.participant
                )
            })?;
        Ok(InviteDone {
            folder: self.folder.clone(),
            participant: self.participant.clone(),
            mode,
        })
    }
}

/// `join` with a wormhole code: the invitee's half of the module docs.
/// The folder is configured before the accept is sent and removed again
/// if the inviter does not confirm.
pub async fn join(
    config: &ConfigDir,
    opts: JoinOptions,
    mailbox: &str,
) -> anyhow::Result<FolderInfo> {
    let location = match &opts.grid {
        Some(super::GridChoice::Tahoe(node)) => GridLocation::tahoe(node)?,
        _ => bail!("a wormhole invite is for a folder on a Tahoe-LAFS grid: give your node with --tahoe-node DIR"),
    };
    let name = opts
        .name
        .clone()
        .ok_or_else(|| anyhow!("give the folder a local name with --name"))?;
    let author = opts
        .author
        .clone()
        .ok_or_else(|| anyhow!("give your participant name with --author"))?;
    setup::check_new_names(config, &name, &author)?;
    // Before the code is used up: a code works once.
    let local_path = setup::prepare_local_dir(config, &opts.local_dir)?;
    let (mailbox, _welcome) = Mailbox::connect(mailbox, APPID).await.map_err(|e| {
        anyhow::Error::new(e).context(format!(
            "cannot reach the wormhole mailbox server {mailbox}"
        ))
    })?;
    let pending = mailbox
        .set_code(opts.code.trim())
        .await
        .map_err(|e| anyhow::Error::new(e).context("cannot use the wormhole code"))?;
    // The inviter waits before the code is handed out, so a code nobody
    // answers was mistyped in its number, used already, or its invite
    // ended: the mailbox server cannot tell us which, only the silence.
    let wait = opts.wait.unwrap_or(DEFAULT_JOIN_WAIT);
    let (mut wormhole, theirs) = tokio::time::timeout(wait, pending.finish(our_versions()))
        .await
        .map_err(|_| {
            anyhow!(
                "nobody answered on this code within {} s: it is mistyped, already used, or its \
                 invite was cancelled or has ended",
                wait.as_secs()
            )
        })?
        .map_err(|e| anyhow::Error::new(e).context("the invite failed"))?;
    let joining = Joining {
        opts: &opts,
        local_path,
        location,
        name: &name,
        author: &author,
    };
    let result = accept(config, &mut wormhole, &theirs, joining).await;
    let _ = wormhole
        .close(if result.is_ok() {
            Mood::Happy
        } else {
            Mood::Errory
        })
        .await;
    result
}

/// What the invitee decided before the wormhole opened.
struct Joining<'a> {
    opts: &'a JoinOptions,
    local_path: std::path::PathBuf,
    location: GridLocation,
    name: &'a str,
    author: &'a str,
}

async fn accept(
    config: &ConfigDir,
    wormhole: &mut Wormhole,
    theirs: &Value,
    j: Joining<'_>,
) -> anyhow::Result<FolderInfo> {
    check_versions(theirs)?;
    let wait = j.opts.wait.unwrap_or(DEFAULT_JOIN_WAIT);
    let invite = from_peer(wormhole, wait, "the inviter sent no invite").await?;
    if field(&invite, "kind") != Some("join-folder") || field(&invite, "protocol") != Some(PROTOCOL)
    {
        bail!("the other side sent something other than a {PROTOCOL} invite");
    }
    let collective = field(&invite, "collective")
        .and_then(|c| Capability::parse(c).ok())
        .filter(|c| c.kind() == CapKind::MutableDirRead)
        .ok_or_else(|| anyhow!("the invite's collective is not a directory read capability"))?;
    // Read-only, as 24.3 models it: we send no personal directory, and the
    // inviter records an empty immutable directory under our name. We keep
    // a personal directory of our own all the same (nobody reads it), so
    // the folder runs like any other; our changes reach no one.
    let read_only = match field(&invite, "mode") {
        Some("read-write") => j.opts.read_only,
        Some("read-only") => true,
        _ => bail!("the invite has no valid mode"),
    };
    // The name the inviter files us under; 24.3 uses the local author name
    // in snapshots either way.
    let participant = field(&invite, "participant-name")
        .filter(|p| check_participant_name(p).is_ok())
        .unwrap_or(j.author)
        .to_owned();
    let made = setup::join_by_capability(
        config,
        setup::Joined {
            name: j.name.to_owned(),
            local_path: j.local_path,
            location: j.location,
            tuning: j.opts.tuning.clone(),
            collective,
            participant,
            author: j.author.to_owned(),
            // A Tahoe node keeps its own convergence secret.
            convergence_secret: Secret32::random(),
        },
    )
    .await;
    let (info, personal) = match made {
        Ok(made) => made,
        Err(e) => {
            reject(wormhole, "Failed to create folder locally").await;
            return Err(e);
        }
    };
    let confirmed = async {
        let mut accept = json!({"kind": "join-folder-accept", "protocol": PROTOCOL});
        if !read_only {
            accept["personal"] = json!(personal.as_str());
        }
        wormhole
            .send_json(&accept)
            .map_err(|e| anyhow!("the wormhole failed before the inviter heard us: {e}"))?;
        let ack = from_peer(wormhole, wait, "the inviter did not confirm").await?;
        match ack.get("success").and_then(Value::as_bool) {
            Some(true) => Ok(()),
            Some(false) => Err(anyhow!(
                "the inviter could not add us: {}",
                field(&ack, "error").unwrap_or("no reason given")
            )),
            None => Err(anyhow!("the inviter's confirmation is malformed")),
        }
    }
    .await;
    if let Err(e) = confirmed {
        // Not a member: forget the folder again (its directory stays).
        let _ = config.remove_folder(j.name);
        return Err(e);
    }
    Ok(info)
}

/// The peer's next message. The mailbox server never says that a peer went
/// away, so a peer that stays silent for `patience` is taken for gone.
async fn from_peer(
    wormhole: &mut Wormhole,
    patience: Duration,
    what: &str,
) -> anyhow::Result<Value> {
    match tokio::time::timeout(patience, wormhole.receive_json()).await {
        Ok(Ok(msg)) => Ok(msg),
        Ok(Err(e)) => Err(anyhow!("{what}: {e}")),
        Err(_) => Err(anyhow!(
            "{what}: the other side went away mid-invite (silent for {} s)",
            patience.as_secs()
        )),
    }
}

async fn reject(wormhole: &mut Wormhole, reason: &str) {
    let _ = wormhole.send_json(&json!({
        "kind": "join-folder-reject",
        "protocol": PROTOCOL,
        "reject-reason": reason,
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wormhole_codes_are_told_from_ours() {
        assert!(is_wormhole_code("7-guitarist-revenge"));
        assert!(is_wormhole_code(" 12-a-b\n"));
        assert!(!is_wormhole_code("mf-invite-v2:abc"));
        assert!(!is_wormhole_code("-a-b"));
        assert!(!is_wormhole_code("7"));
        assert!(!is_wormhole_code("x7-a"));
    }

    #[test]
    fn a_folder_admits_only_who_knows_its_format() {
        let py = json!({"magic-folder": {"supported-messages": [PROTOCOL]}});
        let flat = FolderFormat::new(Layout::Flat, true);
        let sharded = FolderFormat::new(Layout::Sharded, true);
        assert_eq!(unknown_part(&py, flat), None);
        assert_eq!(
            unknown_part(&py, sharded).as_deref(),
            Some("sharded layout")
        );
        let chunked_flat = FolderFormat {
            content: ContentFormat::Chunked,
            ..flat
        };
        assert_eq!(
            unknown_part(&py, chunked_flat).as_deref(),
            Some("chunked contents")
        );
        // A release of ours from before packs knows layouts and contents.
        let before_packs = json!({"magic-folder": {
            "supported-messages": [PROTOCOL],
            "layouts": ["flat", "sharded"],
            "contents": ["whole", "chunked"],
        }});
        assert_eq!(
            unknown_part(&before_packs, sharded).as_deref(),
            Some("packed snapshots")
        );
        let single_chunked = FolderFormat {
            snapshots: Snapshots::Single,
            ..sharded
        };
        assert_eq!(unknown_part(&before_packs, single_chunked), None);
        for format in [flat, sharded, chunked_flat, single_chunked] {
            assert_eq!(unknown_part(&our_versions(), format), None);
        }
    }

    #[test]
    fn versions_must_speak_invite_v1() {
        assert!(check_versions(&our_versions()).is_ok());
        assert!(check_versions(&json!({})).is_err());
        assert!(
            check_versions(&json!({"magic-folder": {"supported-messages": ["invite-v2"]}}))
                .is_err()
        );
    }
}
