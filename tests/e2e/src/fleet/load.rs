//! A bounded load generator: N threads of `GET path` through [`http_get`], counted by answer
//! and by cause of failure.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::http::http_get;

/// What a [`LoadGen`] saw.
#[derive(Clone, Debug, Default)]
pub struct LoadStats {
    /// Requests sent.
    pub sent: u64,
    /// Answered 200.
    pub ok: u64,
    /// Anything else (errors, other statuses).
    pub failed: u64,
    /// 200 answers by body (`app VERSION`).
    pub versions: BTreeMap<String, u64>,
    /// The first few failures, for the test's message.
    pub failures: Vec<String>,
    /// Failures by cause ([`Cause`]'s names: `refused`, `reset`, `502`, `503`, `504`,
    /// `timeout`, another status, `other`).
    pub causes: BTreeMap<String, u64>,
    /// How long it ran.
    pub elapsed: Duration,
    /// Every answer: when it was read (wall clock, as CloudWatch timestamps are), its status
    /// and body.
    pub answers: Vec<(std::time::SystemTime, u16, String)>,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cause {
    /// The connection was refused.
    Refused,
    /// Reset or closed before a whole answer.
    Reset,
    /// No answer in time.
    Timeout,
    /// An answer other than 200.
    Status(u16),
    /// Anything else.
    Other,
}

impl Cause {
    /// The name counted in [`LoadStats::causes`].
    #[must_use]
    pub fn name(&self) -> String {
        match self {
            Self::Refused => "refused".into(),
            Self::Reset => "reset".into(),
            Self::Timeout => "timeout".into(),
            Self::Status(c) => c.to_string(),
            Self::Other => "other".into(),
        }
    }

    /// The cause of a failed [`http_get`].
    #[must_use]
    pub fn of_error(e: &anyhow::Error) -> Self {
        use std::io::ErrorKind as K;
        if let Some(io) = e.chain().find_map(|c| c.downcast_ref::<std::io::Error>()) {
            return match io.kind() {
                K::ConnectionRefused => Self::Refused,
                K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
                    Self::Reset
                }
                K::TimedOut | K::WouldBlock => Self::Timeout,
                _ => Self::Other,
            };
        }
        // Closed with nothing or half an answer read.
        if e.to_string().starts_with("not an HTTP response") {
            return Self::Reset;
        }
        Self::Other
    }
}

impl LoadStats {
    /// Requests per second over the run.
    #[must_use]
    pub fn rate(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.sent as f64 / s
        } else {
            0.0
        }
    }

    /// `sent N, failed N (cause: n, …), N req/s`, for reports.
    #[must_use]
    pub fn summary(&self) -> String {
        let causes: Vec<String> = self
            .causes
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        format!(
            "sent {}, ok {}, failed {} ({}), {:.0} req/s over {:.1}s",
            self.sent,
            self.ok,
            self.failed,
            if causes.is_empty() {
                "none".into()
            } else {
                causes.join(", ")
            },
            self.rate(),
            self.elapsed.as_secs_f64()
        )
    }

    fn fail(&mut self, cause: &Cause, what: String) {
        self.failed += 1;
        *self.causes.entry(cause.name()).or_default() += 1;
        if self.failures.len() < 10 {
            self.failures.push(what);
        }
    }

    fn merge(&mut self, o: Self) {
        self.sent += o.sent;
        self.ok += o.ok;
        self.failed += o.failed;
        for (k, v) in o.versions {
            *self.versions.entry(k).or_default() += v;
        }
        for (k, v) in o.causes {
            *self.causes.entry(k).or_default() += v;
        }
        self.failures.extend(
            o.failures
                .into_iter()
                .take(10usize.saturating_sub(self.failures.len())),
        );
        self.elapsed = self.elapsed.max(o.elapsed);
        self.answers.extend(o.answers);
    }

    /// Answers read in `from..to`, by status and body (`(200, "app 2.0.0")`).
    #[must_use]
    pub fn answers_between(
        &self,
        from: std::time::SystemTime,
        to: std::time::SystemTime,
    ) -> BTreeMap<(u16, String), u64> {
        let mut out = BTreeMap::new();
        for (at, code, body) in &self.answers {
            if (from..to).contains(at) {
                *out.entry((*code, body.clone())).or_default() += 1;
            }
        }
        out
    }
}

