//! The invalidation bus: Redis pub/sub between the sidecars of a fleet.
//!
//! A sidecar publishes the [`WriteScope`] of every write it forwards before the write is answered,
//! and applies what its peers publish with the same generation bumps a local write makes. Pub/sub
//! delivers a message to every connected subscriber, in order, or not at all: a sidecar whose
//! subscription breaks cannot know what it missed. So a lost link closes the hits gate (reads go
//! upstream), and a new subscription drops the whole cache before it opens again. A publish that
//! fails or times out is kept in a bounded queue and retried; while it waits, this sidecar serves
//! no hits either.
//!
//! Table aliases set through the admin port travel the same way: stored in a Redis hash (where a
//! sidecar that starts or resubscribes reads them before it serves hits), and announced by a
//! message after which every peer reads the hash again and switches ([`crate::aliases`]).
//!
//! The subscription and the publisher's connection live on a thread of their own
//! ([`super::Fleet::start`]), so that applying a peer's message never queues behind data-plane
//! work: a read that reaches a peer after the writer's answer should find the entry already dead.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::shared::{SharedError, SharedTier};
use crate::aliases::{AliasKey, Aliases};
use crate::cache::{Cache, InvalidationCause, Learned};
use crate::config::{redacted_url, FleetConfig};
use crate::metrics::FleetMetrics;
use crate::protocol::writes::WriteScope;
use crate::wait::{within, Backoff, TimedOut};

/// The message format's version. A peer that receives a newer one than it knows invalidates
/// everything instead of guessing.
const VERSION: u32 = 1;

/// Gate bits: why hits are not served right now.
const LINK_DOWN: u8 = 1;
const BACKLOG: u8 = 2;

/// First and longest wait between two reconnection attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why this sidecar serves no hits at the moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Blocked {
    /// Not subscribed: peers' invalidations may be missed.
    LinkDown,
    /// Own invalidations wait to be published: the link is probably unhealthy.
    Backlog,
}

/// What a message's scope comes from, which decides how a peer applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Origin {
    /// An item or PartiQL write: the writer's own `write_finished` bumps.
    Write,
    /// A control-plane call: the tables' entries and key schemas go.
    Control,
    /// A DynamoDB Stream record read by the lease holder.
    Stream,
}

/// A message as sent.
#[derive(Serialize)]
struct Outgoing<'a> {
    v: u32,
    /// The publishing sidecar's id (random per process), so it can skip its own messages.
    origin: &'a str,
    /// The publisher's `upstream.region`.
    region: &'a str,
    /// The publisher's wall clock at publication, in microseconds since the Unix epoch.
    ts_us: u64,
    kind: Origin,
    scope: &'a WriteScope,
    /// The fleet's admin aliases changed: read them again (older peers ignore it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    aliases: bool,
}

/// A message as received. Fields a newer peer adds are ignored; version 1 has these.
#[derive(Deserialize)]
struct Incoming {
    v: u32,
    origin: String,
    #[serde(default)]
    #[allow(dead_code)]
    region: String,
    ts_us: u64,
    kind: Origin,
    scope: WriteScope,
    #[serde(default)]
    aliases: bool,
}

/// Errors of one link session; all end in a reconnection.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    Timeout(#[from] TimedOut),
    #[error("the subscription connection closed")]
    Closed,
    #[error("shared tier: {0}")]
    Shared(#[from] SharedError),
}

/// A queued message and its place in the queue (so a retry removes what it sent, not what a
/// collapse put there meanwhile).
struct Queued {
    id: u64,
    /// What the message invalidates: the shared tier's versions are changed for it with the
    /// message, when there is a shared tier.
    scope: WriteScope,
    payload: Vec<u8>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Queued>,
    next_id: u64,
}

