//! The capacity of one manager: how many `claude` children may live at once
//! (`max_live`), how many turns may run at once (`max_turns`), the budgets across its
//! sessions, and the FIFO queues of the requests waiting for a slot.
//!
//! This file is bookkeeping only: slots, the two queues and the places in them. It
//! knows names, never processes; the manager parks sessions, starts children and
//! announces places ([`crate::engine::manager`]).
//!
//! A request takes a [`Place`] at the back of its queue and may take a [`Slot`] only
//! from the front, so nobody overtakes. Dropping a place (a cancelled caller) leaves
//! the queue; dropping a slot frees it. Every change bumps a counter that waiters
//! watch ([`Gate::changes`]).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

/// The caps and budgets of a manager; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    /// Live `claude` children at once.
    pub max_live: Option<usize>,
    /// Turns in flight at once, across sessions.
    pub max_turns: Option<usize>,
    /// USD of every turn since local midnight, across sessions (from the store).
    pub daily_usd: Option<f64>,
    /// USD of every turn since this manager started.
    pub total_usd: Option<f64>,
}

/// Local midnight of today, in ms since the epoch (UTC midnight when the local time
/// cannot be read).
pub fn local_midnight_ms() -> i64 {
    let now_ms = crate::engine::events::now_ms();
    let utc = now_ms - now_ms.rem_euclid(86_400_000);
    let now = (now_ms / 1000) as libc::time_t;
    // SAFETY: `tm` is plain data, filled by localtime_r from a valid time_t, and
    // mktime reads and normalises it; neither keeps a pointer.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return utc;
        }
        tm.tm_hour = 0;
        tm.tm_min = 0;
        tm.tm_sec = 0;
        tm.tm_isdst = -1;
        match libc::mktime(&mut tm) {
            -1 => utc,
            t => t * 1000,
        }
    }
}

/// The bounds of the memory-sized default of `max_live`.
pub const DEFAULT_MAX_LIVE_BOUNDS: (usize, usize) = (2, 8);

/// The default `max_live`: one child per GiB of memory (`MemTotal` of
/// `/proc/meminfo`), at least 2 and at most 8; 2 when the memory cannot be read.
pub fn default_max_live() -> usize {
    let kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| mem_total_kib(&t));
    max_live_for_memory(kib)
}

/// `MemTotal` in KiB, from the text of `/proc/meminfo`.
fn mem_total_kib(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn max_live_for_memory(kib: Option<u64>) -> usize {
    let (lo, hi) = DEFAULT_MAX_LIVE_BOUNDS;
    match kib {
        Some(kib) => ((kib / (1024 * 1024)) as usize).clamp(lo, hi),
        None => lo,
    }
}

/// What a slot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A live `claude` child.
    Live,
    /// A turn in flight.
    Turn,
}

impl Kind {
    fn index(self) -> usize {
        match self {
            Kind::Live => 0,
            Kind::Turn => 1,
        }
    }
}

