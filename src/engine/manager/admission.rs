//! The manager's side of capacity: admitting a request to a slot (waiting in line,
//! parking an idle session to make room), trimming after a lower cap, and the
//! budgets across sessions. The bookkeeping is [`crate::engine::capacity`].

use super::{EventKind, Manager, SessionEvent, SessionState, Store};
use crate::engine::capacity::{self, Capacity, Gate, Kind, Slot};
use crate::engine::config::SessionOptions;
use crate::engine::error::{EngineError, Result};
use crate::engine::events::now_ms;
use crate::engine::runner::{Load, PlaceRequest};
use crate::engine::session::LiveSession;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

impl Manager {
    /// Set the caps and budgets across this manager's sessions (the policy does, at
    /// load and after each reload). A `max_live` below the live count parks idle
    /// sessions beyond it right away (once a session has started here, so the
    /// runtime is known; before that there is nothing to park).
    pub fn set_capacity(&self, cap: Capacity) {
        self.capacity.set(cap);
        if let (Some(rt), Some(me)) = (self.runtime.get(), self.me.upgrade()) {
            rt.spawn(async move { me.trim().await });
        }
    }

    /// The caps and budgets in force.
    pub fn capacity(&self) -> Capacity {
        self.capacity.capacity()
    }

    /// How many requests wait for a slot (a live child or a turn) now.
    pub fn waiting(&self) -> usize {
        self.capacity.waiting(Kind::Live) + self.capacity.waiting(Kind::Turn)
    }

