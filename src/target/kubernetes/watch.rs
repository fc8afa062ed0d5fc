//! The environment's objects as the API server's watches report them, so observing reads a
//! cache instead of listing: one watch per kind (Deployments, Services, ConfigMaps, Secrets, and
//! the Pods their Deployments make) on the environment's label, each listing again by itself
//! when its watch breaks. A Secret is kept with each value replaced by its digest: no decrypted
//! value stays in the cache; a Pod is kept with its labels and its containers' restart counts.
//!
//! plumb's own writes are awaited: a read waits until every object plumb wrote has arrived at
//! least at the version the write returned (or its deletion has), so a plan never works from a
//! state older than plumb's last step. A change plumb did not write — a scale by hand, a pod
//! that stops being ready, an edited ConfigMap, a container the kubelet restarted — rings the
//! environment's drift bell (for a Pod, only a restart: pods come and go with every rollout).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, PodStatus, Secret, Service};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::target::bell::QuietBell;

/// The kinds watched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Deployments.
    Deployment,
    /// Services.
    Service,
    /// ConfigMaps.
    ConfigMap,
    /// Secrets.
    Secret,
    /// Pods (never written by plumb).
    Pod,
}

/// The objects of one kind.
struct Objects<K> {
    current: BTreeMap<String, K>,
    /// Objects arriving while the watch lists again; they replace `current` when it is done.
    relisting: BTreeMap<String, K>,
    /// Whether `current` is whole: listed, and the watch unbroken since.
    synced: bool,
}

impl<K> Default for Objects<K> {
    fn default() -> Self {
        Objects {
            current: BTreeMap::new(),
            relisting: BTreeMap::new(),
            synced: false,
        }
    }
}

impl<K: Resource> Objects<K> {
    /// Whether the object `name` is here at `version` or later, or — for `None` — gone.
    fn holds(&self, name: &str, version: Option<u64>) -> bool {
        match (self.current.get(name), version) {
            (Some(object), Some(wanted)) => resource_version(object).is_some_and(|v| v >= wanted),
            (None, None) => true,
            _ => false,
        }
    }
}

#[derive(Default)]
struct Cache {
    deployments: Objects<Deployment>,
    services: Objects<Service>,
    config_maps: Objects<ConfigMap>,
    secrets: Objects<Secret>,
    pods: Objects<Pod>,
    /// What plumb wrote, which a read must see: the version written, `None` for a deletion.
    awaited: HashMap<(Kind, String), Option<u64>>,
}

impl Cache {
    /// Whether a read can be served: every kind listed and every write of plumb's arrived.
    fn current(&mut self) -> bool {
        if !(self.deployments.synced
            && self.services.synced
            && self.config_maps.synced
            && self.secrets.synced
            && self.pods.synced)
        {
            return false;
        }
        let Cache {
            deployments,
            services,
            config_maps,
            secrets,
            pods,
            awaited,
        } = self;
        awaited.retain(|(kind, name), version| match kind {
            Kind::Deployment => !deployments.holds(name, *version),
            Kind::Service => !services.holds(name, *version),
            Kind::ConfigMap => !config_maps.holds(name, *version),
            Kind::Secret => !secrets.holds(name, *version),
            Kind::Pod => !pods.holds(name, *version),
        });
        awaited.is_empty()
    }
}

/// The resource version of `object`, as a number (`None` when it is not one: such an object's
/// writes are never taken as arrived, and reads list instead).
fn resource_version<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// What the watches hold, at one moment.
pub struct Snapshot {
    /// The environment's Deployments.
    pub deployments: Vec<Deployment>,
    /// Its Services.
    pub services: Vec<Service>,
    /// Its ConfigMaps.
    pub config_maps: Vec<ConfigMap>,
    /// Its Secrets, each value replaced by its digest.
    pub secrets: Vec<Secret>,
    /// Its Pods, with their labels and their containers' statuses alone.
    pub pods: Vec<Pod>,
}

/// The watches of one environment; they stop when this is dropped.
pub struct Watched {
    cache: Arc<Mutex<Cache>>,
    /// Rung whenever an event arrives.
    arrived: Arc<Notify>,
    _stop: DropGuard,
}

