//! The node's sharded pub/sub subscriptions, reference counted: a channel is subscribed on its
//! first reference and left on its last, once per node, whatever the number of connections.
//!
//! Each channel has its own async lock, so `SSUBSCRIBE` and `SUNSUBSCRIBE` of one channel are
//! sent one after the other (never crossed), and a second subscriber of a channel whose
//! `SSUBSCRIBE` is still in flight waits for it: when `acquire` returns, messages flow.

use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, PubsubInterface};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::redis_error;
use crate::{lock, BrokerError};

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

    /// Takes a reference; subscribes when it is the first. Returns whether it was.
    ///
    /// When subscribing fails, `hold` says what happens to the reference: kept (the channel is
    /// subscribed by the next [`resubscribe`](Self::resubscribe), and the caller still releases
    /// it) or dropped (the caller must not release it).
    pub(crate) async fn acquire(&self, name: &str, hold: bool) -> Result<bool, BrokerError> {
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
            state.count += 1;
            return Ok(first);
        }
    }

    /// Drops a reference; leaves the channel when it was the last. Returns whether it was.
    pub(crate) async fn release(&self, name: &str) -> bool {
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
        if state.subscribed && self.subscriber.is_connected() {
            if let Err(e) = self.subscriber.sunsubscribe(name).await {
                tracing::debug!(channel = name, error = %e, "SUNSUBSCRIBE failed");
            }
        }
        state.subscribed = false;
        state.removed = true;
        self.remove(name, &channel);
        true
    }

    fn remove(&self, name: &str, channel: &Arc<Channel>) {
        let mut table = lock(&self.table);
        if table.get(name).is_some_and(|c| Arc::ptr_eq(c, channel)) {
            table.remove(name);
        }
    }

    /// Subscribes every referenced channel again (after a reconnect, the server has none),
    /// in groups by hash slot so each group goes to one shard of a cluster.
    pub(crate) async fn resubscribe(&self) -> Result<usize, BrokerError> {
        let channels: Vec<(Arc<str>, Arc<Channel>)> = lock(&self.table)
            .iter()
            .map(|(name, channel)| (name.clone(), channel.clone()))
            .collect();
        let mut names = Vec::with_capacity(channels.len());
        for (name, channel) in &channels {
            let mut state = channel.state.lock().await;
            if state.count > 0 && !state.removed {
                state.subscribed = true;
                names.push(name.to_string());
            }
        }
        let count = names.len();
        let mut groups: BTreeMap<u16, Vec<String>> = BTreeMap::new();
        for name in names {
            let slot = fred::util::redis_keyslot(name.as_bytes());
            groups.entry(slot).or_default().push(name);
        }
        for (_, group) in groups {
            self.subscriber
                .ssubscribe(group)
                .await
                .map_err(redis_error)?;
        }
        Ok(count)
    }

    /// Number of channels the node holds (for tests and metrics).
    pub(crate) fn len(&self) -> usize {
        lock(&self.table).len()
    }
}
