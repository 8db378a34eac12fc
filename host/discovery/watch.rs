//! The one file watcher of luahost (notify/inotify), used for the cluster
//! file (by every node, and by `luahost up`) and for the script folders (hot
//! reload).
//!
//! Folders are watched, not files, so that saves by rename are seen; an
//! editor's save is a burst of events, which [`next_burst`] gathers until
//! [`DEBOUNCE`] passes without another.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// Quiet time that ends a burst of events (measured: an edit is seen in
/// ~0.5 ms, a save by rename is a few events within a few ms).
pub const DEBOUNCE: Duration = Duration::from_millis(30);

/// A running watcher; dropping it stops watching.
pub struct Watch {
    _inner: notify::RecommendedWatcher,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watch")
    }
}

/// Watches `roots` (each recursively or not) and sends every changed path
/// that `accept` takes (access events are never sent).
///
/// # Errors
///
/// The watcher could not start, or a root could not be watched: the message
/// names it.
pub fn watch(
    roots: &[(PathBuf, bool)],
    accept: impl Fn(&Path, &EventKind) -> bool + Send + 'static,
    tx: UnboundedSender<PathBuf>,
) -> Result<Watch, String> {
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() {
            return;
        }
        for p in ev.paths {
            if accept(&p, &ev.kind) {
                let _ = tx.send(p);
            }
        }
    };
    let mut w = notify::recommended_watcher(handler).map_err(|e| format!("cannot start a file watcher: {e}"))?;
    for (root, recursive) in roots {
        let mode = if *recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        w.watch(root, mode)
            .map_err(|e| format!("cannot watch {}: {e}", root.display()))?;
    }
    Ok(Watch { _inner: w })
}

/// Watches one file (through its folder) and sends its path when it changes.
///
/// # Errors
///
/// As [`watch`].
pub fn watch_file(file: &Path, tx: UnboundedSender<PathBuf>) -> Result<Watch, String> {
    let name = file
        .file_name()
        .ok_or_else(|| format!("{} names no file", file.display()))?
        .to_os_string();
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    watch(&[(dir, false)], move |p, _| p.file_name() == Some(name.as_os_str()), tx)
}

/// Waits for the next burst of changes and returns its paths, sorted and
/// without duplicates; `None` once the watcher is gone.
pub async fn next_burst(rx: &mut UnboundedReceiver<PathBuf>) -> Option<Vec<PathBuf>> {
    let mut paths = vec![rx.recv().await?];
    while let Ok(Some(p)) = tokio::time::timeout(DEBOUNCE, rx.recv()).await {
        paths.push(p);
    }
    paths.sort();
    paths.dedup();
    Some(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_ends_after_the_debounce_and_keeps_each_path_once() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move { next_burst(&mut rx).await });
        for p in ["b.lua", "a.lua", "b.lua"] {
            tx.send(PathBuf::from(p)).unwrap();
            tokio::time::sleep(DEBOUNCE / 2).await;
        }
        tokio::time::sleep(DEBOUNCE * 2).await;
        let _ = tx.send(PathBuf::from("c.lua")); // too late for this burst
        let burst = task.await.unwrap().unwrap();
        assert_eq!(burst, vec![PathBuf::from("a.lua"), PathBuf::from("b.lua")]);
    }

    #[tokio::test]
    async fn no_more_bursts_once_the_watcher_is_gone() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
        drop(tx);
        assert_eq!(next_burst(&mut rx).await, None);
    }
}
