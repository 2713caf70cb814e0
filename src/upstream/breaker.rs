//! Circuit breakers, one per upstream endpoint (the URL a region's requests go to). An endpoint
//! whose calls fail `upstream.breaker_failures` times in a row is *open*: calls to it are refused
//! at once, for `upstream.breaker_open`, instead of each waiting for the failure the ones before
//! it met. The first call after that is the *probe* (the breaker is *half-open* while it is out,
//! and refuses the others): its success closes the breaker, its failure opens it again.
//!
//! What counts ([`Verdict::of`]): no connection, a connection lost, a call given up at
//! `upstream.timeout` or `upstream.backstop`, and a 5xx answer are failures; every other answer
//! is a success, throttling included (the endpoint is there, and says how much it takes). A call
//! dropped unanswered — its client hung up — is a failure when it had waited
//! `upstream.breaker_hang_up`: with no time limit of ddbcache's own, a hung upstream fails no
//! call by itself, its clients give up on it. A signing error is ddbcache's own, and says nothing
//! of the endpoint.
//!
//! The state machine ([`State`]) is plain data moved by the instants it is given, so its tests
//! need no clock. [`Breakers`] keeps one per endpoint that has failed since its last success (an
//! endpoint that answers has none), and makes each transition a metric and a log line.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus::{IntCounterVec, IntGaugeVec};
use tokio::sync::Notify;
use tracing::{info, warn};

use super::{UpstreamError, UpstreamResponse};
use crate::config::UpstreamConfig;
use crate::metrics::BreakerMetrics;

/// How a call ended, as a breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Success,
    Failure,
    /// Says nothing of the endpoint (a signing error, a client that hung up at once).
    Neither,
}

impl Verdict {
    /// The verdict on a call that ended with `result`.
    pub(crate) fn of(result: &Result<UpstreamResponse, UpstreamError>) -> Verdict {
        match result {
            Ok(answer) if answer.status.is_server_error() => Verdict::Failure,
            Ok(_) => Verdict::Success,
            Err(UpstreamError::Signing(_) | UpstreamError::BreakerOpen { .. }) => Verdict::Neither,
            Err(_) => Verdict::Failure,
        }
    }
}

/// One endpoint's breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Calls go through; `failures` in a row so far.
    Closed { failures: u32 },
    /// Calls are refused until `until`; the first one after it is the probe.
    Open { until: Instant },
    /// The probe is out (`probing`), or was dropped without a verdict and the next call is one;
    /// other calls are refused.
    HalfOpen { probing: bool },
}

/// Whether a call may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    Call { probe: bool },
    Refused,
}

/// `upstream.breaker_failures` and `upstream.breaker_open`.
#[derive(Debug, Clone, Copy)]
struct Rule {
    failures: u32,
    open_for: Duration,
}

impl State {
    const CLOSED: State = State::Closed { failures: 0 };

    fn admit(&mut self, now: Instant) -> Admission {
        match *self {
            State::Closed { .. } => Admission::Call { probe: false },
            State::Open { until } if now < until => Admission::Refused,
            State::Open { .. } | State::HalfOpen { probing: false } => {
                *self = State::HalfOpen { probing: true };
                Admission::Call { probe: true }
            }
            State::HalfOpen { probing: true } => Admission::Refused,
        }
    }

    /// Counts the verdict on a call let through (`probe` or not). A call let through before the
    /// breaker opened and answered after says nothing more: the probe decides.
    fn settle(&mut self, rule: Rule, probe: bool, verdict: Verdict, now: Instant) {
        let open = State::Open {
            until: now + rule.open_for,
        };
        *self = match (*self, probe, verdict) {
            (State::HalfOpen { probing: true }, true, Verdict::Success) => State::CLOSED,
            (State::HalfOpen { probing: true }, true, Verdict::Failure) => open,
            (State::HalfOpen { probing: true }, true, Verdict::Neither) => {
                State::HalfOpen { probing: false }
            }
            (State::Closed { .. }, false, Verdict::Success) => State::CLOSED,
            (State::Closed { failures }, false, Verdict::Failure)
                if failures + 1 >= rule.failures =>
            {
                open
            }
            (State::Closed { failures }, false, Verdict::Failure) => State::Closed {
                failures: failures + 1,
            },
            (unchanged, _, _) => unchanged,
        };
    }