impl Watched {
    /// Starts watching the objects labelled `selector` in `namespace`; changes plumb did not
    /// write ring `bell`.
    pub fn start(client: &kube::Client, namespace: &str, selector: &str, bell: Arc<Notify>) -> Watched {
        let cache = Arc::new(Mutex::new(Cache::default()));
        let arrived = Arc::new(Notify::new());
        let stop = CancellationToken::new();
        let follower = Follower {
            selector: selector.to_owned(),
            cache: cache.clone(),
            arrived: arrived.clone(),
            bell,
            stop: stop.clone(),
        };
        tokio::spawn(follower.clone().follow(
            Api::<Deployment>::namespaced(client.clone(), namespace),
            Kind::Deployment,
            |c| &mut c.deployments,
            |d| {
                // Observing reads labels, annotations, replicas, status and who owns which
                // field: the pod template is left out of the cache, the managed fields kept
                // compact.
                if let Some(spec) = d.spec.as_mut() {
                    spec.template = Default::default();
                }
                super::fields::compact(d);
            },
            |_| 0,
        ));
        tokio::spawn(follower.clone().follow(
            Api::<Service>::namespaced(client.clone(), namespace),
            Kind::Service,
            |c| &mut c.services,
            without_managed_fields,
            |_| 0,
        ));
        tokio::spawn(follower.clone().follow(
            Api::<ConfigMap>::namespaced(client.clone(), namespace),
            Kind::ConfigMap,
            |c| &mut c.config_maps,
            without_managed_fields,
            |_| 0,
        ));
        tokio::spawn(follower.clone().follow(
            Api::<Secret>::namespaced(client.clone(), namespace),
            Kind::Secret,
            |c| &mut c.secrets,
            |s| {
                without_managed_fields(s);
                super::objects::digest_secret(s);
            },
            |_| 0,
        ));
        tokio::spawn(follower.follow(
            Api::<Pod>::namespaced(client.clone(), namespace),
            Kind::Pod,
            |c| &mut c.pods,
            |p| {
                without_managed_fields(p);
                p.spec = None;
                p.status = p.status.take().map(|status| PodStatus {
                    container_statuses: status.container_statuses,
                    ..PodStatus::default()
                });
            },
            pod_restarts,
        ));
        Watched {
            cache,
            arrived,
            _stop: stop.drop_guard(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that plumb wrote object `name` of `kind`, now at `written` — its resource
    /// version, or `None` when plumb deleted it: reads wait until the watch shows it.
    pub fn wrote(&self, kind: Kind, name: &str, written: Option<&str>) {
        let version = match written {
            Some(text) => match text.parse() {
                Ok(version) => Some(version),
                // Not a number: never taken as arrived, so reads list until the next write.
                Err(_) => Some(u64::MAX),
            },
            None => None,
        };
        self.lock().awaited.insert((kind, name.to_owned()), version);
    }

    /// What the watches hold, once every kind is listed and every write of plumb's has
    /// arrived; `None` when that takes longer than `within` (the caller then lists, and the
    /// writes awaited are forgotten).
    pub async fn snapshot(&self, within: Duration) -> Option<Snapshot> {
        self.read(within, |cache| Snapshot {
            deployments: cache.deployments.current.values().cloned().collect(),
            services: cache.services.current.values().cloned().collect(),
            config_maps: cache.config_maps.current.values().cloned().collect(),
            secrets: cache.secrets.current.values().cloned().collect(),
            pods: cache.pods.current.values().cloned().collect(),
        })
        .await
    }

    /// Whether object `name` of `kind` exists, as the watches hold it; `None` when they cannot
    /// tell yet (not listed, or a write of plumb's to it not arrived).
    pub fn has(&self, kind: Kind, name: &str) -> Option<bool> {
        let cache = self.lock();
        if cache.awaited.contains_key(&(kind, name.to_owned())) {
            return None;
        }
        let (synced, holds) = match kind {
            Kind::Deployment => (cache.deployments.synced, cache.deployments.current.contains_key(name)),
            Kind::Service => (cache.services.synced, cache.services.current.contains_key(name)),
            Kind::ConfigMap => (cache.config_maps.synced, cache.config_maps.current.contains_key(name)),
            Kind::Secret => (cache.secrets.synced, cache.secrets.current.contains_key(name)),
            Kind::Pod => (cache.pods.synced, cache.pods.current.contains_key(name)),
        };
        synced.then_some(holds)
    }

    /// ConfigMap `name` as the watches hold it (`Some(None)`: there is none), on the same terms
    /// as [`Watched::snapshot`].
    pub async fn config_map(&self, name: &str, within: Duration) -> Option<Option<ConfigMap>> {
        self.read(within, |cache| cache.config_maps.current.get(name).cloned())
            .await
    }

    /// `look` at the cache once it is current; `None` after `within`.
    async fn read<T>(&self, within: Duration, look: impl Fn(&Cache) -> T) -> Option<T> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            {
                let mut cache = self.lock();
                if cache.current() {
                    return Some(look(&cache));
                }
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                // The caller lists instead, which shows every write: an awaited one that never
                // arrives (the object went, or changed kind of label) is not waited for again.
                self.lock().awaited.clear();
                return None;
            }
        }
    }
}

/// How many times the kubelet restarted `pod`'s containers.
pub fn pod_restarts(pod: &Pod) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum()
}

