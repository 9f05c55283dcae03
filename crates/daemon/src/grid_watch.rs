//! Hearing about the other participants' changes as they happen, on an
//! embedded grid.
//!
//! Every participant publishes by linking a new version file into its
//! directory's folder under `<grid>/mutable/` (see `mf_grid::embedded`), so
//! where the grid directory is on a local filesystem, inotify on that folder
//! says "something was published" the moment it is: the folder loop then
//! polls at once instead of at its next interval (on average half an
//! interval later). Polling an unchanged directory costs a `readdir` and a
//! `stat`, so a poll for an event that was our own publish, or a prune, is
//! cheap. The periodic poll goes on all the same: on a network or removable
//! filesystem inotify does not see other machines' writes, and an event
//! lost for any reason costs at most one interval.
//!
//! Our own publishes are left out (a bulk upload publishes every fraction
//! of a second), and events are coalesced into a channel of capacity one:
//! however many arrive, at most one poll is waiting.
//!
//! Where the grid is on a local filesystem ([`filesystem`]), every publish
//! is heard, so the periodic poll is only a safety net and runs at most
//! every [`WATCHED_POLL`]: an idle daemon then costs almost nothing. On a
//! network or FUSE filesystem, other machines' writes make no event here,
//! so the configured interval stays.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// The periodic poll of a grid on a local filesystem, whose publishes are
/// all heard as they happen.
pub const WATCHED_POLL: Duration = Duration::from_secs(30);

/// Filesystem types whose files other machines write: inotify does not see
/// those writes. (FUSE, `fuse.*`, is counted among them: sshfs, rclone and
/// the like are network filesystems in disguise.)
const REMOTE_FILESYSTEMS: &[&str] = &[
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "smbfs",
    "ncpfs",
    "9p",
    "afs",
    "ceph",
    "glusterfs",
    "gfs2",
    "ocfs2",
    "lustre",
    "beegfs",
    "gpfs",
    "fuse",
    "fuseblk",
    "davfs",
];

/// Where `path` lives: its filesystem's type (as `/proc/self/mountinfo`
/// names it) and whether that is a local one, on which inotify hears every
/// write. `None` when it cannot be told (not Linux, no such path).
pub fn filesystem(path: &Path) -> Option<(String, bool)> {
    let path = std::fs::canonicalize(path).ok()?;
    let table = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let fstype = mount_of(&table, &path)?;
    let remote = REMOTE_FILESYSTEMS.contains(&fstype) || fstype.starts_with("fuse.");
    Some((fstype.to_owned(), !remote))
}

/// The filesystem type of the innermost mount holding `path`, from the text
/// of a `mountinfo` table (`proc(5)`: the fifth field is the mount point,
/// with spaces and the like octal-escaped; the type follows the ` - `).
fn mount_of<'t>(table: &'t str, path: &Path) -> Option<&'t str> {
    let mut best: Option<(usize, &str)> = None;
    for line in table.lines() {
        let (mount, rest) = match line.split_once(" - ") {
            Some((head, rest)) => (head.split(' ').nth(4), rest),
            None => continue,
        };
        let (Some(mount), Some(fstype)) = (mount, rest.split(' ').next()) else {
            continue;
        };
        let mount = unescape_octal(mount);
        if path.starts_with(&mount) && best.is_none_or(|(len, _)| mount.len() >= len) {
            best = Some((mount.len(), fstype));
        }
    }
    best.map(|(_, fstype)| fstype)
}

/// Undoes mountinfo's `\ooo` escapes (of space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Watches the mutable directories of the embedded grid at `grid_dir`;
/// sends `()` on `tx` (dropping it if one is already waiting) whenever a
/// version may have been published in one other than `ours` (our personal
/// directory's versions). Dropping the watcher stops it.
pub fn watch(
    grid_dir: &Path,
    ours: Option<PathBuf>,
    tx: mpsc::Sender<()>,
) -> notify::Result<RecommendedWatcher> {
    let mutable: PathBuf = grid_dir.join("mutable");
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let published = match event {
            // A version file linked into place, or (rarely) a new directory.
            Ok(e) => {
                matches!(e.kind, EventKind::Create(_) | EventKind::Modify(_))
                    && !e
                        .paths
                        .iter()
                        .all(|p| ours.as_ref().is_some_and(|o| p.starts_with(o)))
            }
            // Lost track (queue overflow): a poll finds out what changed.
            Err(_) => true,
        };
        if published {
            let _ = tx.try_send(());
        }
    })?;
    watcher.watch(&mutable, RecursiveMode::Recursive)?;
    Ok(watcher)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_innermost_mount_names_the_filesystem() {
        let table = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:40 / /mnt/nas rw,relatime shared:9 - nfs4 server:/export rw
31 30 0:41 / /mnt/nas/local\\040disk rw shared:10 - xfs /dev/sdb1 rw
32 22 0:42 / /home/u/remote rw shared:11 - fuse.sshfs u@h:/ rw
";
        let at = |p: &str| mount_of(table, Path::new(p));
        assert_eq!(at("/home/u/grid"), Some("ext4"));
        assert_eq!(at("/mnt/nas/grid"), Some("nfs4"));
        assert_eq!(at("/mnt/nas/local disk/grid"), Some("xfs"));
        assert_eq!(
            at("/mnt/nasty"),
            Some("ext4"),
            "a prefix of the name is no mount"
        );
        assert_eq!(at("/home/u/remote/grid"), Some("fuse.sshfs"));
        // This machine's own temporary directory is on some filesystem.
        let (_, _local) = filesystem(&std::env::temp_dir()).expect("mountinfo is readable");
    }

    #[tokio::test]
    async fn a_published_version_is_heard_and_coalesced() {
        let grid = tempfile::tempdir().unwrap();
        let dir = grid.path().join("mutable").join("SOMEDIR");
        std::fs::create_dir_all(&dir).unwrap();
        let (tx, mut rx) = mpsc::channel(1);
        let ours = grid.path().join("mutable").join("OURS");
        std::fs::create_dir_all(&ours).unwrap();
        let _w = watch(grid.path(), Some(ours.clone()), tx).unwrap();
        // Our own publish is not news. (A slow machine could only make
        // this pass without proving much, never fail.)
        std::fs::write(ours.join(format!("{:020}", 1)), b"ours").unwrap();
        let quiet = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
        assert!(quiet.is_err(), "our own publish woke the poll");
        for seq in 1..=5 {
            std::fs::write(dir.join(format!("{seq:020}")), b"version").unwrap();
        }
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("heard within a minute")
            .expect("the watcher is alive");
        // Five publishes are at most one waiting poll (plus any sent after
        // the first was taken), never five queued.
        assert!(rx.len() <= 1);
    }
}