/// The bus's shared state: the gate the proxy reads, the publisher connection, the retry queue.
pub(crate) struct Bus {
    client: redis::Client,
    url: String,
    /// The pub/sub channel: `<fleet.channel>:invalidations`.
    channel: String,
    /// Prefix of the keys other fleet state uses (`<fleet.channel>:`).
    namespace: String,
    /// The hash of the fleet's admin aliases: `<fleet.channel>:aliases`.
    aliases_key: String,
    aliases: Arc<Aliases>,
    origin: String,
    region: String,
    config: FleetConfig,
    gate: AtomicU8,
    publisher: Mutex<Option<MultiplexedConnection>>,
    queue: Mutex<Queue>,
    queued: Notify,
    /// The shared tier, when the fleet keeps one: a message is then published by the script that
    /// changes the tier's versions, in one round trip.
    shared: Option<SharedTier>,
    /// Whether the subscription was ever up: after a loss, a new one ends the shared tier's
    /// entries too.
    subscribed_before: std::sync::atomic::AtomicBool,
    cache: Arc<Cache>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl Bus {
    pub(crate) fn new(
        config: &FleetConfig,
        region: &str,
        cache: Arc<Cache>,
        shared: Option<SharedTier>,
        aliases: Arc<Aliases>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Bus> {
        let client = super::redis_client(config)?;
        let url = config.redis_url.clone().unwrap_or_default();
        metrics.fleet.link_up.set(0);
        Ok(Bus {
            client,
            url: redacted_url(&url),
            channel: format!("{}:invalidations", config.channel),
            namespace: format!("{}:", config.channel),
            aliases_key: format!("{}:aliases", config.channel),
            aliases,
            origin: uuid::Uuid::new_v4().to_string(),
            region: region.to_string(),
            config: config.clone(),
            // Until the first subscription, peers' messages would be missed.
            gate: AtomicU8::new(LINK_DOWN),
            publisher: Mutex::new(None),
            queue: Mutex::new(Queue::default()),
            queued: Notify::new(),
            shared,
            subscribed_before: std::sync::atomic::AtomicBool::new(false),
            cache,
            metrics,
        })
    }

    fn fleet_metrics(&self) -> &FleetMetrics {
        &self.metrics.fleet
    }

    /// Keys of other fleet state start with this (`<fleet.channel>:`).
    pub(crate) fn namespace(&self) -> &str {
        &self.namespace
    }

    /// This sidecar's id on the bus.
    pub(crate) fn origin(&self) -> &str {
        &self.origin
    }

    /// Why hits may not be served, if they may not. One atomic load: this is on the hit path.
    /// Acquire pairs with the release that opens the gate after a resubscription dropped the
    /// cache, so a read that sees the gate open also sees the dropped generation.
    pub(crate) fn blocked(&self) -> Option<Blocked> {
        match self.gate.load(Ordering::Acquire) {
            0 => None,
            g if g & LINK_DOWN != 0 => Some(Blocked::LinkDown),
            _ => Some(Blocked::Backlog),
        }
    }

    fn close(&self, bit: u8) {
        self.gate.fetch_or(bit, Ordering::AcqRel);
    }

    fn open(&self, bit: u8) {
        self.gate.fetch_and(!bit, Ordering::AcqRel);
    }

    fn encode(&self, scope: &WriteScope, kind: Origin) -> Vec<u8> {
        self.encode_message(scope, kind, false)
    }

    fn encode_message(&self, scope: &WriteScope, kind: Origin, aliases: bool) -> Vec<u8> {
        let message = Outgoing {
            v: VERSION,
            origin: &self.origin,
            region: &self.region,
            ts_us: now_us(),
            kind,
            scope,
            aliases,
        };
        serde_json::to_vec(&message).expect("a WriteScope always serializes")
    }

    /// A connection for commands (PUBLISH, leases, checkpoints), if one is up.
    pub(crate) fn connection(&self) -> Option<MultiplexedConnection> {
        self.publisher.lock().clone()
    }

    /// Publishes a scope, waiting at most `fleet.publish_timeout`; on failure the message is
    /// queued for retry (and hits stop until it went out). Never fails.
    pub(crate) async fn publish(&self, scope: &WriteScope, kind: Origin) {
        self.send_now(Queued {
            id: 0,
            scope: scope.clone(),
            payload: self.encode(scope, kind),
        })
        .await;
    }

    /// Stores an admin alias in the fleet's hash (`None`: removes it), for every sidecar, those
    /// that start later included.
    pub(crate) async fn store_alias(
        &self,
        key: &AliasKey,
        table: Option<&str>,
    ) -> Result<(), String> {
        let mut cmd = match table {
            Some(_) => redis::cmd("HSET"),
            None => redis::cmd("HDEL"),
        };
        cmd.arg(&self.aliases_key).arg(key.to_string());
        if let Some(table) = table {
            cmd.arg(table);
        }
        self.command::<i64>(&cmd)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// Runs one command on the connection for commands (opened when there is none), answered
    /// within `fleet.ping_timeout`. A connection whose other end is gone (Redis restarted) fails
    /// every command sent on it, and only a failed publish used to replace it: on an error it is
    /// dropped here too, and the publisher loop opens another at once.
    async fn command<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, LinkError> {
        let mut conn = match self.connection() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let answered = within(self.config.ping_timeout, cmd.query_async::<T>(&mut conn)).await?;
        answered.map_err(|e| {
            self.forget_connection();
            e.into()
        })
    }

    /// Tells every peer that the fleet's admin aliases changed: they read them again and switch.
    pub(crate) async fn publish_aliases(&self) {
        let scope = WriteScope::default();
        self.send_now(Queued {
            id: 0,
            payload: self.encode_message(&scope, Origin::Control, true),
            scope,
        })
        .await;
    }

    /// Reads the fleet's admin aliases and puts them in force here.
    async fn load_aliases(&self) -> Result<(), LinkError> {
        let mut hgetall = redis::cmd("HGETALL");
        hgetall.arg(&self.aliases_key);
        let stored: std::collections::BTreeMap<String, String> = self.command(&hgetall).await?;
        let admin = stored
            .into_iter()
            .filter(|(_, table)| crate::config::is_table_name(table))
            .filter_map(|(key, table)| Some((AliasKey::parse(&key).ok()?, table)))
            .collect();
        self.aliases.replace_admin(admin);
        Ok(())
    }

    /// Sends a message, waiting at most `fleet.publish_timeout`; on failure it is queued for
    /// retry (and hits stop until it went out).
    async fn send_now(&self, message: Queued) {
        if self.gate.load(Ordering::Acquire) & BACKLOG != 0 {
            // Redis is in trouble already: do not make every write wait for it.
            self.enqueue(message);
            return;
        }
        let conn = self.connection();
        if conn.is_none() && self.shared.is_none() {
            self.count_failure("no_connection");
            self.enqueue(message);
            return;
        }
        let started = Instant::now();
        let sent = self.send(conn, &message, self.config.publish_timeout).await;
        self.fleet_metrics()
            .publish_duration
            .observe(started.elapsed().as_secs_f64());
        match sent {
            Ok(()) => self.fleet_metrics().published.inc(),
            Err(LinkError::Timeout(_)) => {
                self.count_failure("timeout");
                warn!(
                    timeout = ?self.config.publish_timeout,
                    "fleet: publish timed out; queued for retry, hits paused"
                );
                self.enqueue(message);
            }
            Err(e) => {
                self.count_failure("error");
                warn!(error = %e, "fleet: publish failed; queued for retry, hits paused");
                self.forget_connection();
                self.enqueue(message);
            }
        }
    }

    /// One message, answered within `limit`: with a shared tier, the script that changes its
    /// versions for the message's scope and publishes it; else one PUBLISH on `conn`.
    async fn send(
        &self,
        conn: Option<MultiplexedConnection>,
        message: &Queued,
        limit: Duration,
    ) -> Result<(), LinkError> {
        if let Some(shared) = &self.shared {
            return Ok(shared
                .change(&message.scope, &message.payload, limit)
                .await?);
        }
        let Some(mut conn) = conn else {
            return Err(LinkError::Closed);
        };
        within(
            limit,
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg(&message.payload)
                .query_async::<i64>(&mut conn),
        )
        .await??;
        Ok(())
    }

    fn count_failure(&self, kind: &str) {
        self.fleet_metrics()
            .publish_failures
            .with_label_values(&[kind])
            .inc();
    }

    /// Drops the publisher connection (the connection for commands), which failed, so that the
    /// retry loop opens another.
    pub(crate) fn forget_connection(&self) {
        *self.publisher.lock() = None;
        self.queued.notify_one();
    }

    fn enqueue(&self, mut message: Queued) {
        let mut queue = self.queue.lock();
        // Closed before the write is answered: from now on this sidecar serves no hits.
        self.close(BACKLOG);
        let id = queue.next_id;
        queue.next_id += 1;
        message.id = id;
        if queue.items.len() >= self.config.publish_queue {
            // Too much to remember: one message that ends everything says at least as much.
            queue.items.clear();
            let everything = WriteScope::everything();
            let payload = self.encode(&everything, Origin::Control);
            queue.items.push_back(Queued {
                id,
                scope: everything,
                payload,
            });
            self.fleet_metrics().queue_overflows.inc();
            warn!(
                bound = self.config.publish_queue,
                "fleet: publish queue overflowed; peers will drop everything"
            );
        } else {
            queue.items.push_back(message);
        }
        self.fleet_metrics()
            .publish_queue
            .set(queue.items.len() as i64);
        self.queued.notify_one();
    }

    async fn connect(&self) -> Result<MultiplexedConnection, LinkError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.config.ping_timeout))
            .set_response_timeout(Some(self.config.ping_timeout));
        Ok(self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?)
    }