    /// A function that sets the capacity of this manager while it exists (for a
    /// reload listener, which must not keep the manager alive).
    pub fn capacity_setter(&self) -> impl Fn(Capacity) + Send + Sync + 'static {
        let me = self.me.clone();
        move |cap| {
            if let Some(m) = me.upgrade() {
                m.set_capacity(cap);
            }
        }
    }

    /// Children running now on this machine (in the live map, alive, on no host).
    pub(super) fn live_count(&self) -> usize {
        self.live_count_on(None)
    }

    /// Children running now on `host` (None: this machine).
    pub(super) fn live_count_on(&self, host: Option<&str>) -> usize {
        self.live
            .lock()
            .unwrap()
            .values()
            .filter(|s| s.is_alive() && s.host() == host)
            .count()
    }

    /// The gate of live slots on `host` (None: this machine's, which also holds the
    /// turn slots, pins and budgets). A host's gate is made at first use.
    pub(super) fn gate_for(&self, host: Option<&str>) -> Arc<Gate> {
        match host {
            None => self.capacity.clone(),
            Some(h) => self
                .host_gates
                .lock()
                .unwrap()
                .entry(h.to_string())
                .or_insert_with(Gate::new)
                .clone(),
        }
    }

    /// Live and queued counts of this machine and of each host with a gate.
    pub fn loads(&self) -> (Load, BTreeMap<String, Load>) {
        let local = Load {
            live: self.live_count_on(None),
            queued: self.capacity.waiting(Kind::Live),
        };
        let gates: Vec<(String, Arc<Gate>)> = self
            .host_gates
            .lock()
            .unwrap()
            .iter()
            .map(|(h, g)| (h.clone(), g.clone()))
            .collect();
        let mut hosts: BTreeMap<String, Load> = gates
            .into_iter()
            .map(|(h, g)| {
                let load = Load {
                    live: self.live_count_on(Some(&h)),
                    queued: g.waiting(Kind::Live),
                };
                (h, load)
            })
            .collect();
        for s in self.live.lock().unwrap().values() {
            if let Some(h) = s.host() {
                hosts.entry(h.to_string()).or_default();
            }
        }
        (local, hosts)
    }

    /// Where a spawn that names no host goes: the runner's placement (None: here).
    /// An error refuses the spawn.
    pub(super) fn place(
        &self,
        name: &str,
        options: &SessionOptions,
        cwd: &Path,
    ) -> Result<Option<String>> {
        let (local, hosts) = self.loads();
        let runner = self.runner.read().unwrap().clone();
        runner.place(&PlaceRequest {
            session: name.to_string(),
            options: options.clone(),
            cwd: cwd.to_path_buf(),
            local,
            local_max_live: self.capacity.limit(Kind::Live),
            hosts,
        })
    }

    /// The host of a stored session (None: this machine, or no record).
    async fn host_of(&self, name: &str) -> Result<Option<(String, std::path::PathBuf)>> {
        let n = name.to_string();
        let rec = self.blocking(move |s| s.get(&n)).await?;
        Ok(rec.and_then(|r| {
            let dir = r.resume_dir().to_path_buf();
            r.options.on.map(|h| (h, dir))
        }))
    }

    /// A slot of `kind` for session `name`, waiting in line (FIFO) while none is free.
    /// At the front of the live line, an idle session is parked to make room. While
    /// it waits, a `queued` event tells the place (on entering and at each change);
    /// a session waiting for a process reads `queued` in the store. Dropping the
    /// future leaves the line and puts the state back.
    ///
    /// A live slot of a session on a host is taken from that host's gate, capped by
    /// its `max_live` of `hosts.lua` (read again at each admission); parking makes
    /// room among the idle sessions of the same host.
    pub(super) async fn admit(&self, kind: Kind, name: &str) -> Result<Slot> {
        let host = match kind {
            Kind::Live => self.host_of(name).await?,
            Kind::Turn => None,
        };
        if let Some((h, dir)) = &host {
            let runner = self.runner.read().unwrap().clone();
            let max_live = runner.max_live(h, dir);
            let gate = self.gate_for(Some(h));
            if gate.limit(Kind::Live) != max_live {
                gate.set(Capacity {
                    max_live,
                    ..Capacity::default()
                });
            }
        }
        let host = host.map(|(h, _)| h);
        let host = host.as_deref();
        let gate = self.gate_for(host);
        if gate.limit(kind).is_none() {
            return Ok(Slot::take_now(&gate, kind));
        }
        let mut place = gate.enter(kind, name);
        let mut changes = gate.changes();
        let mut told = 0;
        let mut marked: Option<QueuedMark> = None;
        loop {
            changes.borrow_and_update();
            let taken = match kind {
                Kind::Live => place.try_take(|| self.live_count_on(host)),
                Kind::Turn => place.try_take(|| 0),
            };
            if let Some(slot) = taken {
                return Ok(slot);
            }
            let position = place.position();
            if kind == Kind::Live && position == 1 && self.park_one_on(host).await {
                continue;
            }
            // Recorded before it is announced: who hears of it reads `queued`.
            if kind == Kind::Live && marked.is_none() {
                marked = Some(self.mark_queued(name).await?);
            }
            let position = place.position();
            if position != told {
                told = position;
                self.sink().emit(SessionEvent {
                    session: name.to_string(),
                    at_ms: now_ms(),
                    kind: EventKind::Queued { position },
                });
            }
            // A child that exits on its own says so too; the timeout is a backstop.
            let _ = tokio::time::timeout(CAPACITY_POLL, changes.changed()).await;
        }
    }

    /// Record `queued` (and this process as the one waiting) until the mark is dropped.
    async fn mark_queued(&self, name: &str) -> Result<QueuedMark> {
        let n = name.to_string();
        let before = self
            .blocking(move |s| {
                let mut before = None;
                s.update(&n, |r| {
                    before = Some((r.state, r.host_pid));
                    r.state = SessionState::Queued;
                    r.host_pid = Some(std::process::id());
                })?;
                Ok(before)
            })
            .await?;
        let (state, host_pid) = before.unwrap_or((SessionState::Stopped, None));
        Ok(QueuedMark {
            store: self.store.clone(),
            name: name.to_string(),
            state,
            host_pid,
        })
    }

    /// Park the least recently used idle session (not paused, no request using it):
    /// stopped like `stop`, recorded `parked`. False when none can be.
    pub(super) async fn park_one(&self) -> bool {
        self.park_one_on(None).await
    }

    /// [`Manager::park_one`] among the sessions on `host` (None: this machine).
    pub(super) async fn park_one_on(&self, host: Option<&str>) -> bool {
        let idle: Vec<String> = self
            .live
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s)| s.is_alive() && s.state() == SessionState::Idle && s.host() == host)
            .map(|(n, _)| n.clone())
            .collect();
        let gate = self.gate_for(host);
        for name in self.capacity.least_recent_first(idle) {
            let claimed = self.capacity.claim_unpinned_on(&gate, &name, || {
                let mut live = self.live.lock().unwrap();
                match live.get(&name) {
                    Some(s) if s.is_alive() && s.state() == SessionState::Idle => {
                        live.remove(&name)
                    }
                    _ => None,
                }
            });
            let Some((stopping, s)) = claimed else {
                continue;
            };
            tracing::debug!(session = %name, "parked to make room under max_live");
            // Recorded first, so no list shows it `stopped` meanwhile.
            let n = name.clone();
            let parking = move |st: &Store| st.update(&n, |r| r.state = SessionState::Parked);
            let rec = match self.blocking(parking).await {
                Ok(rec) => rec,
                Err(e) => {
                    tracing::debug!(session = %name, "parking a session with no record: {e}");
                    s.stop().await;
                    return true;
                }
            };
            let parked = self
                .end_taken(rec, Some((stopping, s)), false, SessionState::Parked)
                .await;
            if let Err(e) = parked {
                tracing::warn!(session = %name, "could not record the session as parked: {e}");
            }
            return true;
        }
        false
    }

    /// Park idle sessions while more children live than `max_live` allows (after the
    /// cap was lowered).
    pub(super) async fn trim(&self) {
        while self.capacity.excess(Kind::Live, || self.live_count()) > 0 {
            if !self.park_one().await {
                return;
            }
        }
    }

    /// Waiters look again when `session`'s child ends, however it ends.
    pub(super) fn tell_capacity_on_exit(&self, session: &LiveSession) {
        let mut state = session.watch_state();
        let gate = self.gate_for(session.host());
        let local = self.capacity.clone();
        tokio::spawn(async move {
            while state.borrow_and_update().is_live() {
                if state.changed().await.is_err() {
                    break;
                }
            }
            gate.bump();
            local.bump();
        });
    }

    /// Refuse a turn once a budget across sessions is spent.
    pub(super) async fn check_budgets(&self) -> Result<()> {
        let cap = self.capacity.capacity();
        if let Some(limit) = cap.total_usd {
            let spent = *self.spent.lock().unwrap();
            if spent >= limit {
                return Err(EngineError::HostBudgetSpent {
                    budget: "total_usd",
                    since: "since the host started",
                    limit,
                    spent,
                });
            }
        }
        if let Some(limit) = cap.daily_usd {
            let since = capacity::local_midnight_ms();
            let spent = self.blocking(move |s| s.cost_since(since)).await?;
            if spent >= limit {
                return Err(EngineError::HostBudgetSpent {
                    budget: "daily_usd",
                    since: "since midnight, local time",
                    limit,
                    spent,
                });
            }
        }
        Ok(())
    }
}

/// The longest a request waiting for capacity goes without looking again.
const CAPACITY_POLL: Duration = Duration::from_millis(250);

/// A session recorded `queued` while its request waits for a live slot; dropped (slot
/// taken, or the wait cancelled), the state and host it had come back unless
/// something else changed the state meanwhile.
struct QueuedMark {
    store: Arc<Store>,
    name: String,
    state: SessionState,
    host_pid: Option<u32>,
}

impl Drop for QueuedMark {
    fn drop(&mut self) {
        let (state, host_pid) = (self.state, self.host_pid);
        let r = self.store.update(&self.name, |r| {
            if r.state == SessionState::Queued {
                r.state = state;
                r.host_pid = host_pid;
            }
        });
        if let Err(e) = r {
            tracing::debug!(session = %self.name, "could not put the state back after waiting: {e}");
        }
    }
}
