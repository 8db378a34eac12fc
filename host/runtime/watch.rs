//! Watching files: the cluster file and the script folders (hot reload).

use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use mlua::{MultiValue, Value};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::node::Core;
use crate::lua::dispatch::Dispatch;

impl Core {
    pub(crate) fn watch_cluster_file(&self, tx: mpsc::UnboundedSender<()>) {
        use notify::Watcher;
        let file = self.cluster.borrow().file.clone();
        let Some(name) = file.file_name().map(|n| n.to_os_string()) else {
            return;
        };
        let dir = match file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if ev.kind.is_access() {
                    return;
                }
                if ev.paths.iter().any(|p| p.file_name() == Some(name.as_os_str())) {
                    let _ = tx.send(());
                }
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(&dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => *self.watcher.borrow_mut() = Some(w),
                Err(e) => warn!("cannot watch {}: {e}; cluster changes need a reload", dir.display()),
            },
            Err(e) => warn!("cannot watch the cluster file: {e}"),
        }
    }

    pub(crate) fn watch_scripts(&self, tx: mpsc::UnboundedSender<PathBuf>) {
        use notify::Watcher;
        let mut dirs: Vec<PathBuf> = Vec::new();
        {
            let c = self.cluster.borrow();
            dirs.extend(c.lualib.clone());
            dirs.extend(c.scripts.iter().cloned());
        }
        if let Some(d) = self.me.main.parent() {
            dirs.push(d.to_path_buf());
        }
        let mut roots: Vec<PathBuf> = dirs.iter().filter_map(|d| std::fs::canonicalize(d).ok()).collect();
        roots.sort();
        roots.dedup();
        // a folder inside another watched one is covered by it
        let roots: Vec<PathBuf> = roots
            .iter()
            .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o)))
            .cloned()
            .collect();
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if ev.kind.is_access() || ev.kind.is_remove() {
                    return;
                }
                for p in ev.paths {
                    if p.extension().is_some_and(|e| e == "lua") {
                        let _ = tx.send(p);
                    }
                }
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => {
                for r in &roots {
                    if let Err(e) = w.watch(r, notify::RecursiveMode::Recursive) {
                        warn!("cannot watch {} for hot reload: {e}", r.display());
                    }
                }
                debug!("hot reload watches {roots:?}");
                *self.script_watcher.borrow_mut() = Some(w);
            }
            Err(e) => warn!("cannot watch scripts for hot reload: {e}"),
        }
    }

    /// Hot-reloads the given changed files (or every changed module), between
    /// messages, on this thread.
    pub(crate) fn reload_scripts(&self, paths: Option<Vec<PathBuf>>) {
        let mut mv = MultiValue::with_capacity(2);
        mv.push_back(Value::Integer(Dispatch::Reload.id()));
        match paths {
            None => mv.push_back(Value::Nil),
            Some(paths) => {
                let list: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                match self.lua.create_sequence_from(list) {
                    Ok(t) => mv.push_back(Value::Table(t)),
                    Err(e) => {
                        error!("hot reload: {e}");
                        return;
                    }
                }
            }
        }
        self.call_lua(mv);
    }
}

/// Re-reads the cluster file when it changes on disk (after the burst of
/// events an editor's save makes has settled).
pub(crate) async fn cluster_watch_task(core: Rc<Core>, mut rx: mpsc::UnboundedReceiver<()>) {
    while rx.recv().await.is_some() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while rx.try_recv().is_ok() {}
        let _ = core.reload_cluster();
    }
}

/// Collects changed script files until the burst of events of a save has
/// settled, then reloads them together.
pub(crate) async fn script_watch_task(core: Rc<Core>, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    while let Some(first) = rx.recv().await {
        let mut paths = vec![first];
        tokio::time::sleep(Duration::from_millis(30)).await;
        while let Ok(p) = rx.try_recv() {
            paths.push(p);
        }
        paths.sort();
        paths.dedup();
        core.reload_scripts(Some(paths));
    }
}