/// `object` without its managed fields, which observing does not read.
fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// What each watch task shares.
#[derive(Clone)]
struct Follower {
    selector: String,
    cache: Arc<Mutex<Cache>>,
    arrived: Arc<Notify>,
    bell: Arc<Notify>,
    stop: CancellationToken,
}

impl Follower {
    /// Follows `api`'s objects into the cache's `pick` until stopped, each object trimmed by
    /// `trim` before it is kept; `restarts` counts a Pod's container restarts.
    async fn follow<K>(
        self,
        api: Api<K>,
        kind: Kind,
        pick: fn(&mut Cache) -> &mut Objects<K>,
        trim: fn(&mut K),
        restarts: fn(&K) -> i32,
    ) where
        K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    {
        let config = watcher::Config::default().labels(&self.selector);
        let events = watcher(api, config).default_backoff().modify(trim);
        let mut events = std::pin::pin!(events);
        // Each kind rings at most once per second.
        let mut bell = QuietBell::new(self.bell.clone());
        loop {
            let event = tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = bell.held() => continue,
                event = events.next() => event,
            };
            let Some(event) = event else { return };
            let changed = {
                let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                // A pod rings only when one of its containers was restarted.
                let restarted = match &event {
                    Ok(Event::Apply(object)) if kind == Kind::Pod => {
                        let before = pick(&mut cache).current.get(&object.name_any()).map(restarts);
                        restarts(object) > before.unwrap_or(0)
                    }
                    Ok(Event::Delete(_)) => kind != Kind::Pod,
                    _ => true,
                };
                apply(&mut cache, kind, pick, event) && restarted
            };
            if changed {
                bell.ring();
            }
            self.arrived.notify_waiters();
        }
    }
}

/// Whether the API server refused a watch's request as forbidden.
fn forbidden(error: &watcher::Error) -> bool {
    match error {
        watcher::Error::InitialListFailed(e) | watcher::Error::WatchStartFailed(e) | watcher::Error::WatchFailed(e) => {
            super::runtime::is_forbidden(e)
        }
        watcher::Error::WatchError(status) => status.code == 403,
        _ => false,
    }
}