/// A bounded load generator: `workers` threads each sending `GET path` to a loopback address (or
/// one of the fleet's instances, [`super::http::fleet_reachable`]),
/// one new connection per request with `pause` between, until `max_requests` in all or `max_time`
/// or [`LoadGen::stop`].
#[derive(Debug)]
pub struct LoadGen {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<LoadStats>>,
    live: Arc<Mutex<LoadStats>>,
}

impl LoadGen {
    /// Starts it; refuses any address that is neither loopback nor the fleet's.
    pub fn start(
        addr: SocketAddr,
        path: &str,
        workers: usize,
        max_requests: u64,
        max_time: Duration,
        pause: Duration,
    ) -> anyhow::Result<Self> {
        if !super::http::fleet_reachable(addr) {
            bail!("the load generator only sends to loopback and the fleet's network, not {addr}");
        }
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(Mutex::new(LoadStats::default()));
        let budget = Arc::new(std::sync::atomic::AtomicU64::new(max_requests));
        let started = Instant::now();
        let mut threads = Vec::new();
        for _ in 0..workers.max(1) {
            let (stop, budget, live, path) =
                (stop.clone(), budget.clone(), live.clone(), path.to_owned());
            threads.push(std::thread::spawn(move || {
                let mut st = LoadStats::default();
                while !stop.load(Ordering::SeqCst)
                    && started.elapsed() < max_time
                    && budget
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| b.checked_sub(1))
                        .is_ok()
                {
                    st.sent += 1;
                    let mut one = LoadStats {
                        sent: 1,
                        ..LoadStats::default()
                    };
                    let got = http_get(addr, &path);
                    if let Ok((code, body)) = &got {
                        let answer = (std::time::SystemTime::now(), *code, body.trim().to_owned());
                        st.answers.push(answer.clone());
                        one.answers.push(answer);
                    }
                    match got {
                        Ok((200, body)) => {
                            st.ok += 1;
                            one.ok = 1;
                            let v = body.trim().to_owned();
                            *st.versions.entry(v.clone()).or_default() += 1;
                            one.versions.insert(v, 1);
                        }
                        Ok((code, body)) => {
                            let what = format!("{code} {}", body.trim());
                            st.fail(&Cause::Status(code), what.clone());
                            one.fail(&Cause::Status(code), what);
                        }
                        Err(e) => {
                            let cause = Cause::of_error(&e);
                            st.fail(&cause, format!("{e:#}"));
                            one.fail(&cause, format!("{e:#}"));
                        }
                    }
                    one.elapsed = started.elapsed();
                    live.lock().expect("load lock").merge(one);
                    std::thread::sleep(pause);
                }
                st.elapsed = started.elapsed();
                st
            }));
        }
        Ok(Self {
            stop,
            threads,
            live,
        })
    }

    /// What has been counted so far (while running).
    #[must_use]
    pub fn snapshot(&self) -> LoadStats {
        self.live.lock().expect("load lock").clone()
    }

    /// Stops it and returns the totals.
    #[must_use]
    pub fn stop(mut self) -> LoadStats {
        self.stop.store(true, Ordering::SeqCst);
        let mut total = LoadStats::default();
        for t in self.threads.drain(..) {
            if let Ok(s) = t.join() {
                total.merge(s);
            }
        }
        total
    }
}

impl Drop for LoadGen {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_load_generator_refuses_non_loopback() {
        let e = LoadGen::start(
            SocketAddr::from(([10, 0, 0, 1], 80)),
            "/",
            1,
            1,
            Duration::from_secs(1),
            Duration::ZERO,
        )
        .unwrap_err();
        assert!(e.to_string().contains("loopback"), "{e}");
    }
}
