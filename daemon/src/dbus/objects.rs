//! One `org.edgeinfer.Model1` object per configured model, at
//! `/org/edgeinfer/Daemon1/models/<escaped id>`, kept in step with the registry: state changes
//! emit `PropertiesChanged`, models added or removed by a reload appear and disappear (the
//! ObjectManager at the root announces it).

use std::collections::HashMap;

use zbus::interface;
use zbus::object_server::ObjectServer;
use zbus::zvariant::OwnedObjectPath;

use crate::server::registry::{ModelState, ModelStatus};

/// Where model objects live.
pub const MODELS: &str = "/org/edgeinfer/Daemon1/models";

/// The object path of a model: bytes outside `[A-Za-z0-9]` become `_xx` (hex).
pub fn model_path(id: &str) -> OwnedObjectPath {
    let mut element = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() {
            element.push(b as char);
        } else {
            element.push_str(&format!("_{b:02x}"));
        }
    }
    if element.is_empty() {
        element.push('_');
    }
    // Only [A-Za-z0-9_] and '/' remain: always a valid path.
    OwnedObjectPath::try_from(format!("{MODELS}/{element}")).unwrap_or_else(|_| OwnedObjectPath::default())
}

/// The D-Bus name of a state.
pub fn state_name(s: ModelState) -> String {
    s.as_str().to_string()
}

/// `org.edgeinfer.Model1`.
pub struct ModelIface(ModelStatus);

#[interface(name = "org.edgeinfer.Model1")]
impl ModelIface {
    /// The model id.
    #[zbus(property)]
    async fn id(&self) -> String {
        self.0.id.clone()
    }

    /// sam, dinov2, llama, or empty until first loaded.
    #[zbus(property)]
    async fn family(&self) -> String {
        self.0.family.clone().unwrap_or_default()
    }

    /// unloaded, loading, loaded, failed or unloading.
    #[zbus(property)]
    async fn state(&self) -> String {
        state_name(self.0.state)
    }

    /// tract or ort.
    #[zbus(property)]
    async fn backend(&self) -> String {
        self.0.backend.clone()
    }

    /// The providers that run the loaded graph.
    #[zbus(property)]
    async fn execution_providers(&self) -> Vec<String> {
        self.0.providers.clone()
    }

    /// Nodes per provider.
    #[zbus(property)]
    async fn placement(&self) -> HashMap<String, u32> {
        self.0.placement.iter().map(|(k, v)| (k.clone(), u32::try_from(*v).unwrap_or(u32::MAX))).collect()
    }

    /// The last load error.
    #[zbus(property)]
    async fn error(&self) -> String {
        self.0.error.clone().unwrap_or_default()
    }

    /// Estimated memory, MiB.
    #[zbus(property)]
    async fn memory_mb(&self) -> f64 {
        self.0.memory_mb
    }

    /// The configured precision variant.
    #[zbus(property)]
    async fn variant(&self) -> String {
        self.0.variant.clone()
    }

    /// The main graph file loaded.
    #[zbus(property)]
    async fn graph(&self) -> String {
        self.0.graph.clone().unwrap_or_default()
    }
}

/// Publishes a model's new status: adds its object, updates it (emitting `PropertiesChanged` for
/// what changed), or removes it.
pub async fn sync(server: &ObjectServer, status: ModelStatus, removed: bool) -> zbus::Result<()> {
    let path = model_path(&status.id);
    if removed {
        server.remove::<ModelIface, _>(path).await?;
        return Ok(());
    }
    let iface = match server.interface::<_, ModelIface>(path.clone()).await {
        Ok(iface) => iface,
        Err(_) => {
            server.at(path, ModelIface(status)).await?;
            return Ok(());
        }
    };
    let emitter = iface.signal_emitter().clone();
    let mut object = iface.get_mut().await;
    let old = std::mem::replace(&mut object.0, status);
    let new = &object.0;
    if old.state != new.state {
        object.state_changed(&emitter).await?;
    }
    if old.family != new.family {
        object.family_changed(&emitter).await?;
    }
    if old.backend != new.backend {
        object.backend_changed(&emitter).await?;
    }
    if old.providers != new.providers {
        object.execution_providers_changed(&emitter).await?;
    }
    if old.placement != new.placement {
        object.placement_changed(&emitter).await?;
    }
    if old.error != new.error {
        object.error_changed(&emitter).await?;
    }
    if old.memory_mb != new.memory_mb {
        object.memory_mb_changed(&emitter).await?;
    }
    if old.variant != new.variant {
        object.variant_changed(&emitter).await?;
    }
    if old.graph != new.graph {
        object.graph_changed(&emitter).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_become_valid_object_paths() {
        assert_eq!(model_path("sam").as_str(), "/org/edgeinfer/Daemon1/models/sam");
        assert_eq!(model_path("dino-v2.s").as_str(), "/org/edgeinfer/Daemon1/models/dino_2dv2_2es");
        assert_eq!(model_path("a_b").as_str(), "/org/edgeinfer/Daemon1/models/a_5fb");
    }
}
