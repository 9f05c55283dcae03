//! Per-folder ignore rules: which local paths are neither uploaded nor
//! downloaded.
//!
//! The rules live in `<root>/.magic-folder-ignore` ([`IGNORE_FILE`]). The file
//! is synced like any other file, so every participant normally shares the
//! same rules; a participant may still edit its copy (the edit then syncs).
//! When it changes, reload it with [`IgnoreRules::load`] and hand the new
//! rules to the executor and the watcher (`set_ignore` on both), then rescan.
//!
//! # Syntax
//!
//! One pattern per line, matched against the `/`-separated path relative to
//! the folder root:
//!
//! * blank lines are skipped; a line starting with `#` is a comment (write
//!   `\#` for a pattern that starts with `#`); trailing spaces and `\r` are
//!   stripped;
//! * `*` and `?` match within one path segment only (they never match `/`);
//!   `**` matches any number of segments; `[abc]` and `{a,b}` work as usual;
//!   `\` escapes the next character;
//! * a pattern **without** `/` matches a name at any depth (`*.tmp` matches
//!   `a.tmp` and `x/y/a.tmp`);
//! * a pattern with a `/` is anchored at the root (`docs/*.bak`), and a
//!   leading `/` anchors a pattern explicitly (`/build` only at the top);
//! * a trailing `/` makes the pattern match directories only (`cache/`);
//! * `!` in front negates: a path matching it is *not* ignored;
//! * the **first** matching line decides, as in Syncthing's `.stignore`
//!   (not the last, as in `.gitignore`): put exceptions *before* the broad
//!   rule (`!keep.log` then `*.log`);
//! * a path inside an ignored directory is ignored too, whatever later or
//!   negated lines say: the scanner does not even descend into it.
//!
//! Besides the user's rules, this program's own files are always ignored:
//! the bookkeeping directory `.magic-folder/` and temporary files
//! (`.mf-tmp-*`), see [`RelPath::is_internal`]. Conflict copies
//! (`<path>.conflict-<participant>`) are "internal" in the sense that they are
//! never uploaded, but they are still **reported** by the scanner and the
//! watcher, because the engine needs to see them appear and disappear to know
//! when the user resolved a conflict; user rules do not hide them either.
//!
//! A malformed pattern is an error (with its line number) rather than being
//! skipped: a typo silently ignored could upload something the user wanted
//! kept private.

use std::fmt;
use std::path::Path;

use globset::{Candidate, GlobBuilder, GlobMatcher, GlobSet, GlobSetBuilder};
use mf_core::relpath::{RelPath, CONFLICT_MARKER, META_DIR, TEMP_PREFIX};

/// Name of the ignore file at the root of a folder.
pub const IGNORE_FILE: &str = ".magic-folder-ignore";

/// Largest ignore file accepted, in bytes.
pub const MAX_IGNORE_FILE_BYTES: u64 = 1 << 20;

/// A malformed ignore file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IgnoreError {
    /// A line is not a valid glob.
    #[error("{IGNORE_FILE} line {line}: bad pattern {pattern:?}: {reason}")]
    BadPattern {
        /// 1-based line number.
        line: usize,
        /// The pattern as written.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file could not be read.
    #[error("cannot read {IGNORE_FILE}: {0}")]
    Read(String),
}

/// One parsed line.
#[derive(Clone, Debug)]
struct Rule {
    matcher: GlobMatcher,
    negate: bool,
    dir_only: bool,
}

/// An ordered list of ignore patterns; the first match decides.
///
/// Compiled once; share it behind an `Arc` where many holders need it.
#[derive(Clone, Default)]
pub struct IgnoreRules {
    rules: Vec<Rule>,
    /// All patterns in one set: a fast "does anything match at all?" filter,
    /// so the common no-match case costs one set lookup.
    set: GlobSet,
    /// The lines that produced `rules`, for display.
    lines: Vec<String>,
}

impl fmt::Debug for IgnoreRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IgnoreRules")
            .field("patterns", &self.lines)
            .finish()
    }
}

impl IgnoreRules {
    /// No user rules (only the built-in internal paths are ignored).
    pub fn empty() -> IgnoreRules {
        IgnoreRules::default()
    }

