//! Where traffic goes: plumb's routers bound on the stable ports and pointed at the running
//! replicas by weight, or nginx's configuration rewritten and reloaded; and the answers each
//! slot gave.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;

use super::{ComposeError, ComposeRuntime, Routes};
use crate::router::{Backend, Router, SlotStats};
use crate::target::compose::container::Replica;
use crate::target::compose::nginx::{Nginx, Upstream};
use crate::target::workload::Slot;

impl ComposeRuntime {
    /// Binds the router of `service`'s port `name` on its stable number, unless it runs.
    pub(super) async fn bind(
        &self,
        service: &str,
        routes: &mut Routes,
        name: &str,
        stable: u16,
    ) -> Result<(), ComposeError> {
        if self.nginx.is_some() {
            routes.stable.insert((name.to_owned(), stable));
            return Ok(());
        }
        let addr = SocketAddr::new(self.address, stable.saturating_add(self.port_offset));
        let key = (name.to_owned(), addr);
        if routes.routers.contains_key(&key) {
            return Ok(());
        }
        let cancel = self.cancel.child_token();
        let router = Router::bind(addr, cancel.clone())
            .await
            .map_err(|e| ComposeError::Bind {
                service: service.to_owned(),
                addr,
                source: e.source,
            })?;
        routes.routers.insert(key, (router, cancel));
        Ok(())
    }

    /// Points the proxy at `service`'s `replicas` (the others as the engine lists them) with
    /// the weights: plumb's routers at once, or nginx's configuration rewritten and reloaded.
    pub(super) async fn publish(
        &self,
        routing: &BTreeMap<String, Routes>,
        service: &str,
        replicas: &[Replica],
    ) -> Result<(), ComposeError> {
        let Some(nginx) = &self.nginx else {
            if let Some(routes) = routing.get(service) {
                reroute(routes, replicas, service);
            }
            return Ok(());
        };
        if routing.is_empty() {
            nginx.remove().await;
            return Ok(());
        }
        let others = self.replicas(None).await?;
        let everyone: Vec<&Replica> = others
            .iter()
            .filter(|r| r.service != service)
            .chain(replicas.iter())
            .collect();
        let mut upstreams = Vec::new();
        for (name, routes) in routing {
            for (port, stable) in &routes.stable {
                let servers = everyone
                    .iter()
                    .filter(|r| r.service == *name && r.running)
                    .filter_map(|r| {
                        let weight = routes.weights.get(&r.slot).copied().unwrap_or(0);
                        Some((r.address(port)?, r.slot.name().to_owned(), weight))
                    })
                    .collect();
                upstreams.push(Upstream {
                    service: name.clone(),
                    port: port.clone(),
                    stable: *stable,
                    servers,
                });
            }
        }
        tokio::fs::create_dir_all(self.dir.join("nginx"))
            .await
            .map_err(|source| ComposeError::State {
                path: self.dir.join("nginx"),
                source,
            })?;
        let network = self.network().await?;
        nginx.update(&upstreams, &network).await?;
        Ok(())
    }

    /// `service`'s answers per slot since its counters were reset, from nginx's access log.
    pub(super) async fn nginx_traffic(&self, nginx: &Nginx, service: &str) -> BTreeMap<String, SlotStats> {
        let since = self
            .counted_since
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .copied()
            .unwrap_or(0);
        let ports: BTreeSet<u16> = self
            .routing
            .lock()
            .await
            .get(service)
            .map(|r| r.stable.iter().map(|(_, p)| *p).collect())
            .unwrap_or_default();
        let Ok(replicas) = self.replicas(Some(service)).await else {
            return BTreeMap::new();
        };
        let slots: HashMap<SocketAddr, String> = replicas
            .iter()
            .flat_map(|r| {
                r.ports
                    .iter()
                    .filter_map(|p| Some((r.address(&p.name)?, r.slot.name().to_owned())))
                    .collect::<Vec<_>>()
            })
            .collect();
        crate::target::compose::nginx::count(&nginx.answers(since).await, &ports, &slots)
    }

    /// The routers of every port of `service`.
    pub(super) async fn routers(&self, service: &str) -> Vec<Router> {
        let routing = self.routing.lock().await;
        routing
            .get(service)
            .map(|r| r.routers.values().map(|(router, _)| router.clone()).collect())
            .unwrap_or_default()
    }
}

/// Points every port's router of `service` at its running replicas, with the weights.
pub(super) fn reroute(routes: &Routes, replicas: &[Replica], service: &str) {
    for ((port, _), (router, _)) in &routes.routers {
        let backends = [Slot::Blue, Slot::Green]
            .into_iter()
            .filter_map(|slot| {
                let addresses: Vec<SocketAddr> = replicas
                    .iter()
                    .filter(|r| r.service == service && r.slot == slot && r.running)
                    .filter_map(|r| r.host_port(Some(port)))
                    .map(|p| SocketAddr::new([127, 0, 0, 1].into(), p))
                    .collect();
                let weight = routes.weights.get(&slot).copied();
                (weight.is_some() || !addresses.is_empty()).then(|| Backend {
                    slot: slot.name().to_owned(),
                    weight: weight.unwrap_or(0),
                    replicas: addresses,
                })
            })
            .collect();
        router.route(backends);
    }
}
