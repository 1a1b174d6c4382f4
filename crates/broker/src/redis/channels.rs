//! The node's sharded pub/sub subscriptions, reference counted: a channel is subscribed on its
//! first reference and left on its last, once per node, whatever the number of connections.
//!
//! Each channel has its own async lock, so `SSUBSCRIBE` and `SUNSUBSCRIBE` of one channel are
//! sent one after the other (never crossed), and a second subscriber of a channel whose
//! `SSUBSCRIBE` is still in flight waits for it: when `acquire` returns, messages flow.

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, PubsubInterface};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::redis_error;
use crate::{lock, BrokerError};

/// Slot groups subscribed at once after a reconnect.
const RESUBSCRIBE_CONCURRENCY: usize = 64;

pub(crate) struct Channels {
    subscriber: SubscriberClient,
    /// Set when a held channel could not be subscribed: the receive task resubscribes.
    pub(crate) resync_wanted: AtomicBool,
    table: Mutex<HashMap<Arc<str>, Arc<Channel>>>,
}

#[derive(Default)]
struct Channel {
    state: tokio::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    count: usize,
    subscribed: bool,
    /// Taken out of the table: whoever waited on its lock starts again with a fresh entry.
    removed: bool,
}

impl Channels {
    pub(crate) fn new(subscriber: SubscriberClient) -> Self {
        Channels {
            subscriber,
            resync_wanted: AtomicBool::new(false),
            table: Mutex::default(),
        }
    }

    /// A channel held for the node's lifetime; subscribed by the next [`resubscribe`].
    pub(crate) fn hold(&self, name: &str) {
        let channel = Arc::new(Channel::default());
        if let Ok(mut state) = channel.state.try_lock() {
            state.count = 1;
        }
        lock(&self.table).insert(Arc::from(name), channel);
    }

    /// Takes a reference; subscribes when it is the first, then runs `on_first` under the
    /// channel's lock (so later subscribers find what it set up). Returns whether it was first.
    ///
    /// When subscribing fails, `hold` says what happens to the reference: kept (the channel is
    /// subscribed by the next [`resubscribe`](Self::resubscribe), and the caller still releases
    /// it) or dropped (the caller must not release it). A failing `on_first` drops it.
    pub(crate) async fn acquire<F, Fut>(
        &self,
        name: &str,
        hold: bool,
        on_first: F,
    ) -> Result<bool, BrokerError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(), BrokerError>>,
    {
        loop {
            let channel = lock(&self.table)
                .entry(Arc::from(name))
                .or_default()
                .clone();
            let mut state = channel.state.lock().await;
            if state.removed {
                continue;
            }
            let first = state.count == 0;
            if !state.subscribed {
                let result = if self.subscriber.is_connected() {
                    self.subscriber.ssubscribe(name).await.map_err(redis_error)
                } else {
                    Err(BrokerError::Unavailable(
                        "the pub/sub connection to Redis is down".into(),
                    ))
                };
                if let Err(e) = result {
                    if hold {
                        state.count += 1;
                        self.resync_wanted.store(true, Ordering::Relaxed);
                    } else if state.count == 0 {
                        state.removed = true;
                        self.remove(name, &channel);
                    }
                    return Err(e);
                }
                state.subscribed = true;
            }
            if first {
                if let Err(e) = on_first().await {
                    self.leave(name, &mut state).await;
                    self.remove(name, &channel);
                    return Err(e);
                }
            }
            state.count += 1;
            return Ok(first);
        }
    }

    /// Drops a reference; leaves the channel when it was the last, then runs `on_last` under
    /// the channel's lock. Returns whether it was the last.
    pub(crate) async fn release(&self, name: &str, on_last: impl FnOnce()) -> bool {
        let Some(channel) = lock(&self.table).get(name).cloned() else {
            return false;
        };
        let mut state = channel.state.lock().await;
        if state.removed || state.count == 0 {
            return false;
        }
        state.count -= 1;
        if state.count > 0 {
            return false;
        }
        self.leave(name, &mut state).await;
        on_last();
        self.remove(name, &channel);
        true
    }

    async fn leave(&self, name: &str, state: &mut State) {
        if state.subscribed && self.subscriber.is_connected() {
            if let Err(e) = self.subscriber.sunsubscribe(name).await {
                tracing::debug!(channel = name, error = %e, "SUNSUBSCRIBE failed");
            }
        }
        state.subscribed = false;
        state.removed = true;
    }

    fn remove(&self, name: &str, channel: &Arc<Channel>) {
        let mut table = lock(&self.table);
        if table.get(name).is_some_and(|c| Arc::ptr_eq(c, channel)) {
            table.remove(name);
        }
    }

    /// Subscribes every referenced channel again (after a reconnect, the server has none).
    /// `SSUBSCRIBE` takes channels of one hash slot at a time: the groups go out together, and
    /// one failing group (a shard down) does not stop the others. Returns how many channels
    /// are subscribed, or the first error (the caller tries again).
    pub(crate) async fn resubscribe(&self) -> Result<usize, BrokerError> {
        let channels: Vec<(Arc<str>, Arc<Channel>)> = lock(&self.table)
            .iter()
            .map(|(name, channel)| (name.clone(), channel.clone()))
            .collect();
        let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for (name, channel) in &channels {
            let mut state = channel.state.lock().await;
            if state.count > 0 && !state.removed {
                state.subscribed = true;
                let slot = fred::util::redis_keyslot(name.as_bytes());
                groups.entry(slot).or_default().push(name.to_string());
            }
        }
        let mut subscribed = 0;
        let mut failure = None;
        let groups: Vec<Vec<String>> = groups.into_values().collect();
        for batch in groups.chunks(RESUBSCRIBE_CONCURRENCY) {
            let results = futures_util::future::join_all(
                batch
                    .iter()
                    .map(|group| self.subscriber.ssubscribe(group.clone())),
            )
            .await;
            for (group, result) in batch.iter().zip(results) {
                match result {
                    Ok(()) => subscribed += group.len(),
                    Err(e) => failure = Some(redis_error(e)),
                }
            }
        }
        // A channel released while its group was on the way: leave it again.
        for (name, _) in &channels {
            if !lock(&self.table).contains_key(name) {
                let _ = self.subscriber.sunsubscribe(name.to_string()).await;
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(subscribed),
        }
    }

    /// Number of channels the node holds (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        lock(&self.table).len()
    }
}