    /// The value of `ddbcache_upstream_breaker_state`, and the `to` label of a transition here.
    fn label(self) -> (i64, &'static str) {
        match self {
            State::Closed { .. } => (0, "closed"),
            State::Open { .. } => (1, "open"),
            State::HalfOpen { .. } => (2, "half_open"),
        }
    }
}

/// The breakers of every endpoint. Cloning shares them.
#[derive(Clone)]
pub(crate) struct Breakers {
    shared: Arc<Shared>,
}

struct Shared {
    rule: Rule,
    /// `upstream.breaker_hang_up`.
    hang_up: Duration,
    /// Endpoints that have failed since their last success; every other one is closed.
    states: Mutex<HashMap<String, State>>,
    /// Woken whenever a breaker opens.
    opened: Notify,
    state_gauge: IntGaugeVec,
    transitions: IntCounterVec,
}

/// A call let through: settle it with its verdict. Dropped unsettled (its client hung up), it is
/// a failure when it waited `upstream.breaker_hang_up`, else nothing.
pub(crate) struct Permit {
    shared: Arc<Shared>,
    endpoint: String,
    probe: bool,
    sent: Instant,
    settled: bool,
}

impl Breakers {
    /// The breakers `config` asks for; none when `upstream.breaker_failures` is 0.
    pub(crate) fn new(config: &UpstreamConfig, metrics: &BreakerMetrics) -> Option<Breakers> {
        (config.breaker_failures > 0).then(|| Breakers {
            shared: Arc::new(Shared {
                rule: Rule {
                    failures: config.breaker_failures,
                    open_for: config.breaker_open,
                },
                hang_up: config.breaker_hang_up,
                states: Mutex::new(HashMap::new()),
                opened: Notify::new(),
                state_gauge: metrics.state.clone(),
                transitions: metrics.transitions.clone(),
            }),
        })
    }

    /// A call to `endpoint`: let through, or refused at once while its breaker is open.
    pub(crate) fn admit(&self, endpoint: &str) -> Result<Permit, UpstreamError> {
        let now = Instant::now();
        let admission = match self.shared.states.lock().get_mut(endpoint) {
            None => Admission::Call { probe: false },
            Some(state) => {
                let before = *state;
                let admission = state.admit(now);
                // Under the lock, so that the gauge follows the transitions in their order.
                self.shared.transitioned(endpoint, before, *state);
                admission
            }
        };
        match admission {
            Admission::Call { probe } => Ok(Permit {
                shared: self.shared.clone(),
                endpoint: endpoint.to_string(),
                probe,
                sent: now,
                settled: false,
            }),
            Admission::Refused => Err(refusal(endpoint)),
        }
    }

    /// The refusal a call to `endpoint` would get now, without changing anything (the call
    /// that ends an open period is let through, as the probe).
    pub(crate) fn refusing(&self, endpoint: &str) -> Option<UpstreamError> {
        let mut state = *self.shared.states.lock().get(endpoint)?;
        // Asked of a copy: the breaker's own state does not move.
        (state.admit(Instant::now()) == Admission::Refused).then(|| refusal(endpoint))
    }

    /// Resolves, with the refusal, once `endpoint`'s breaker opens after this is first polled.
    /// A read let through while the breaker was closed need wait no longer for an endpoint the
    /// breaker now refuses: nor do the reads waiting for its fill (single-flight), which would
    /// otherwise wait as long as its client.
    pub(crate) async fn opened(&self, endpoint: &str) -> UpstreamError {
        loop {
            self.shared.opened.notified().await;
            let open = matches!(
                self.shared.states.lock().get(endpoint),
                Some(State::Open { until }) if Instant::now() < *until
            );
            if open {
                return refusal(endpoint);
            }
        }
    }

    /// Whether `endpoint`'s breaker is closed (calls to it go through as usual).
    pub(crate) fn is_closed(&self, endpoint: &str) -> bool {
        self.shared
            .states
            .lock()
            .get(endpoint)
            .is_none_or(|s| matches!(s, State::Closed { .. }))
    }
}

