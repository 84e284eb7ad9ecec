//! Business time aligned with the database's clock. Replicas on hosts whose clocks disagree
//! would otherwise disagree about when a lease expires: a replica running 90 s ahead sees
//! another's 2-minute lease as expired 90 s early and exchanges the same token. Every
//! replica reads the database's clock instead (one query a minute) and applies the offset,
//! so leases and deadlines are judged in one time.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SystemClock};

/// How often the offset is measured again.
const REALIGN_EVERY: Duration = Duration::from_secs(60);

/// The host clock plus the measured offset to the database's clock.
#[derive(Debug, Default)]
pub struct DatabaseAlignedClock {
    offset_ms: AtomicI64,
}

impl Clock for DatabaseAlignedClock {
    fn now(&self) -> DateTime<Utc> {
        SystemClock.now() + TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }
}

impl DatabaseAlignedClock {
    /// Measures the offset once, then keeps measuring it every minute until `stop`.
    pub async fn start(pool: PgPool, stop: CancellationToken) -> Result<Arc<Self>, sqlx::Error> {
        let clock = Arc::new(Self::default());
        clock.align(&pool).await?;
        tokio::spawn({
            let clock = clock.clone();
            async move {
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = tokio::time::sleep(REALIGN_EVERY) => {}
                    }
                    if let Err(e) = clock.align(&pool).await {
                        tracing::warn!(error = %e, "could not read the database's clock; keeping the last offset");
                    }
                }
            }
        });
        Ok(clock)
    }

    /// The offset now applied to the host clock.
    pub fn offset(&self) -> TimeDelta {
        TimeDelta::milliseconds(self.offset_ms.load(Ordering::Relaxed))
    }

    async fn align(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let before = SystemClock.now();
        let database = crate::store::database_now(pool).await?;
        let after = SystemClock.now();
        // The database read its clock somewhere between the two host readings.
        let host = before + (after - before) / 2;
        let offset = database - host;
        let previous = self
            .offset_ms
            .swap(offset.num_milliseconds(), Ordering::Relaxed);
        if (offset.num_milliseconds() - previous).abs() > 1_000 {
            tracing::warn!(
                offset_ms = offset.num_milliseconds(),
                "this host's clock differs from the database's; business time follows the database"
            );
        }
        Ok(())
    }
}
