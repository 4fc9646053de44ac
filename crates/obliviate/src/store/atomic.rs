//! Crash-safe file writes and the failpoints that prove them.
//!
//! Every file obliviate writes goes through [`write_file`] (a temporary sibling is written and
//! fsynced, renamed over the target, and the folder is fsynced: a crash leaves either the old
//! file or the new one), or, for a name no committed document references yet, through
//! [`write_unsynced`] and then [`sync_contents`] and [`sync_folders`] before the document that
//! references it; a fork names its source's files through [`link`].
//! Failpoints fire just before and just after each write, so tests can stop an operation at
//! every write and check what is left.

use std::cell::RefCell;
use std::io::Write;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

thread_local! {
    static ARMED: RefCell<Option<Armed>> = const { RefCell::new(None) };
}

struct Armed {
    prefix: String,
    left: u64,
    /// Fail with this OS error (e.g. 28, ENOSPC) instead of [`Error::Failpoint`].
    errno: Option<i32>,
}

/// Arms a failpoint on this thread: the `nth` (1-based) event whose name starts with `prefix`
/// returns [`Error::Failpoint`] instead of proceeding. Events are `write:before:<file>` and
/// `write:after:<file>`, plus named points such as `train:block-written`.
pub fn arm(prefix: &str, nth: u64) {
    ARMED.with(|a| {
        *a.borrow_mut() = Some(Armed {
            prefix: prefix.to_string(),
            left: nth.max(1),
            errno: None,
        })
    });
}

/// Like [`arm`], but the event fails with OS error `errno` as the real system call would
/// (28 = ENOSPC, a full disk). Data writes report `write:data:<file>` events.
pub fn arm_errno(prefix: &str, nth: u64, errno: i32) {
    ARMED.with(|a| {
        *a.borrow_mut() = Some(Armed {
            prefix: prefix.to_string(),
            left: nth.max(1),
            errno: Some(errno),
        })
    });
}

/// Disarms this thread's failpoint; returns true if it was still armed (never fired).
pub fn disarm() -> bool {
    ARMED.with(|a| a.borrow_mut().take().is_some())
}

/// Reports an event; fails if an armed failpoint matches. `OBLIVIATE_FAILPOINT=prefix:n` in the
/// environment aborts the whole process at that event instead (a simulated `kill -9`).
pub fn hit(event: &str) -> Result<()> {
    let fire = ARMED.with(|a| {
        let mut a = a.borrow_mut();
        match a.as_mut() {
            Some(armed) if event.starts_with(armed.prefix.as_str()) => {
                armed.left -= 1;
                if armed.left == 0 {
                    let errno = armed.errno;
                    *a = None;
                    Some(errno)
                } else {
                    None
                }
            }
            _ => None,
        }
    });
    match fire {
        Some(Some(errno)) => {
            return Err(Error::Io {
                path: event.into(),
                cause: std::io::Error::from_raw_os_error(errno),
            });
        }
        Some(None) => return Err(Error::Failpoint(event.to_string())),
        None => {}
    }
    if let Some(spec) = env_failpoint() {
        let (prefix, n) = spec;
        if event.starts_with(prefix.as_str()) {
            let count = ENV_COUNT.with(|c| {
                *c.borrow_mut() += 1;
                *c.borrow()
            });
            if count == n {
                eprintln!("obliviate: failpoint {event} reached, aborting (OBLIVIATE_FAILPOINT)");
                std::process::abort();
            }
        }
    }
    Ok(())
}

thread_local! {
    static ENV_COUNT: RefCell<u64> = const { RefCell::new(0) };
}

fn env_failpoint() -> Option<(String, u64)> {
    let v = std::env::var("OBLIVIATE_FAILPOINT").ok()?;
    let (p, n) = v.rsplit_once(':').unwrap_or((v.as_str(), "1"));
    Some((p.to_string(), n.parse().unwrap_or(1)))
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = temporary(path);
    create(&tmp, &name, bytes, true)?;
    hit(&format!("write:before:{name}"))?;
    std::fs::rename(&tmp, path).at(path)?;
    sync_dir(dir)?;
    hit(&format!("write:after:{name}"))?;
    Ok(())
}

/// Writes `bytes` as a new file at `path` without syncing it: for files no manifest references
/// yet (the next generation's), which [`sync_contents`] and [`sync_folders`] make durable
/// together before the manifest that references them is written. No temporary and no rename: until that manifest commits,
/// a torn file is an unreferenced one, which the next writer collects.
pub fn write_unsynced(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    hit(&format!("write:before:{name}"))?;
    create(path, &name, bytes, false)?;
    hit(&format!("write:after:{name}"))
}