/// What a call the breaker of `endpoint` refuses gets.
fn refusal(endpoint: &str) -> UpstreamError {
    UpstreamError::BreakerOpen {
        endpoint: endpoint.to_string(),
    }
}

impl Permit {
    /// Whether this call is the half-open breaker's probe (else it was let through a closed one).
    pub(crate) fn is_probe(&self) -> bool {
        self.probe
    }

    /// Counts how the call ended.
    pub(crate) fn settle(mut self, verdict: Verdict) {
        self.settled = true;
        self.shared.settle(&self.endpoint, self.probe, verdict);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled {
            let verdict = if self.sent.elapsed() >= self.shared.hang_up {
                Verdict::Failure
            } else {
                Verdict::Neither
            };
            self.shared.settle(&self.endpoint, self.probe, verdict);
        }
    }
}

impl Shared {
    fn settle(&self, endpoint: &str, probe: bool, verdict: Verdict) {
        let mut states = self.states.lock();
        let state = match states.get_mut(endpoint) {
            Some(state) => state,
            // Closed with no failure so far: only a failure is worth an entry.
            None if verdict == Verdict::Failure => {
                states.entry(endpoint.to_string()).or_insert(State::CLOSED)
            }
            None => return,
        };
        let before = *state;
        state.settle(self.rule, probe, verdict, Instant::now());
        let after = *state;
        if after == State::CLOSED {
            states.remove(endpoint);
        }
        self.transitioned(endpoint, before, after);
    }

