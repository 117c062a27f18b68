//! Who may call what over D-Bus, checked in the daemon from the caller's credentials as the bus
//! reports them (`GetConnectionCredentials`), behind the same split in the shipped bus policy:
//!
//! - inference (segment, embed, classify, generate, gallery list, stats): members of
//!   `dbus.client_group` (default `edgeinfer-clients`);
//! - model control and gallery changes (load, unload, gallery add/remove): members of
//!   `dbus.admin_group` (default `edgeinfer-admin`);
//! - root and the daemon's own user may do everything (on a session bus every caller is the
//!   daemon's user, so development needs no groups).
//!
//! A group that does not exist on the system grants nothing. Credentials are cached per unique
//! bus name (never reused on a bus) and forgotten when the caller leaves.

use std::collections::HashMap;
use std::sync::Mutex;

use zbus::Connection;
use zbus::message::Header;
use zbus::names::BusName;

use super::error::Error;
use crate::server::config::DbusConfig;

/// What a method needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Right {
    /// Inference and reading.
    Infer,
    /// Model control and gallery changes.
    Admin,
}

/// The access rules of one daemon.
pub struct Access {
    own_uid: u32,
    client_gid: Option<u32>,
    admin_gid: Option<u32>,
    client_group: String,
    admin_group: String,
    cache: Mutex<HashMap<String, Caller>>,
}

/// What the bus says about a caller.
#[derive(Clone, Debug)]
struct Caller {
    uid: u32,
    gids: Vec<u32>,
}

/// Most callers whose credentials are cached (the cache is emptied beyond it).
const CACHE_MAX: usize = 4096;

fn gid_of(name: &str) -> Option<u32> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Some(g.gid.as_raw()),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(group = name, error = %e, "cannot look up a D-Bus access group");
            None
        }
    }
}

impl Access {
    /// The rules of `config`, with its group names resolved now.
    pub fn new(config: &DbusConfig) -> Access {
        let access = Access {
            own_uid: rustix::process::geteuid().as_raw(),
            client_gid: gid_of(&config.client_group),
            admin_gid: gid_of(&config.admin_group),
            client_group: config.client_group.clone(),
            admin_group: config.admin_group.clone(),
            cache: Mutex::new(HashMap::new()),
        };
        tracing::info!(
            client_group = %access.client_group,
            client_gid = ?access.client_gid,
            admin_group = %access.admin_group,
            admin_gid = ?access.admin_gid,
            "D-Bus access: inference for root, our user and the client group; model control and gallery changes for root, our user and the admin group"
        );
        access
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Caller>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets a caller that left the bus.
    pub fn forget(&self, unique_name: &str) {
        self.cache().remove(unique_name);
    }

    /// Forgets every caller: on a new connection (a restarted bus hands out the same unique
    /// names to other peers).
    pub fn forget_all(&self) {
        self.cache().clear();
    }

    async fn caller(&self, conn: &Connection, sender: &str) -> Result<Caller, Error> {
        if let Some(c) = self.cache().get(sender) {
            return Ok(c.clone());
        }
        let name = BusName::try_from(sender).map_err(|e| Error::Internal(e.to_string()))?;
        let creds = zbus::fdo::DBusProxy::new(conn).await?.get_connection_credentials(name).await.map_err(|e| {
            Error::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(format!(
                "cannot read the caller's credentials from the bus: {e}"
            )))))
        })?;
        let Some(uid) = creds.unix_user_id() else {
            return Err(denied("the bus gives no user id for the caller"));
        };
        let caller = Caller { uid, gids: creds.unix_group_ids().cloned().unwrap_or_default() };
        let mut cache = self.cache();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(sender.to_string(), caller.clone());
        Ok(caller)
    }

    /// Refuses the call in `header` unless its sender has `right`; `what` names the method.
    pub async fn check(&self, conn: &Connection, header: &Header<'_>, right: Right, what: &str) -> Result<(), Error> {
        let Some(sender) = header.sender() else {
            return Err(denied("a call without a sender"));
        };
        let caller = self.caller(conn, sender.as_str()).await?;
        if caller.uid == 0 || caller.uid == self.own_uid {
            return Ok(());
        }
        let member = |gid: Option<u32>| gid.is_some_and(|g| caller.gids.contains(&g));
        let allowed = match right {
            Right::Infer => member(self.client_gid) || member(self.admin_gid),
            Right::Admin => member(self.admin_gid),
        };
        if allowed {
            return Ok(());
        }
        tracing::warn!(uid = caller.uid, method = what, ?right, "D-Bus call refused: the caller lacks the group");
        let group = match right {
            Right::Infer => format!("{} or {}", self.client_group, self.admin_group),
            Right::Admin => self.admin_group.clone(),
        };
        Err(denied(&format!("{what} needs membership of {group} (uid {} is not a member)", caller.uid)))
    }
}

/// `org.freedesktop.DBus.Error.AccessDenied`, as the bus policy answers.
pub fn denied(message: &str) -> Error {
    Error::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(message.to_string()))))
}
