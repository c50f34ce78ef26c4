//! The drill's clients: each a `client::Client` that publishes on one channel at a steady
//! rate and subscribes to two channels from their first offset, writing everything it sees
//! into a shared [`Ledger`] that the verdict is computed from.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Client, ClientConfig, ClientEvent, Credentials, SubscriptionItem};
use protocol::{ConnectionState, Token};
use serde_json::json;
use tokio::task::JoinSet;

/// Everything the clients observed.
#[derive(Default)]
pub struct Ledger {
    /// Publishes accepted into a client's queue.
    pub sent: u64,
    /// Acknowledged publishes: id → (channel, offset).
    pub acked: HashMap<String, (String, u64)>,
    /// Acks that said `duplicate: true` (a resend after a lost ack, deduplicated by the server).
    pub resent: u64,
    /// Publishes that ended in an error.
    pub publish_errors: Vec<String>,
    /// Per (client, channel): the offsets handed to the application, in order.
    pub received: HashMap<(usize, String), Vec<u64>>,
    /// Per (channel, offset): the id delivered there (the first one seen).
    pub delivered_ids: HashMap<(String, u64), String>,
    /// Deliveries whose id differed from an earlier delivery of the same offset.
    pub id_mismatches: u64,
    /// `recovered: false` notices.
    pub resets: u64,
    /// Every outage a client lived through (left CONNECTED → CONNECTED again), with the
    /// client's route (`direct`, or the proxy it sits behind).
    pub outages: Vec<(&'static str, Duration)>,
    /// Clients that reached FAILED (and were retried explicitly).
    pub failed: u64,
}

/// The drill's shared state.
pub type Shared = Arc<Mutex<Ledger>>;

/// Locks the ledger; a panic elsewhere while holding it only loses that one update.
pub fn lock(ledger: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    ledger
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One client of the drill.
pub struct Member {
    /// Its index.
    pub index: usize,
    /// The client.
    pub client: Client,
    /// Its publisher, subscriber and event tasks.
    tasks: JoinSet<()>,
    /// Publishes not yet finished.
    publishes: Arc<JoinSetCounter>,
    /// Set when the publisher loop has ended: no publish starts after it.
    publisher_done: Arc<AtomicBool>,
}

/// Counts the publishes in flight of one member.
#[derive(Default)]
pub struct JoinSetCounter(std::sync::atomic::AtomicUsize);

impl JoinSetCounter {
    fn get(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// What a member does.
pub struct Plan {
    /// Its index.
    pub index: usize,
    /// The URL it connects to (the server, or a fault proxy in front of it).
    pub url: String,
    /// Its token.
    pub token: String,
    /// The channel it publishes on.
    pub publish_to: String,
    /// The channels it subscribes to (from offset 0).
    pub subscribe_to: Vec<String>,
    /// Publishes per second.
    pub rate: f64,
    /// Jitter seed.
    pub seed: u64,
    /// How it reaches the server: `direct` or the proxy's name.
    pub route: &'static str,
}

/// Publishes in flight per member at most; beyond that it skips a beat (a client does not
/// pile up unbounded work while offline; its queue holds these).
const MAX_OUTSTANDING: usize = 200;

impl Member {
    /// Connects and starts publishing and subscribing until `stop` is raised.
    pub async fn start(plan: Plan, ledger: Shared, stop: CancelFlag) -> anyhow::Result<Self> {
        let config = ClientConfig::new(plan.url.clone()).with_seed(plan.seed);
        let client = Client::connect(config, Credentials::Token(Token::new(plan.token)))?;
        let mut tasks = JoinSet::new();

        // Events: outages and FAILED.
        let mut events = client.events();
        let (l, c, route) = (Arc::clone(&ledger), client.clone(), plan.route);
        tasks.spawn(async move {
            let mut down_since: Option<Instant> = None;
            loop {
                match events.recv().await {
                    Ok(ClientEvent::StateChanged { from, to }) => {
                        if from == ConnectionState::Connected {
                            down_since = Some(Instant::now());
                        }
                        if to == ConnectionState::Connected
                            && let Some(since) = down_since.take()
                        {
                            lock(&l).outages.push((route, since.elapsed()));
                        }
                        if to == ConnectionState::Failed {
                            lock(&l).failed += 1;
                            c.retry().await;
                        }
                    }
                    Ok(ClientEvent::NotRecovered { .. }) => lock(&l).resets += 1,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });

        // Subscribers.
        for channel in &plan.subscribe_to {
            let mut sub = client.subscribe_since(channel, Some(0)).await?;
            let (l, channel, index) = (Arc::clone(&ledger), channel.clone(), plan.index);
            tasks.spawn(async move {
                while let Some(item) = sub.recv().await {
                    let mut ledger = lock(&l);
                    match item {
                        SubscriptionItem::Message(m) => {
                            ledger
                                .received
                                .entry((index, channel.clone()))
                                .or_default()
                                .push(m.offset);
                            let key = (channel.clone(), m.offset);
                            match ledger.delivered_ids.get(&key) {
                                Some(id) if *id != m.id => ledger.id_mismatches += 1,
                                Some(_) => {}
                                None => {
                                    ledger.delivered_ids.insert(key, m.id);
                                }
                            }
                        }
                        SubscriptionItem::Reset { .. } => {}
                        SubscriptionItem::Ended { .. } => return,
                    }
                }
            });
        }

        // Publisher.
        let publishes = Arc::new(JoinSetCounter::default());
        let (l, c, counter) = (Arc::clone(&ledger), client.clone(), Arc::clone(&publishes));
        let period = Duration::from_secs_f64(1.0 / plan.rate.max(0.01));
        let (channel, index) = (plan.publish_to.clone(), plan.index);
        let publisher_done = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&publisher_done);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut n = 0u64;
            loop {
                tick.tick().await;
                if stop.is_raised() {
                    // Every publish started so far is counted in `counter`: the drill may
                    // now wait for them to finish and read the history.
                    done.store(true, std::sync::atomic::Ordering::Release);
                    return;
                }
                if counter.get() >= MAX_OUTSTANDING {
                    continue;
                }
                n += 1;
                let id = format!("c{index}-{n}");
                let (l, c, channel, counter) = (
                    Arc::clone(&l),
                    c.clone(),
                    channel.clone(),
                    Arc::clone(&counter),
                );
                counter.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
                lock(&l).sent += 1;
                tokio::spawn(async move {
                    let outcome = c
                        .publish_with_id(id.clone(), &channel, json!({ "client": index, "n": n }))
                        .await;
                    let mut ledger = lock(&l);
                    match outcome {
                        Ok(ack) => {
                            if ack.duplicate {
                                ledger.resent += 1;
                            }
                            ledger.acked.insert(id, (ack.channel, ack.offset));
                        }
                        Err(err) => ledger.publish_errors.push(format!("{id}: {err}")),
                    }
                    drop(ledger);
                    counter.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                });
            }
        });

        Ok(Self {
            index: plan.index,
            client,
            tasks,
            publishes,
            publisher_done,
        })
    }

    /// Publishes still waiting for their outcome.
    pub fn outstanding(&self) -> usize {
        self.publishes.get()
    }

    /// Whether the publisher has stopped and every publish it started has its outcome.
    pub fn settled(&self) -> bool {
        self.publisher_done
            .load(std::sync::atomic::Ordering::Acquire)
            && self.outstanding() == 0
    }

    /// Closes the client and ends its tasks.
    pub async fn close(mut self) {
        self.client.close().await;
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// A stop flag the publishers poll between beats: raised once, read by many.
#[derive(Clone, Default)]
pub struct CancelFlag(Arc<std::sync::atomic::AtomicBool>);

impl CancelFlag {
    /// Raises the flag.
    pub fn raise(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Whether it was raised.
    pub fn is_raised(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }
}