/// Takes `event` into the cache; returns whether it is a change plumb did not write.
fn apply<K: Resource + Clone>(
    cache: &mut Cache,
    kind: Kind,
    pick: fn(&mut Cache) -> &mut Objects<K>,
    event: Result<Event<K>, watcher::Error>,
) -> bool {
    match event {
        Ok(Event::Init) => {
            pick(cache).relisting.clear();
            false
        }
        Ok(Event::InitApply(object)) => {
            pick(cache).relisting.insert(object.name_any(), object);
            false
        }
        Ok(Event::InitDone) => {
            let objects = pick(cache);
            objects.current = std::mem::take(&mut objects.relisting);
            let was_synced = std::mem::replace(&mut objects.synced, true);
            // A watch listed again after a break may have missed changes: look for drift.
            was_synced || !objects.current.is_empty()
        }
        Ok(Event::Apply(object)) => {
            let name = object.name_any();
            let ours = cache
                .awaited
                .get(&(kind, name.clone()))
                .is_some_and(|v| *v == resource_version(&object));
            pick(cache).current.insert(name, object);
            !ours
        }
        Ok(Event::Delete(object)) => {
            let name = object.name_any();
            let ours = cache.awaited.get(&(kind, name.clone())).is_some_and(Option::is_none);
            pick(cache).current.remove(&name);
            !ours
        }
        Err(e) if matches!(kind, Kind::Secret | Kind::Pod) && forbidden(&e) => {
            // An agent not granted Secrets in this namespace: there are none of plumb's here
            // (it could not have written them), and observing goes on without. Not granted
            // Pods: restarts are not reported.
            let objects = pick(cache);
            if !objects.synced && kind == Kind::Secret {
                tracing::warn!(
                    "Secrets cannot be read in this namespace: a service with encrypted values cannot be deployed here until the agent is granted them (ClusterRole plumb-secrets)."
                );
            } else if !objects.synced {
                tracing::warn!(
                    "Pods cannot be watched in this namespace: containers the kubelet restarts are not reported until the agent is granted `watch` on pods (ClusterRole plumb)."
                );
            }
            objects.current.clear();
            objects.synced = true;
            false
        }
        Err(e) => {
            tracing::debug!(kind = ?kind, error = %e, "A watch broke; it lists again.");
            pick(cache).synced = false;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, version: &str) -> Deployment {
        let mut deployment = Deployment::default();
        deployment.metadata.name = Some(name.to_owned());
        deployment.metadata.resource_version = Some(version.to_owned());
        deployment
    }

    fn synced() -> Cache {
        let mut cache = Cache::default();
        cache.services.synced = true;
        cache.config_maps.synced = true;
        cache.secrets.synced = true;
        cache.pods.synced = true;
        let listed: Vec<Result<Event<Deployment>, watcher::Error>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(deployment("web-blue", "5"))),
            Ok(Event::InitDone),
        ];
        for event in listed {
            apply(&mut cache, Kind::Deployment, |c| &mut c.deployments, event);
        }
        cache
    }

    #[test]
    fn a_read_waits_for_plumbs_own_writes_and_others_changes_ring() {
        let mut cache = synced();
        assert!(cache.current());
        // plumb wrote web-blue at 7: the cache at 5 is behind until the watch brings 7.
        cache.awaited.insert((Kind::Deployment, "web-blue".to_owned()), Some(7));
        assert!(!cache.current());
        let ours = apply(
            &mut cache,
            Kind::Deployment,
            |c| &mut c.deployments,
            Ok(Event::Apply(deployment("web-blue", "7"))),
        );
        assert!(!ours, "plumb's own write does not ring");
        assert!(cache.current() && cache.awaited.is_empty());
        // Someone else's change rings.
        let other = apply(
            &mut cache,
            Kind::Deployment,
            |c| &mut c.deployments,
            Ok(Event::Apply(deployment("web-blue", "9"))),
        );
        assert!(other);
        // A deletion plumb made is awaited until the object is gone.
        cache.awaited.insert((Kind::Deployment, "web-blue".to_owned()), None);
        assert!(!cache.current());
        let gone = apply(
            &mut cache,
            Kind::Deployment,
            |c| &mut c.deployments,
            Ok(Event::Delete(deployment("web-blue", "10"))),
        );
        assert!(!gone && cache.current());
    }

    #[test]
    fn a_broken_watch_is_not_read_until_it_has_listed_again() {
        let mut cache = synced();
        apply::<Deployment>(
            &mut cache,
            Kind::Deployment,
            |c| &mut c.deployments,
            Err(watcher::Error::NoResourceVersion),
        );
        assert!(!cache.current());
        for event in [Ok(Event::Init), Ok(Event::InitDone)] {
            apply::<Deployment>(&mut cache, Kind::Deployment, |c| &mut c.deployments, event);
        }
        assert!(cache.current() && cache.deployments.current.is_empty());
    }
}
