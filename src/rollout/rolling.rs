//! Rolling: the new version's replicas replace the old ones a batch at a time, in a second slot
//! that grows while the first shrinks, traffic shared between them in proportion to their
//! replicas. Each round replaces `batchSize` copies at most, never running more than
//! `maxSurge` copies above `replicas` nor fewer than `replicas - maxUnavailable`: up to
//! `maxUnavailable` old copies stop before the new batch starts, the rest once it is healthy.
//! A batch that fails its health checks sends all traffic back to the old version and retires
//! the new slot; the old version's copies stopped so far come back with the rollback point.
//! A target that replaces copies itself within the same limits (`Capabilities::in_place`) is
//! left to do so in the serving slot.

use super::{Rollout, RolloutError};
use crate::spec::model::Service;
use crate::spec::model::service::Rolling;
use crate::target::Slot;

impl Rollout<'_> {
    pub(super) async fn rolling(
        &mut self,
        service: &Service,
        version: &str,
        live: Option<Slot>,
        settings: &Rolling,
    ) -> Result<Slot, RolloutError> {
        let Some(live) = live else {
            return self.in_place(service, version, None).await;
        };
        let name = service.name.as_str();
        let next = live.other();
        let total = service.replicas.max(1);
        let batch = settings
            .batch_size
            .min(settings.max_surge + settings.max_unavailable)
            .max(1);
        let (mut new, mut old) = (0u32, total);
        while new < total {
            let size = batch.min(total - new);
            // Old copies stopped before the batch starts; the last ones always wait for it.
            let mut early = size.min(settings.max_unavailable);
            if early >= old {
                early = 0;
            }
            if early > 0 {
                self.scale_step(service, live, old - early).await?;
                old -= early;
            }
            new += size;
            if new == size {
                let mut first = service.clone();
                first.replicas = size;
                self.deploy(
                    &format!("start {size} of {version} in {}", next.name()),
                    &first,
                    next,
                    version,
                )
                .await?;
            } else {
                self.scale_step(service, next, new).await?;
            }
            if let Err(e) = self.health(service, next).await {
                self.route(
                    &format!("abort: all traffic back to {}", live.name()),
                    name,
                    &[(live, 100), (next, 0)],
                )
                .await?;
                self.retire(name, next).await?;
                return Err(e);
            }
            let remaining = old.saturating_sub(size - early);
            let share = 100 * new / (new + remaining);
            self.route(
                &format!("shift {share}% to {}", next.name()),
                name,
                &[(next, share), (live, 100 - share)],
            )
            .await?;
            if remaining == 0 {
                break;
            }
            if remaining < old {
                self.scale_step(service, live, remaining).await?;
            }
            old = remaining;
        }
        self.route(&format!("promote {}", next.name()), name, &[(next, 100), (live, 0)])
            .await?;
        self.retire(name, live).await?;
        Ok(next)
    }

    /// A recorded step that sets the replicas of `service` in `slot`.
    async fn scale_step(&mut self, service: &Service, slot: Slot, replicas: u32) -> Result<(), RolloutError> {
        let runtime = self.runtime;
        self.step(&format!("scale {} to {replicas}", slot.name()), async {
            Ok(runtime.scale(service, slot, replicas).await?)
        })
        .await
    }
}