    /// Keeps a publisher connection open and empties the retry queue. Runs on the fleet thread.
    pub(crate) async fn run_publisher(&self) {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let waiting = self.queued.notified();
            let front = self.queue.lock().items.front().map(|q| Queued {
                id: q.id,
                scope: q.scope.clone(),
                payload: q.payload.clone(),
            });
            let conn = self.connection();
            let conn = match (conn, &front) {
                (Some(_), None) => {
                    waiting.await;
                    continue;
                }
                (Some(conn), Some(_)) => conn,
                (None, _) => match self.connect().await {
                    Ok(conn) => {
                        *self.publisher.lock() = Some(conn.clone());
                        conn
                    }
                    Err(e) => {
                        warn!(redis = %self.url, error = %e, "fleet: cannot connect to publish");
                        backoff.wait().await;
                        continue;
                    }
                },
            };
            let Some(message) = front else {
                continue;
            };
            let id = message.id;
            match self
                .send(Some(conn), &message, self.config.ping_timeout)
                .await
            {
                Ok(()) => {
                    backoff.reset();
                    self.fleet_metrics().published.inc();
                    let mut queue = self.queue.lock();
                    if queue.items.front().is_some_and(|q| q.id == id) {
                        queue.items.pop_front();
                    }
                    self.fleet_metrics()
                        .publish_queue
                        .set(queue.items.len() as i64);
                    if queue.items.is_empty() {
                        self.open(BACKLOG);
                        info!("fleet: publish queue empty; hits resume");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "fleet: retried publish failed");
                    *self.publisher.lock() = None;
                    backoff.wait().await;
                }
            }
        }
    }

    /// Keeps the subscription: subscribe, drop the cache, open the gate, apply messages and ping
    /// until the link fails; then close the gate and start again. Runs on the fleet thread.
    pub(crate) async fn run_subscriber(&self) {
        let mut backoff = Backoff::new(FIRST_BACKOFF, MAX_BACKOFF);
        loop {
            let result = self.session(&mut backoff).await;
            let was_up = self.gate.fetch_or(LINK_DOWN, Ordering::AcqRel) & LINK_DOWN == 0;
            self.fleet_metrics().link_up.set(0);
            let error = match result {
                Ok(never) => match never {},
                Err(e) => e,
            };
            if was_up {
                self.fleet_metrics().link_losses.inc();
                warn!(
                    redis = %self.url,
                    error = %error,
                    "fleet: link down; reads bypass the cache until resubscribed"
                );
            } else {
                tracing::debug!(redis = %self.url, error = %error, "fleet: cannot subscribe");
            }
            backoff.wait().await;
        }
    }

    async fn session(&self, backoff: &mut Backoff) -> Result<std::convert::Infallible, LinkError> {
        let limit = self.config.ping_timeout;
        let pubsub = within(limit, self.client.get_async_pubsub()).await??;
        let (mut sink, mut messages) = pubsub.split();
        within(limit, sink.subscribe(&self.channel)).await??;
        // Subscribed: every message published from now on arrives. What was published while the
        // link was down is unknown, so nothing cached before this point may be served. Nor may
        // anything in the shared tier from before: this sidecar may have answered writes whose
        // invalidation never reached Redis while its link was down.
        if let Some(shared) = &self.shared {
            if self.subscribed_before.load(Ordering::Acquire) {
                shared.resync(limit).await?;
            }
        }
        self.subscribed_before.store(true, Ordering::Release);
        self.cache.flush(InvalidationCause::FleetResync);
        // Aliases switched while the link was down are read before anything is served again.
        self.load_aliases().await?;
        self.open(LINK_DOWN);
        self.fleet_metrics().link_up.set(1);
        backoff.reset();
        info!(redis = %self.url, channel = %self.channel, "fleet: subscribed; hits allowed");
        // A TCP connection can die without a word: ping it, concurrently with the messages.
        let pinger = async {
            let mut tick = tokio::time::interval(self.config.ping_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                within(limit, sink.ping::<redis::Value>()).await??;
            }
        };
        tokio::pin!(pinger);
        loop {
            tokio::select! {
                biased;
                message = messages.next() => match message {
                    Some(m) => {
                        if self.apply(m.get_payload_bytes()) {
                            self.load_aliases().await?;
                        }
                    }
                    None => return Err(LinkError::Closed),
                },
                failed = &mut pinger => return failed,
            }
        }
    }

    /// Applies one message from the bus; `true` when it says the fleet's aliases changed.
    fn apply(&self, payload: &[u8]) -> bool {
        let received = &self.fleet_metrics().received;
        let message = match serde_json::from_slice::<Incoming>(payload) {
            Ok(m) if m.v <= VERSION => m,
            Ok(_) | Err(_) => {
                // Not understood (a newer format?): end everything rather than miss something.
                received.with_label_values(&["invalid"]).inc();
                warn!("fleet: a message not understood; invalidating everything");
                self.cache
                    .learned(&WriteScope::everything(), Learned::PeerControl);
                return false;
            }
        };
        if message.origin == self.origin {
            received.with_label_values(&["own"]).inc();
            return false;
        }
        let learned = match message.kind {
            Origin::Write => Learned::PeerWrite,
            Origin::Control => Learned::PeerControl,
            Origin::Stream => Learned::Stream,
        };
        self.cache.learned(&message.scope, learned);
        received.with_label_values(&["applied"]).inc();
        let lag_us = now_us().saturating_sub(message.ts_us);
        self.fleet_metrics()
            .invalidation_lag
            .observe(lag_us as f64 / 1e6);
        message.aliases
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::table::TableId;

    #[test]
    fn messages_round_trip_and_carry_canonical_keys() {
        let scope = WriteScope {
            items: vec![crate::protocol::writes::ItemWrite {
                table: TableId::new("us-east-1", "t"),
                key: vec![b'A', 0, 1, 255],
                partition: Some(vec![1]),
            }],
            tables: vec![TableId::new("eu-west-1", "u")],
            everything: false,
            in_doubt: true,
        };
        let out = Outgoing {
            v: VERSION,
            origin: "me",
            region: "eu-west-1",
            ts_us: 7,
            kind: Origin::Control,
            scope: &scope,
            aliases: false,
        };
        let bytes = serde_json::to_vec(&out).unwrap();
        let back: Incoming = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(back.scope, scope);
        assert_eq!(back.kind, Origin::Control);
        assert_eq!((back.origin.as_str(), back.ts_us), ("me", 7));
        // A newer peer's extra fields do not break an older one.
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["scope"]["arns"] = serde_json::json!(["arn:aws:dynamodb:us-east-1:1:table/t"]);
        v["priority"] = true.into();
        let back: Incoming = serde_json::from_value(v).unwrap();
        assert_eq!(back.scope, scope);
        assert!(!back.aliases, "absent: no alias change");
        // An alias change is a control message of no scope, which older peers apply as nothing.
        let empty = WriteScope::default();
        let out = Outgoing {
            aliases: true,
            scope: &empty,
            ..out
        };
        let back: Incoming = serde_json::from_slice(&serde_json::to_vec(&out).unwrap()).unwrap();
        assert!(back.aliases && back.scope.is_empty());
    }
}
