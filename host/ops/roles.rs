//! Users' roles and which command needs which (viewer < operator < admin).

use serde::{Deserialize, Serialize};

/// What a user may do; each role may do everything of the ones below it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Looks: `list`, `top`.
    Viewer,
    /// Runs processes: `start`, `stop`, `restart`, `kill`, `reload`.
    Operator,
    /// Manages users and reads the audit log.
    Admin,
}

impl Role {
    /// The role's name as typed.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "operator" => Ok(Role::Operator),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role '{s}' (viewer, operator or admin)")),
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of command, for the rights table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `list ...`, `top`.
    List,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `restart`.
    Restart,
    /// `kill`.
    Kill,
    /// `reload`.
    Reload,
    /// `user add`.
    UserAdd,
    /// `user list`.
    UserList,
    /// `user del`.
    UserDel,
    /// `audit`.
    Audit,
}

impl Verb {
    /// The command's name as ctl spells it (`user add`: `user_add`), the
    /// `command` label of the daemon's metrics.
    pub fn name(self) -> &'static str {
        match self {
            Verb::List => "list",
            Verb::Start => "start",
            Verb::Stop => "stop",
            Verb::Restart => "restart",
            Verb::Kill => "kill",
            Verb::Reload => "reload",
            Verb::UserAdd => "user_add",
            Verb::UserList => "user_list",
            Verb::UserDel => "user_del",
            Verb::Audit => "audit",
        }
    }
}

/// The rights table: the least role each command needs.
pub const RIGHTS: &[(Verb, Role)] = &[
    (Verb::List, Role::Viewer),
    (Verb::Start, Role::Operator),
    (Verb::Stop, Role::Operator),
    (Verb::Restart, Role::Operator),
    (Verb::Kill, Role::Operator),
    (Verb::Reload, Role::Operator),
    (Verb::UserAdd, Role::Admin),
    (Verb::UserList, Role::Admin),
    (Verb::UserDel, Role::Admin),
    (Verb::Audit, Role::Admin),
];

/// The least role `verb` needs.
pub fn needs(verb: Verb) -> Role {
    RIGHTS
        .iter()
        .find(|(v, _)| *v == verb)
        .map(|(_, r)| *r)
        .unwrap_or(Role::Admin)
}

/// Whether `role` may run `verb`.
pub fn allowed(role: Role, verb: Verb) -> bool {
    role >= needs(verb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_ordered_and_parse() {
        assert!(Role::Viewer < Role::Operator && Role::Operator < Role::Admin);
        for r in [Role::Viewer, Role::Operator, Role::Admin] {
            assert_eq!(r.name().parse::<Role>().unwrap(), r);
        }
        assert!("root".parse::<Role>().unwrap_err().contains("unknown role 'root'"));
    }

    #[test]
    fn the_table_decides() {
        assert!(allowed(Role::Viewer, Verb::List));
        assert!(!allowed(Role::Viewer, Verb::Stop));
        assert!(allowed(Role::Operator, Verb::Stop));
        assert!(allowed(Role::Operator, Verb::Reload));
        assert!(!allowed(Role::Operator, Verb::UserAdd));
        assert!(!allowed(Role::Operator, Verb::Audit));
        assert!(allowed(Role::Admin, Verb::UserDel));
        assert!(allowed(Role::Admin, Verb::Kill));
    }
}
