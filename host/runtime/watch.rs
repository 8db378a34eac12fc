//! Watching files: the cluster file and the script folders (hot reload).

use std::path::PathBuf;
use std::rc::Rc;

use mlua::{MultiValue, Value};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use super::node::Core;
use crate::discovery::watch;
use crate::lua::dispatch::Dispatch;

impl Core {
    /// Watches the cluster file; changes go to `tx`.
    pub(crate) fn watch_cluster_file(&self, tx: mpsc::UnboundedSender<PathBuf>) {
        let file = self.cluster.borrow().file.clone();
        match watch::watch_file(&file, tx) {
            Ok(w) => self.watchers.borrow_mut().0 = Some(w),
            Err(e) => warn!("{e}; cluster changes need a reload"),
        }
    }

    /// Watches lualib (when a folder), the script roots and this node's
    /// folder; changed `.lua` files go to `tx`.
    pub(crate) fn watch_scripts(&self, tx: mpsc::UnboundedSender<PathBuf>) {
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
        let roots: Vec<(PathBuf, bool)> = roots
            .iter()
            .filter(|r| !roots.iter().any(|o| o != *r && r.starts_with(o)))
            .map(|r| (r.clone(), true))
            .collect();
        let lua_file = |p: &std::path::Path, kind: &notify::EventKind| {
            !kind.is_remove() && p.extension().is_some_and(|e| e == "lua")
        };
        match watch::watch(&roots, lua_file, tx) {
            Ok(w) => {
                debug!("hot reload watches {roots:?}");
                self.watchers.borrow_mut().1 = Some(w);
            }
            Err(e) => warn!("hot reload: {e}"),
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

/// Re-reads the cluster file after each burst of changes.
pub(crate) async fn cluster_watch_task(core: Rc<Core>, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    while watch::next_burst(&mut rx).await.is_some() {
        let _ = core.reload_cluster();
    }
}

/// Hot-reloads the script files of each burst of changes together.
pub(crate) async fn script_watch_task(core: Rc<Core>, mut rx: mpsc::UnboundedReceiver<PathBuf>) {
    while let Some(paths) = watch::next_burst(&mut rx).await {
        core.reload_scripts(Some(paths));
    }
}
