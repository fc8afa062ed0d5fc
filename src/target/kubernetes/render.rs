//! The objects the kubernetes target would apply for a rendered environment, made without a
//! cluster by the same functions `deploy` applies (`plumb render --output manifests`, for
//! pull-request reviewers): each slot's Deployment, Secret and ConfigMap, the Service,
//! migration Jobs and the plain manifests. Encrypted values are shown masked; nothing is
//! decrypted.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::objects;
pub use super::objects::SERVICE;
use crate::diff::plan::version;
use crate::secret::Secret;
use crate::spec::model::scalar::{is_encrypted, mask};
use crate::spec::model::service::Strategy;
use crate::spec::model::{Service, Target};
use crate::spec::render::Desired;
use crate::spec::sealed::Opened;
use crate::target::workload::{Slot, WorkloadError};

/// The objects for `desired`, in the order they are applied, each with its namespace; `None`
/// when the environment does not run on the kubernetes target.
pub fn manifests(desired: &Desired) -> Option<Result<Vec<Value>, WorkloadError>> {
    let Target::Kubernetes(target) = &desired.target else {
        return None;
    };
    let environment = desired.environment.as_str();
    let commit = desired.commit.as_deref().unwrap_or("");
    let mut out: Vec<Value> = desired.manifests.iter().map(|m| m.document.clone()).collect();
    let made = (|| {
        for service in desired.services.values() {
            let service = masked(service);
            let version = version(&service);
            // Blue-green and canary run the new version beside the old: both colors are shown
            // as they would be after the next rollout. Rolling and recreate run in one.
            let slots: &[Slot] = match service.strategy {
                Strategy::BlueGreen(_) | Strategy::Canary(_) => &[Slot::Blue, Slot::Green],
                Strategy::Recreate(_) | Strategy::Rolling(_) => &[Slot::Blue],
            };
            for slot in slots {
                let made = objects::slot_objects(environment, &service, *slot, &version, commit)?;
                out.extend(made.secret.map(readable_secret));
                out.extend(made.config_map);
                out.push(made.deployment);
            }
            out.push(objects::service(environment, &service, &slots[..1], "blue=100"));
            // The version a cluster serves is known only there: the newest is shown.
            out.extend(objects::autoscaler(environment, &service, slots[0], "autoscaling/v2"));
            if let Some(migration) = &service.migration {
                let env = objects::variables_of(environment, &service)?;
                let name = objects::job_name(service.name.as_str(), "migration");
                let data = objects::secret_data(&service, &env, None);
                if !data.is_empty() {
                    out.push(readable_secret(objects::secret(
                        environment,
                        &service,
                        &name,
                        None,
                        &data,
                    )));
                }
                let deadline = migration.timeout.0.as_secs();
                out.push(objects::job(
                    environment,
                    &service,
                    &name,
                    &migration.command,
                    deadline,
                    &env,
                ));
            }
        }
        Ok(())
    })();
    if let Err(e) = made {
        return Some(Err(e));
    }
    for object in &mut out {
        object["metadata"]["namespace"] = json!(target.namespace.as_str());
    }
    Some(Ok(out))
}

/// `service` with each encrypted value "opened" to its mask (`<encrypted:age>`), so the
/// objects hold the mask where the clear value would go.
fn masked(service: &Service) -> Service {
    let mut sealed: BTreeMap<String, Secret> = BTreeMap::new();
    for variable in &service.env {
        if is_encrypted(&variable.value.0) {
            sealed.insert(variable.value.0.clone(), Secret::new(mask(&variable.value.0)));
        }
    }
    if let Some(config) = &service.config {
        collect(&Value::Object(config.values.clone()), &mut sealed);
    }
    let mut service = service.clone();
    service.opened = Opened::new(sealed);
    service
}

fn collect(value: &Value, sealed: &mut BTreeMap<String, Secret>) {
    match value {
        Value::String(s) if is_encrypted(s) => {
            sealed.insert(s.clone(), Secret::new(mask(s)));
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, sealed)),
        Value::Object(map) => map.values().for_each(|v| collect(v, sealed)),
        _ => {}
    }
}

/// A Secret of masked values, shown as `stringData` so a reader sees the masks.
fn readable_secret(mut secret: Value) -> Value {
    use base64::Engine;
    let Some(Value::Object(data)) = secret.as_object_mut().and_then(|s| s.remove("data")) else {
        return secret;
    };
    let text: serde_json::Map<String, Value> = data
        .into_iter()
        .map(|(key, value)| {
            let decoded = value
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .unwrap_or_default();
            (key, Value::String(decoded))
        })
        .collect();
    secret["stringData"] = Value::Object(text);
    secret
}
