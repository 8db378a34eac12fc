//! The Lua library (`lualib/*.lua`), compiled into the binary so that an
//! installed `luahost` needs no folder beside it.
//!
//! A node loads these copies through a `package.searchers` entry placed
//! before the file searcher, unless the cluster file (`lualib`) or
//! `LUAHOST_LUALIB` names a lualib folder: then the files of that folder are
//! loaded, and hot-reloaded when they change.

/// Every module of lualib: name and source.
pub(crate) const MODULES: &[(&str, &str)] = &[
    ("base", include_str!("../../lualib/base.lua")),
    ("cluster", include_str!("../../lualib/cluster.lua")),
    ("entity", include_str!("../../lualib/entity.lua")),
    ("event", include_str!("../../lualib/event.lua")),
    ("hotfix", include_str!("../../lualib/hotfix.lua")),
    ("log", include_str!("../../lualib/log.lua")),
    ("luahost", include_str!("../../lualib/luahost.lua")),
    ("router", include_str!("../../lualib/router.lua")),
    ("rpcco", include_str!("../../lualib/rpcco.lua")),
    ("gate", include_str!("../../lualib/gate.lua")),
    ("dbproxy", include_str!("../../lualib/dbproxy.lua")),
    ("persist", include_str!("../../lualib/persist.lua")),
    ("rpcdef", include_str!("../../lualib/rpcdef.lua")),
    ("rpcstub", include_str!("../../lualib/rpcstub.lua")),
    ("rpctype", include_str!("../../lualib/rpctype.lua")),
    ("timer", include_str!("../../lualib/timer.lua")),
];

/// The built-in source of lualib module `name`.
pub(crate) fn source(name: &str) -> Option<&'static str> {
    MODULES.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_lualib_file_is_built_in_as_it_is() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("lualib");
        let mut on_disk = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "lua") {
                let name = p.file_stem().unwrap().to_string_lossy().into_owned();
                let text = std::fs::read_to_string(&p).unwrap();
                assert_eq!(
                    super::source(&name),
                    Some(text.as_str()),
                    "lualib/{name}.lua is not in MODULES"
                );
                on_disk.push(name);
            }
        }
        assert_eq!(
            on_disk.len(),
            super::MODULES.len(),
            "MODULES lists a file lualib/ no longer has"
        );
    }
}