/// The slots, queues and pins of one manager.
pub struct Gate {
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

#[derive(Default)]
struct Inner {
    cap: Capacity,
    /// Slots held, by kind.
    held: [usize; 2],
    /// `(place id, session name)`, front first, by kind.
    queues: [VecDeque<(u64, String)>; 2],
    next_place: u64,
    /// Sessions a request is using right now (never parked), with a count.
    pins: HashMap<String, usize>,
    /// When each session was last used (a counter): the least recent is parked first.
    used: HashMap<String, u64>,
    clock: u64,
}

impl Inner {
    fn limit(&self, kind: Kind) -> Option<usize> {
        match kind {
            Kind::Live => self.cap.max_live,
            Kind::Turn => self.cap.max_turns,
        }
    }
}

impl Gate {
    pub fn new() -> Arc<Gate> {
        Arc::new(Gate {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Tell every waiter to look again.
    pub fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees each change of slots, queues or caps.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn capacity(&self) -> Capacity {
        self.lock().cap
    }

    /// New caps; waiters look again at once.
    pub fn set(&self, cap: Capacity) {
        self.lock().cap = cap;
        self.bump();
    }

    /// Slots of `kind` held now.
    pub fn held(&self, kind: Kind) -> usize {
        self.lock().held[kind.index()]
    }

    /// The cap of `kind`, if any.
    pub fn limit(&self, kind: Kind) -> Option<usize> {
        self.lock().limit(kind)
    }

    /// How many are in use beyond the cap of `kind` (0 when within it): the slots
    /// held plus `in_use()` (read under this gate's lock; see [`Place::try_take`]).
    pub fn excess(&self, kind: Kind, in_use: impl FnOnce() -> usize) -> usize {
        let inner = self.lock();
        match inner.limit(kind) {
            Some(max) => (inner.held[kind.index()] + in_use()).saturating_sub(max),
            None => 0,
        }
    }

    /// Under this gate's lock: unless `name` is pinned, run `claim` (which takes the
    /// session out of use, or says None) and hold a live slot for it until the
    /// returned slot is dropped (its child is stopping meanwhile). A request that
    /// pins the session after this sees it gone; one that pinned it before keeps it.
    pub fn claim_unpinned<T>(
        self: &Arc<Self>,
        name: &str,
        claim: impl FnOnce() -> Option<T>,
    ) -> Option<(Slot, T)> {
        {
            let mut inner = self.lock();
            if inner.pins.get(name).is_some_and(|n| *n > 0) {
                return None;
            }
            let taken = claim()?;
            inner.held[Kind::Live.index()] += 1;
            drop(inner);
            self.bump();
            Some((
                Slot {
                    gate: self.clone(),
                    kind: Kind::Live,
                },
                taken,
            ))
        }
    }

    /// [`Gate::claim_unpinned`] with the live slot held on `hold` (another host's
    /// gate; this one keeps the pins). The slot is taken before the claim, so the
    /// child is never uncounted; dropped again when nothing is claimed.
    pub fn claim_unpinned_on<T>(
        self: &Arc<Self>,
        hold: &Arc<Gate>,
        name: &str,
        claim: impl FnOnce() -> Option<T>,
    ) -> Option<(Slot, T)> {
        if Arc::ptr_eq(self, hold) {
            return self.claim_unpinned(name, claim);
        }
        let slot = Slot::take_now(hold, Kind::Live);
        let inner = self.lock();
        if inner.pins.get(name).is_some_and(|n| *n > 0) {
            return None;
        }
        let taken = claim()?;
        drop(inner);
        Some((slot, taken))
    }

    /// How many requests wait for a slot of `kind`.
    pub fn waiting(&self, kind: Kind) -> usize {
        self.lock().queues[kind.index()].len()
    }

    /// Join the back of the queue for a slot of `kind`.
    pub fn enter(self: &Arc<Self>, kind: Kind, name: &str) -> Place {
        let id = {
            let mut inner = self.lock();
            inner.next_place += 1;
            let id = inner.next_place;
            inner.queues[kind.index()].push_back((id, name.to_string()));
            id
        };
        self.bump();
        Place {
            gate: self.clone(),
            kind,
            id,
            taken: false,
        }
    }

    /// Mark a session in use until the pin is dropped: it is not parked meanwhile.
    pub fn pin(self: &Arc<Self>, name: &str) -> Pin {
        let mut inner = self.lock();
        *inner.pins.entry(name.to_string()).or_default() += 1;
        inner.clock += 1;
        let now = inner.clock;
        inner.used.insert(name.to_string(), now);
        Pin {
            gate: self.clone(),
            name: name.to_string(),
        }
    }

    pub fn is_pinned(&self, name: &str) -> bool {
        self.lock().pins.get(name).is_some_and(|n| *n > 0)
    }

    /// `names` ordered least recently used first (never used: first of all).
    pub fn least_recent_first(&self, mut names: Vec<String>) -> Vec<String> {
        let inner = self.lock();
        names.sort_by_key(|n| inner.used.get(n).copied().unwrap_or(0));
        names
    }

    /// Forget a deleted session's use.
    pub fn forget(&self, name: &str) {
        self.lock().used.remove(name);
    }
}

/// A place in the queue for a slot; dropping it leaves the queue.
pub struct Place {
    gate: Arc<Gate>,
    kind: Kind,
    id: u64,
    taken: bool,
}

impl Place {
    /// 1: at the front. 0 once the slot is taken.
    pub fn position(&self) -> usize {
        let inner = self.gate.lock();
        inner.queues[self.kind.index()]
            .iter()
            .position(|(id, _)| *id == self.id)
            .map_or(0, |i| i + 1)
    }

    /// The slot, when this place is at the front and a slot is free: fewer than the
    /// cap are held plus `in_use()` (what is in use outside this gate, e.g. running
    /// children). `in_use` is read under the gate's lock, so a child counted in a held
    /// slot until it is running is never missed nor counted twice.
    pub fn try_take(&mut self, in_use: impl FnOnce() -> usize) -> Option<Slot> {
        let k = self.kind.index();
        {
            let mut inner = self.gate.lock();
            let front = inner.queues[k].front().map(|(id, _)| *id);
            if front != Some(self.id) {
                return None;
            }
            let free = match inner.limit(self.kind) {
                Some(max) => inner.held[k] + in_use() < max,
                None => true,
            };
            if !free {
                return None;
            }
            inner.queues[k].pop_front();
            inner.held[k] += 1;
        }
        self.taken = true;
        self.gate.bump();
        Some(Slot {
            gate: self.gate.clone(),
            kind: self.kind,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if self.taken {
            return;
        }
        {
            let mut inner = self.gate.lock();
            inner.queues[self.kind.index()].retain(|(id, _)| *id != self.id);
        }
        self.gate.bump();
    }
}

/// A held slot; dropping it frees the slot.
pub struct Slot {
    gate: Arc<Gate>,
    kind: Kind,
}

impl Slot {
    /// A slot counted outside any queue (a child started while capacity was not
    /// kept: never refused, so the count stays true).
    pub fn take_now(gate: &Arc<Gate>, kind: Kind) -> Slot {
        gate.lock().held[kind.index()] += 1;
        gate.bump();
        Slot {
            gate: gate.clone(),
            kind,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        {
            let mut inner = self.gate.lock();
            let k = self.kind.index();
            inner.held[k] = inner.held[k].saturating_sub(1);
        }
        self.gate.bump();
    }
}

/// A session in use; dropping it marks it used now and free to park.
pub struct Pin {
    gate: Arc<Gate>,
    name: String,
}

impl Drop for Pin {
    fn drop(&mut self) {
        {
            let mut inner = self.gate.lock();
            if let Some(n) = inner.pins.get_mut(&self.name) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    inner.pins.remove(&self.name);
                }
            }
            inner.clock += 1;
            let now = inner.clock;
            inner.used.insert(self.name.clone(), now);
        }
        self.gate.bump();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max_live: usize) -> Arc<Gate> {
        let g = Gate::new();
        g.set(Capacity {
            max_live: Some(max_live),
            ..Capacity::default()
        });
        g
    }

    #[test]
    fn only_the_front_takes_a_slot_and_places_move_up() {
        let g = gate(1);
        let mut a = g.enter(Kind::Live, "a");
        let mut b = g.enter(Kind::Live, "b");
        let c = g.enter(Kind::Live, "c");
        assert_eq!((a.position(), b.position(), c.position()), (1, 2, 3));
        assert!(b.try_take(|| 0).is_none(), "b is not at the front");
        let slot = a
            .try_take(|| 0)
            .expect("a is at the front and a slot is free");
        assert_eq!(a.position(), 0);
        assert_eq!((b.position(), c.position()), (1, 2));
        assert!(b.try_take(|| 0).is_none(), "the one slot is held");
        drop(slot);
        assert_eq!(g.held(Kind::Live), 0);
        assert!(b.try_take(|| 1).is_none(), "one is in use outside the gate");
        let _b = b.try_take(|| 0).expect("freed");
        assert_eq!(c.position(), 1);
    }

    #[test]
    fn a_dropped_place_leaves_the_queue() {
        let g = gate(1);
        let _held = Slot::take_now(&g, Kind::Live);
        let a = g.enter(Kind::Live, "a");
        let b = g.enter(Kind::Live, "b");
        assert_eq!(g.waiting(Kind::Live), 2);
        drop(a);
        assert_eq!(b.position(), 1);
        drop(b);
        assert_eq!(g.waiting(Kind::Live), 0);
        let midnight = local_midnight_ms();
        let now = crate::engine::events::now_ms();
        assert!(midnight <= now && now - midnight < 86_400_000 + 3_600_000);
        let mut rx = g.changes();
        rx.borrow_and_update();
        let c = g.enter(Kind::Live, "c");
        assert!(rx.has_changed().unwrap(), "entering is a change");
        drop(c);
    }

    #[test]
    fn lowering_the_cap_shows_an_excess_and_no_cap_never_waits() {
        let g = Gate::new();
        let slots: Vec<Slot> = (0..3)
            .map(|i| {
                g.enter(Kind::Turn, &format!("s{i}"))
                    .try_take(|| 0)
                    .expect("no cap")
            })
            .collect();
        assert_eq!(g.excess(Kind::Turn, || 0), 0);
        g.set(Capacity {
            max_turns: Some(1),
            ..Capacity::default()
        });
        assert_eq!(g.excess(Kind::Turn, || 0), 2);
        assert_eq!(g.excess(Kind::Turn, || 1), 3);
        drop(slots);
        assert_eq!(g.excess(Kind::Turn, || 0), 0);
    }

    #[test]
    fn pins_and_least_recent_use() {
        let g = Gate::new();
        drop(g.pin("a"));
        drop(g.pin("b"));
        let p = g.pin("a");
        assert!(g.is_pinned("a") && !g.is_pinned("b"));
        drop(p);
        assert!(!g.is_pinned("a"));
        let order = g.least_recent_first(vec!["a".into(), "b".into(), "new".into()]);
        assert_eq!(order, vec!["new", "b", "a"]);
        assert!(g.claim_unpinned("a", || Some(())).is_some());
        let _p = g.pin("b");
        assert!(g.claim_unpinned("b", || Some(())).is_none(), "b is in use");
        assert_eq!(g.held(Kind::Live), 0, "a's claim was dropped");
    }

    #[test]
    fn the_default_max_live_follows_memory() {
        let gib = 1024 * 1024;
        assert_eq!(max_live_for_memory(None), 2);
        assert_eq!(max_live_for_memory(Some(gib / 2)), 2);
        assert_eq!(max_live_for_memory(Some(5 * gib + 7)), 5);
        assert_eq!(max_live_for_memory(Some(64 * gib)), 8);
        assert_eq!(
            mem_total_kib("MemTotal:       16318480 kB\nMemFree: 1 kB\n"),
            Some(16318480)
        );
        assert_eq!(mem_total_kib("nothing"), None);
        let d = default_max_live();
        assert!((2..=8).contains(&d), "{d}");
    }
}