    /// Reports a change of state: the gauge, the transition counter, a log line. Called with the
    /// states locked (transitions are rare), so that the gauge ends on the last one.
    fn transitioned(&self, endpoint: &str, before: State, after: State) {
        let ((was, from), (value, to)) = (before.label(), after.label());
        if was == value {
            return;
        }
        self.state_gauge.with_label_values(&[endpoint]).set(value);
        self.transitions.with_label_values(&[endpoint, to]).inc();
        match after {
            State::Open { .. } => {
                self.opened.notify_waiters();
                warn!(
                endpoint,
                from,
                open_for = ?self.rule.open_for,
                    "upstream circuit breaker open: calls to the endpoint are answered at once"
                )
            }
            State::HalfOpen { .. } => info!(
                endpoint,
                "upstream circuit breaker half-open: one probe call goes through"
            ),
            State::Closed { .. } => info!(
                endpoint,
                "upstream circuit breaker closed: the endpoint answered the probe"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: Rule = Rule {
        failures: 3,
        open_for: Duration::from_secs(10),
    };

    fn call(state: &mut State, now: Instant, verdict: Verdict) -> Admission {
        let admission = state.admit(now);
        if let Admission::Call { probe } = admission {
            state.settle(RULE, probe, verdict, now);
        }
        admission
    }

    #[test]
    fn opens_after_failures_in_a_row_and_refuses_until_its_time_is_up() {
        let t0 = Instant::now();
        let mut state = State::CLOSED;
        call(&mut state, t0, Verdict::Failure);
        call(&mut state, t0, Verdict::Failure);
        // A success in between starts the count again; throttling and 4xx answers are successes.
        call(&mut state, t0, Verdict::Success);
        call(&mut state, t0, Verdict::Failure);
        call(&mut state, t0, Verdict::Failure);
        assert_eq!(state, State::Closed { failures: 2 });
        call(&mut state, t0, Verdict::Neither);
        assert_eq!(state, State::Closed { failures: 2 });
        call(&mut state, t0, Verdict::Failure);
        let until = t0 + RULE.open_for;
        assert_eq!(state, State::Open { until });
        let almost = until - Duration::from_millis(1);
        assert_eq!(state.admit(almost), Admission::Refused);
        assert_eq!(state, State::Open { until });
    }

    #[test]
    fn one_probe_goes_through_and_its_verdict_decides() {
        let t0 = Instant::now();
        let after = t0 + RULE.open_for;
        let open = State::Open { until: t0 };

        // The probe is out: everything else is refused.
        let mut state = open;
        assert_eq!(state.admit(after), Admission::Call { probe: true });
        assert_eq!(state.admit(after), Admission::Refused);
        // A call let through before the breaker opened says nothing now.
        state.settle(RULE, false, Verdict::Success, after);
        assert_eq!(state, State::HalfOpen { probing: true });
        state.settle(RULE, true, Verdict::Success, after);
        assert_eq!(state, State::CLOSED);

        let mut state = open;
        call(&mut state, after, Verdict::Failure);
        assert_eq!(
            state,
            State::Open {
                until: after + RULE.open_for
            }
        );

        // A probe dropped without a verdict: the next call probes.
        let mut state = open;
        call(&mut state, after, Verdict::Neither);
        assert_eq!(state, State::HalfOpen { probing: false });
        assert_eq!(state.admit(after), Admission::Call { probe: true });
    }

    fn answer(status: u16) -> Result<UpstreamResponse, UpstreamError> {
        Ok(UpstreamResponse {
            status: http::StatusCode::from_u16(status).unwrap(),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
            elapsed: Duration::ZERO,
            from_replica: None,
        })
    }

    #[test]
    fn failures_are_no_answer_and_5xx_answers() {
        let endpoint = || "http://e".to_string();
        for (result, verdict) in [
            (answer(200), Verdict::Success),
            // ProvisionedThroughputExceededException, ThrottlingException: the endpoint answers.
            (answer(400), Verdict::Success),
            (answer(500), Verdict::Failure),
            (answer(503), Verdict::Failure),
            (
                Err(UpstreamError::Connect {
                    endpoint: endpoint(),
                    detail: String::new(),
                }),
                Verdict::Failure,
            ),
            (
                Err(UpstreamError::Io {
                    endpoint: endpoint(),
                    detail: String::new(),
                }),
                Verdict::Failure,
            ),
            (
                Err(UpstreamError::Backstop {
                    endpoint: endpoint(),
                    backstop: Duration::ZERO,
                }),
                Verdict::Failure,
            ),
            (
                Err(UpstreamError::BreakerOpen {
                    endpoint: endpoint(),
                }),
                Verdict::Neither,
            ),
        ] {
            assert_eq!(Verdict::of(&result), verdict, "{result:?}");
        }
    }

    #[test]
    fn an_endpoint_that_answers_keeps_no_state_and_a_hang_up_counts_after_a_while() {
        let metrics = crate::metrics::Metrics::new();
        let config = UpstreamConfig {
            breaker_failures: 2,
            breaker_hang_up: Duration::from_secs(3600),
            ..UpstreamConfig::default()
        };
        let breakers = Breakers::new(&config, &metrics.breaker).unwrap();
        let e = "http://e";
        breakers.admit(e).unwrap().settle(Verdict::Failure);
        assert_eq!(breakers.shared.states.lock().len(), 1);
        breakers.admit(e).unwrap().settle(Verdict::Success);
        assert!(breakers.shared.states.lock().is_empty());
        // Hung up at once: nothing. Hung up after the threshold: a failure.
        drop(breakers.admit(e).unwrap());
        assert!(breakers.shared.states.lock().is_empty());
        let hang_up_now = UpstreamConfig {
            breaker_hang_up: Duration::ZERO,
            ..config
        };
        let breakers = Breakers::new(&hang_up_now, &metrics.breaker).unwrap();
        drop(breakers.admit(e).unwrap());
        drop(breakers.admit(e).unwrap());
        assert!(!breakers.is_closed(e));
        assert!(breakers.refusing(e).is_some());
        assert!(matches!(
            breakers.admit(e),
            Err(UpstreamError::BreakerOpen { .. })
        ));
        assert!(breakers.is_closed("http://another"));
        assert_eq!(
            metrics
                .breaker
                .transitions
                .with_label_values(&[e, "open"])
                .get(),
            1
        );
        assert_eq!(metrics.breaker.state.with_label_values(&[e]).get(), 1);
        assert!(Breakers::new(&UpstreamConfig::default(), &metrics.breaker).is_none());
    }
}