    /// Parses the text of an ignore file (syntax in the module docs).
    pub fn parse(text: &str) -> Result<IgnoreRules, IgnoreError> {
        let mut rules = Vec::new();
        let mut lines = Vec::new();
        let mut set = GlobSetBuilder::new();
        for (idx, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches(['\r', ' ', '\t']);
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |reason: String| IgnoreError::BadPattern {
                line: idx + 1,
                pattern: line.to_owned(),
                reason,
            };
            let (negate, mut pat) = match line.strip_prefix('!') {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let dir_only = pat.ends_with('/') && !pat.ends_with("\\/");
            if dir_only {
                pat = pat.trim_end_matches('/');
            }
            let glob_text = if let Some(anchored) = pat.strip_prefix('/') {
                anchored.to_owned()
            } else if pat.contains('/') {
                pat.to_owned()
            } else {
                format!("**/{pat}")
            };
            if glob_text.is_empty() || glob_text == "**/" {
                return Err(bad("empty pattern".into()));
            }
            let glob = GlobBuilder::new(&glob_text)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map_err(|e| bad(e.kind().to_string()))?;
            set.add(glob.clone());
            rules.push(Rule {
                matcher: glob.compile_matcher(),
                negate,
                dir_only,
            });
            lines.push(line.to_owned());
        }
        let set = set.build().map_err(|e| IgnoreError::BadPattern {
            line: 0,
            pattern: String::new(),
            reason: e.to_string(),
        })?;
        Ok(IgnoreRules { rules, set, lines })
    }

    /// Reads `<root>/.magic-folder-ignore`; a missing file means no rules.
    /// Anything but a regular file there (a symlink, a directory) is an error.
    pub fn load(root: &Path) -> Result<IgnoreRules, IgnoreError> {
        let path = root.join(IGNORE_FILE);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(IgnoreRules::empty()),
            Err(e) => return Err(IgnoreError::Read(e.to_string())),
        };
        if !meta.file_type().is_file() {
            return Err(IgnoreError::Read("not a regular file".into()));
        }
        if meta.len() > MAX_IGNORE_FILE_BYTES {
            return Err(IgnoreError::Read(format!(
                "{} bytes, more than the {MAX_IGNORE_FILE_BYTES} allowed",
                meta.len()
            )));
        }
        let bytes = std::fs::read(&path).map_err(|e| IgnoreError::Read(e.to_string()))?;
        let text = String::from_utf8(bytes).map_err(|_| IgnoreError::Read("not UTF-8".into()))?;
        IgnoreRules::parse(&text)
    }

    /// True when there are no user rules.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The pattern lines in effect, in order.
    pub fn patterns(&self) -> &[String] {
        &self.lines
    }

    /// The user rules' verdict on `path` itself (ancestors not considered):
    /// `Some(true)` ignored, `Some(false)` explicitly kept by a `!` line,
    /// `None` no line matched.
    pub fn rule_verdict(&self, path: &str, is_dir: bool) -> Option<bool> {
        if self.rules.is_empty() {
            return None;
        }
        let cand = Candidate::from_bytes(path.as_bytes());
        if !self.set.is_match_candidate(&cand) {
            return None;
        }
        self.rules
            .iter()
            .find(|r| (is_dir || !r.dir_only) && r.matcher.is_match_candidate(&cand))
            .map(|r| !r.negate)
    }

    /// How the scanner or watcher treats the entry `path`, judging the entry
    /// alone, not its ancestors (for walkers that never descend into an
    /// ignored directory). `path` is a valid relative path.
    pub fn entry_verdict(&self, path: &str, is_dir: bool) -> Verdict {
        let name = path.rsplit('/').next().unwrap_or(path);
        if name.starts_with(TEMP_PREFIX) || path == META_DIR {
            return Verdict::Internal;
        }
        if is_conflict_copy_name(name) {
            return Verdict::Sync;
        }
        if self.rule_verdict(path, is_dir) == Some(true) {
            Verdict::Ignored
        } else {
            Verdict::Sync
        }
    }

    /// True unless [`IgnoreRules::entry_verdict`] is [`Verdict::Sync`].
    pub fn skip_entry(&self, path: &str, is_dir: bool) -> bool {
        self.entry_verdict(path, is_dir) != Verdict::Sync
    }

    /// Whether `path` is left out of syncing: an internal path (except
    /// conflict copies, which are reported), inside an ignored directory, or
    /// ignored itself. `is_dir` says whether `path` itself is a directory.
    pub fn is_ignored(&self, path: &RelPath, is_dir: bool) -> bool {
        let s = path.as_str();
        if s == META_DIR
            || (s.starts_with(META_DIR) && s.as_bytes().get(META_DIR.len()) == Some(&b'/'))
        {
            return true;
        }
        let mut end = 0;
        for seg in path.segments() {
            end += seg.len();
            let last = end == s.len();
            if self.skip_entry(&s[..end], if last { is_dir } else { true }) {
                return true;
            }
            end += 1;
        }
        false
    }
}

/// What to do with one entry found on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Report it (including conflict copies).
    Sync,
    /// Our own bookkeeping (`.magic-folder/`, `.mf-tmp-*`): leave it out silently.
    Internal,
    /// Excluded by a user rule: leave it out, but report it as *skipped* so
    /// nothing at or below it is taken for deleted.
    Ignored,
}

