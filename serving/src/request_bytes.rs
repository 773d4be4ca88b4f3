//! One budget of request bytes for a whole server, across its connections.
//!
//! HTTP/2 flow control bounds what a connection may send before it is read,
//! but not what the server keeps once read: every call that reads a 4 MiB
//! message holds 4 MiB until it answers, and any client may open as many
//! calls and connections as it likes. So the methods that read their
//! message themselves ([`crate::grpc::RawUnary`]) first take the message's
//! declared size from this budget, before reading past its 5-byte header,
//! and give it back when they have answered.
//!
//! The budget has two parts, so a flood of big messages cannot delay the
//! ordinary small ones:
//! - messages up to [`SMALL_MESSAGE_BYTES`] (an app's requests: a history
//!   and a few candidates are a few KiB) share a quarter of it and wait
//!   their turn when it is full (first come, first served, within their
//!   deadline);
//! - larger messages share the rest and are refused at once
//!   (`RESOURCE_EXHAUSTED`, like the concurrency limit's load shedding) when
//!   they do not fit: waiting, they would sit on their connection's HTTP/2
//!   window and stall the other calls on it.
//!
//! Either way the memory a server holds for request bytes stays under the
//! budget whatever arrives. The methods tonic decodes itself (health,
//! reflection, `GetModel`) carry messages of a few bytes; the server caps
//! those at [`SMALL_MESSAGE_BYTES`] instead.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The largest "small" message: the cap of the methods that do not read
/// through the budget (their requests are a service name or empty), and
/// the size up to which a message waits for room rather than being refused.
pub const SMALL_MESSAGE_BYTES: usize = 64 * 1024;

/// The request bytes one server may hold at once; clones share the budget.
#[derive(Clone, Debug)]
pub struct RequestBytes {
    small: Arc<Semaphore>,
    large: Arc<Semaphore>,
    small_capacity: u32,
    large_capacity: u32,
}

/// Bytes taken from a [`RequestBytes`] budget, given back on drop.
#[derive(Debug)]
pub struct RequestBytesPermit {
    _permit: OwnedSemaphorePermit,
}

/// Why a message got no room.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// A large message found the large part of the budget full.
    #[error(
        "{bytes} request bytes do not fit: the replica already holds its limit of in-flight request bytes; retry"
    )]
    Full {
        /// The message's declared size.
        bytes: usize,
    },
    /// The budget was closed; only a server shutting down closes it.
    #[error("the request-bytes budget is closed (server shutting down)")]
    Closed,
}

fn permits(bytes: usize) -> u32 {
    u32::try_from(bytes.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX)
}

impl RequestBytes {
    /// A budget of `capacity` bytes (at most `u32::MAX`): a quarter for
    /// small messages (at least one [`SMALL_MESSAGE_BYTES`]), the rest for
    /// large ones.
    pub fn new(capacity: usize) -> Self {
        let capacity = permits(capacity).max(2);
        let small_capacity = (capacity / 4)
            .max(permits(SMALL_MESSAGE_BYTES))
            .min(capacity - 1);
        let large_capacity = capacity - small_capacity;
        RequestBytes {
            small: Arc::new(Semaphore::new(small_capacity as usize)),
            large: Arc::new(Semaphore::new(large_capacity as usize)),
            small_capacity,
            large_capacity,
        }
    }

    /// The budget's size in bytes, both parts.
    pub fn capacity(&self) -> usize {
        self.small_capacity as usize + self.large_capacity as usize
    }

    /// Bytes not taken right now, both parts.
    pub fn available(&self) -> usize {
        self.small.available_permits() + self.large.available_permits()
    }

    /// Takes `bytes` for one message: a small one waits for calls ahead of
    /// it to give theirs back; a large one (capped at its part of the
    /// budget, so it can fit when alone) gets room now or [`BudgetError::Full`].
    pub async fn acquire(&self, bytes: usize) -> Result<RequestBytesPermit, BudgetError> {
        let permit = if bytes <= SMALL_MESSAGE_BYTES {
            Arc::clone(&self.small)
                .acquire_many_owned(permits(bytes).min(self.small_capacity))
                .await
                .map_err(|_| BudgetError::Closed)?
        } else {
            Arc::clone(&self.large)
                .try_acquire_many_owned(permits(bytes).min(self.large_capacity))
                .map_err(|e| match e {
                    TryAcquireError::NoPermits => BudgetError::Full { bytes },
                    TryAcquireError::Closed => BudgetError::Closed,
                })?
        };
        Ok(RequestBytesPermit { _permit: permit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn small_messages_wait_and_large_ones_are_refused_when_full() {
        let budget = RequestBytes::new(1 << 20);
        assert_eq!(budget.capacity(), 1 << 20);
        let small = 1 << 18;
        let big = budget.acquire(small * 3).await.unwrap();
        // The large part is taken: another large message is refused now.
        assert_eq!(
            budget.acquire(SMALL_MESSAGE_BYTES + 1).await.unwrap_err(),
            BudgetError::Full {
                bytes: SMALL_MESSAGE_BYTES + 1
            }
        );
        // Small ones still get in, up to their part, then wait.
        let mut held = Vec::new();
        for _ in 0..small / SMALL_MESSAGE_BYTES {
            held.push(budget.acquire(SMALL_MESSAGE_BYTES).await.unwrap());
        }
        assert_eq!(budget.available(), 0);
        let waiting = {
            let budget = budget.clone();
            tokio::spawn(async move { budget.acquire(100).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "a full small part must wait");
        held.pop();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        drop((big, held));
        assert_eq!(budget.available(), 1 << 20);
        // Larger than its whole part: capped, so it still gets in alone.
        let all = budget.acquire(1 << 30).await.unwrap();
        drop(all);
    }
}