/// Makes `to` a second name of the file at `from` (a fork sharing its source's immutable
/// files), reporting the `link:{name}` event; the caller makes `to`'s folder durable.
pub fn link(from: &Path, to: &Path) -> Result<()> {
    let name = to
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    hit(&format!("link:{name}"))?;
    std::fs::hard_link(from, to).at(to)
}

/// Creates `path` holding `bytes` (fsynced when `sync`), reporting the `write:data:{name}`
/// event; on failure removes what it wrote (a full disk must not stay full). The file is
/// always a new inode: a name left at `path` (an interrupted commit's leftover, which may be
/// a link another run shares) is unlinked first, never written through.
fn create(path: &Path, name: &str, bytes: &[u8], sync: bool) -> Result<()> {
    let result = (|| {
        let new = || {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
        };
        let mut f = match new() {
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                std::fs::remove_file(path).at(path)?;
                new()
            }
            other => other,
        }
        .at(path)?;
        hit(&format!("write:data:{name}")).map_err(|e| match e {
            Error::Io { cause, .. } => Error::Io {
                path: path.to_path_buf(),
                cause,
            },
            other => other,
        })?;
        f.write_all(bytes).at(path)?;
        if sync {
            f.sync_all().at(path)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Fsyncs each file of `paths` written by [`write_unsynced`] (not their folders: see
/// [`sync_folders`], once for all of them: one journal commit per file instead of two, and no
/// renames).
pub fn sync_contents(paths: &[std::path::PathBuf]) -> Result<()> {
    paths
        .iter()
        .try_for_each(|p| std::fs::File::open(p).and_then(|f| f.sync_all()).at(p))
}

/// Fsyncs each folder holding one of `paths` once, so their names are durable.
pub fn sync_folders(paths: &[std::path::PathBuf]) -> Result<()> {
    let dirs: std::collections::BTreeSet<&Path> = paths
        .iter()
        .map(|p| {
            p.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."))
        })
        .collect();
    dirs.into_iter().try_for_each(sync_dir)
}

/// The temporary sibling [`write_file`] uses for `path`.
pub fn temporary(path: &Path) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Moves a file another writer produced at `tmp` (a sibling of `path`) into place durably:
/// fsync, rename over `path`, fsync the folder. On failure the temporary is removed.
pub fn persist(tmp: &Path, path: &Path) -> Result<()> {
    let done = std::fs::File::open(tmp)
        .and_then(|f| f.sync_all())
        .at(tmp)
        .and_then(|()| std::fs::rename(tmp, path).at(path));
    if done.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    done?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    sync_dir(dir)
}

/// fsyncs a directory so a rename in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .at(dir)?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoint_before_rename_keeps_old_content() {
        let dir = std::env::temp_dir().join(format!("obl-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.txt");
        write_file(&p, b"old").unwrap();
        arm("write:before:f.txt", 1);
        assert!(matches!(write_file(&p, b"new"), Err(Error::Failpoint(_))));
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        arm("write:after:f.txt", 1);
        assert!(write_file(&p, b"new").is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(!disarm());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_new_file_never_writes_through_a_name_another_run_shares() {
        let dir = std::env::temp_dir().join(format!("obl-atomic-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (shared, here) = (dir.join("shared"), dir.join("here"));
        write_file(&shared, b"committed elsewhere").unwrap();
        link(&shared, &here).unwrap();
        write_unsynced(&here, b"new").unwrap();
        assert_eq!(std::fs::read(&shared).unwrap(), b"committed elsewhere");
        assert_eq!(std::fs::read(&here).unwrap(), b"new");
        // A leftover temporary that is a shared link.
        let target = dir.join("target");
        link(&shared, &temporary(&target)).unwrap();
        write_file(&target, b"renamed over").unwrap();
        assert_eq!(std::fs::read(&shared).unwrap(), b"committed elsewhere");
        assert_eq!(std::fs::read(&target).unwrap(), b"renamed over");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unwritable_target_is_a_named_error() {
        let e = write_file(Path::new("/proc/obliviate-cannot-write/x"), b"x").unwrap_err();
        assert!(
            e.to_string().contains("/proc/obliviate-cannot-write"),
            "{e}"
        );
    }
}