/// True if a file name has the shape of a conflict copy (`<name>.conflict-<who>`).
fn is_conflict_copy_name(name: &str) -> bool {
    match name.rfind(CONFLICT_MARKER) {
        Some(idx) => {
            let who = &name[idx + CONFLICT_MARKER.len()..];
            idx > 0 && !who.is_empty() && !who.contains('.')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> RelPath {
        RelPath::new(s).unwrap()
    }

    /// (rules, path, is_dir, ignored?)
    #[test]
    fn table() {
        let cases: &[(&str, &str, bool, bool)] = &[
            // A pattern without '/' matches a name at any depth.
            ("*.tmp", "a.tmp", false, true),
            ("*.tmp", "x/y/a.tmp", false, true),
            ("*.tmp", "a.tmpx", false, false),
            // '*' never crosses '/'.
            ("docs/*.bak", "docs/a.bak", false, true),
            ("docs/*.bak", "docs/sub/a.bak", false, false),
            ("docs/**/*.bak", "docs/sub/a.bak", false, true),
            // A pattern with '/' is anchored at the root.
            ("docs/*.bak", "x/docs/a.bak", false, false),
            // A leading '/' anchors.
            ("/build", "build", true, true),
            ("/build", "src/build", true, false),
            ("build", "src/build", true, true),
            // Contents of an ignored directory are ignored.
            ("build", "build/out/x.o", false, true),
            ("/build", "build/out/x.o", false, true),
            // Trailing '/' = directories only.
            ("cache/", "cache", true, true),
            ("cache/", "cache", false, false),
            ("cache/", "a/cache/f", false, true),
            // First match wins: an exception before the rule keeps the file...
            ("!keep.log\n*.log", "keep.log", false, false),
            ("!keep.log\n*.log", "other.log", false, true),
            // ...but after it, the broad rule already decided.
            ("*.log\n!keep.log", "keep.log", false, true),
            // A negation cannot re-include a file inside an ignored directory.
            ("!secret/keep\nsecret", "secret/keep", false, true),
            // Comments, blank lines, CRLF, trailing spaces.
            ("# comment\n\n*.o  \r\n", "a.o", false, true),
            ("# *.o", "a.o", false, false),
            ("\\#x", "#x", false, true),
            // Odd names.
            ("@*", "dir/@metadata", false, true),
            ("ünï*", "a/ünïcødé", false, true),
            ("a b", "x/a b", false, true),
            ("?", "ab", false, false),
            ("?", "a", false, true),
            // No rules.
            ("", "anything", false, false),
        ];
        for (rules, path, is_dir, want) in cases {
            let r = IgnoreRules::parse(rules).unwrap();
            assert_eq!(
                r.is_ignored(&p(path), *is_dir),
                *want,
                "rules {rules:?} path {path:?}"
            );
        }
    }

    #[test]
    fn internal_paths_always_ignored_but_conflict_copies_reported() {
        let r = IgnoreRules::empty();
        assert!(r.is_ignored(&p(".magic-folder"), true));
        assert!(r.is_ignored(&p(".magic-folder/versions/a.1"), false));
        assert!(r.is_ignored(&p("a/.mf-tmp-xyz"), false));
        assert!(r.is_ignored(&p(".mf-tmp-d/x"), false));
        assert!(
            !r.is_ignored(&p("sub/.magic-folder"), true),
            "only the root's is ours"
        );
        assert!(!r.is_ignored(&p(".magic-folderx"), false));
        assert!(
            !r.is_ignored(&p(IGNORE_FILE), false),
            "the ignore file itself syncs"
        );
        // Conflict copies stay visible, even when a user rule would match them.
        let r = IgnoreRules::parse("*.conflict-*\n*.txt").unwrap();
        assert!(!r.is_ignored(&p("a.txt.conflict-bob"), false));
        assert!(r.is_ignored(&p("a.txt"), false));
        // ...but not inside an ignored directory.
        let r = IgnoreRules::parse("build").unwrap();
        assert!(r.is_ignored(&p("build/a.conflict-bob"), false));
    }

    #[test]
    fn bad_patterns_are_errors_with_line_numbers() {
        let e = IgnoreRules::parse("ok\n[unclosed").unwrap_err();
        assert!(matches!(e, IgnoreError::BadPattern { line: 2, .. }), "{e}");
        assert!(IgnoreRules::parse("/").is_err());
        assert!(IgnoreRules::parse("!").is_err());
    }

    #[test]
    fn load_missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(IgnoreRules::load(dir.path()).unwrap().is_empty());
        std::fs::write(dir.path().join(IGNORE_FILE), "*.o\n").unwrap();
        let r = IgnoreRules::load(dir.path()).unwrap();
        assert_eq!(r.patterns(), ["*.o"]);
    }
}
