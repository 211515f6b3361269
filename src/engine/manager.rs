//! The manager of named sessions: spawn, send (auto-resume), pause, resume, fork,
//! stop, kill, delete, list, status, output, history, batch, cleanup.
//!
//! It keeps the live sessions of this process and the store in step. A session may be
//! live in another cms process (an MCP server, a REPL): the store records the pid of
//! its child and of its host, so stop, kill and delete still reach it, and a record
//! whose host is gone is seen as stopped.

use crate::engine::capacity::{Gate, Kind, Slot};
use crate::engine::config::{EngineConfig, SessionOptions};
use crate::engine::cost::CostScope;
use crate::engine::error::{EngineError, Result};
use crate::engine::events::{now_ms, EventKind, SessionEvent};
use crate::engine::lease::{self, Holder};
use crate::engine::policy::{AllowAll, Policy};
use crate::engine::process;
use crate::engine::response::Response;
use crate::engine::runner::{LocalRunner, RunRequest, Runner};
use crate::engine::session::{EventSink, LiveSession, StartSpec};
pub use crate::engine::sessions::{BatchOutcome, BatchProgress};
use crate::engine::state::SessionState;
use crate::engine::store::{Interaction, SessionRecord, Store, TurnOutcome};
use crate::wire::ClaudeArgs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

mod admission;

pub use crate::engine::spec::{
    check_batch, seconds, split_list, validate_name, BatchSpec, SpawnRequest, SpawnSpec, ToolList,
};

pub struct Manager {
    cfg: EngineConfig,
    store: Arc<Store>,
    live: Mutex<HashMap<String, Arc<LiveSession>>>,
    /// Created on first use: a reading command never pays for it.
    events: std::sync::OnceLock<broadcast::Sender<SessionEvent>>,
    recorder: Mutex<Option<(mpsc::UnboundedSender<SessionEvent>, JoinHandle<()>)>>,
    policy: RwLock<Arc<dyn Policy>>,
    /// Starts the children of sessions pinned to a host ([`crate::engine::runner`]).
    runner: RwLock<Arc<dyn Runner>>,
    /// Makes "is it live? if not, start it" one step for a name; never held while a
    /// request waits for capacity.
    start_lock: tokio::sync::Mutex<()>,
    /// Caps, budgets and the queues for slots ([`crate::engine::capacity`]).
    capacity: Arc<Gate>,
    /// One gate per host (its `max_live`), by host name; this machine's is `capacity`.
    host_gates: Mutex<HashMap<String, Arc<Gate>>>,
    /// USD of the turns this manager ran (`total_usd`).
    spent: Mutex<f64>,
    me: Weak<Manager>,
    /// The runtime sessions run on, once one has started (a lowered cap parks there).
    runtime: OnceLock<tokio::runtime::Handle>,
    /// One line per session from a request's arrival to its message being queued, so
    /// turns run in the order their requests came (a later request cannot overtake
    /// an earlier one that is still resuming or waiting for a slot).
    arrivals: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Manager {
    /// Open the store. Needs no async runtime until a session starts.
    pub fn new(cfg: EngineConfig) -> Result<Arc<Manager>> {
        if cfg.home.is_file() {
            return Err(EngineError::HomeIsFile(cfg.home.clone()));
        }
        let store = Arc::new(Store::open(&cfg.home)?);
        Ok(Arc::new_cyclic(|me| Manager {
            cfg,
            store,
            live: Mutex::new(HashMap::new()),
            events: std::sync::OnceLock::new(),
            recorder: Mutex::new(None),
            policy: RwLock::new(Arc::new(AllowAll)),
            runner: RwLock::new(Arc::new(LocalRunner)),
            start_lock: tokio::sync::Mutex::new(()),
            capacity: Gate::new(),
            host_gates: Mutex::default(),
            spent: Mutex::new(0.0),
            me: me.clone(),
            runtime: OnceLock::new(),
            arrivals: Mutex::default(),
        }))
    }

    /// For a command that only reads: the manager of an existing home, or None when
    /// `cfg.home` does not exist (nothing is created). A home that is a file is an error.
    pub fn open_existing(cfg: EngineConfig) -> Result<Option<Arc<Manager>>> {
        match std::fs::metadata(&cfg.home) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(EngineError::io(
                format!("CMS_HOME ({})", cfg.home.display()),
                e,
            )),
            Ok(_) => Manager::new(cfg).map(Some),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Every event of every session of this process.
    pub fn subscribe(&self) -> broadcast::Receiver<SessionEvent> {
        self.events().subscribe()
    }

    fn events(&self) -> &broadcast::Sender<SessionEvent> {
        self.events.get_or_init(|| broadcast::channel(4096).0)
    }

    /// Replace the policy for sessions started from now on.
    pub fn set_policy(&self, policy: Arc<dyn Policy>) {
        *self.policy.write().unwrap() = policy;
    }

    /// Replace the runner for sessions pinned to a host, from their next start on.
    pub fn set_runner(&self, runner: Arc<dyn Runner>) {
        *self.runner.write().unwrap() = runner;
    }

    /// The live session of that name in this process, if any.
    pub fn live(&self, name: &str) -> Option<Arc<LiveSession>> {
        self.live.lock().unwrap().get(name).cloned()
    }

    /// Names of the sessions live in this process.
    pub fn live_names(&self) -> Vec<String> {
        self.live.lock().unwrap().keys().cloned().collect()
    }

    fn sink(&self) -> EventSink {
        self.runtime.get_or_init(tokio::runtime::Handle::current);
        let mut rec = self.recorder.lock().unwrap();
        if rec.is_none() {
            let (tx, mut rx) = mpsc::unbounded_channel::<SessionEvent>();
            let store = self.store.clone();
            let handle = tokio::spawn(async move {
                let mut news = RecorderNews::default();
                while let Some(first) = rx.recv().await {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    batch.retain(|e| news.is_new(e));
                    if batch.is_empty() {
                        continue;
                    }
                    let store = store.clone();
                    let r = tokio::task::spawn_blocking(move || store.record_events(&batch)).await;
                    if let Ok(Err(e)) = r {
                        tracing::warn!("could not record events: {e}");
                    }
                }
            });
            *rec = Some((tx, handle));
        }
        EventSink {
            tx: self.events().clone(),
            recorder: rec.as_ref().map(|(tx, _)| tx.clone()),
        }
    }

    /// Run a store call off the async threads (it may wait on another process's lock).
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T> + Send + 'static,
    {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| EngineError::Invalid(format!("store task failed: {e}")))?
    }

    // ----- spawning and talking ------------------------------------------------

    /// Start a new named session and send its first prompt.
    pub async fn spawn(&self, req: SpawnRequest) -> Result<(SessionRecord, Response)> {
        validate_name(&req.name)?;
        if req.prompt.trim().is_empty() {
            return Err(EngineError::Invalid("the prompt is empty".into()));
        }
        self.check_budgets().await?;
        let mut options = req.options.clone();
        let work_dir = resolve_dir(options.work_dir.as_deref())?;
        options.work_dir = Some(work_dir.clone());
        if options.model.is_none() {
            options.model = Some(self.cfg.default_model.clone());
        }
        if options.on.is_none() {
            options.on = self.place(&req.name, &options, &work_dir)?;
        }
        let mut rec = SessionRecord::new(&req.name, options, work_dir.clone());
        rec.meta = req.meta.clone();
        // Held from before the record exists: nobody else can drive a half-made session.
        let lease = lease::try_take(&self.cfg.home, &req.name, &self.cfg.host_kind)?
            .ok_or_else(|| EngineError::AlreadyExists(req.name.clone()))?;
        let inserted = rec.clone();
        self.blocking(move |s| s.insert_session(&inserted)).await?;
        let _in_use = self.capacity.pin(&req.name);
        let args = rec.options.claude_args();
        let started = match self.admit(Kind::Live, &req.name).await {
            Ok(slot) => self.start_live(&rec, args, &work_dir, lease, slot).await,
            Err(e) => Err(e),
        };
        let session = match started {
            Ok(s) => s,
            Err(e) => {
                let name = req.name.clone();
                let _ = self.blocking(move |s| s.delete(&name)).await;
                return Err(e);
            }
        };
        let kind = req.kind.as_deref().unwrap_or("spawn");
        let result = self
            .turn(&req.name, &session, kind, &req.prompt, req.timeout, None)
            .await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                // Nothing to resume without a Claude session id: do not keep a dead name.
                let name = req.name.clone();
                if let Ok(Some(r)) = self.blocking(move |s| s.get(&name)).await {
                    if r.claude_session_id.is_none() {
                        let name = req.name.clone();
                        let _ = self.blocking(move |s| s.delete(&name)).await;
                    }
                }
                return Err(e);
            }
        };
        if req.stop_after {
            self.stop(&req.name).await?;
        }
        let name = req.name.clone();
        let rec = self.blocking(move |s| s.require(&name)).await?;
        Ok((rec, response))
    }

    /// Send a follow-up; a session with no live process is resumed first
    /// (`--resume ID`, same working directory).
    pub async fn send(
        &self,
        name: &str,
        message: &str,
        timeout: Option<Duration>,
    ) -> Result<Response> {
        self.send_as(name, message, timeout, "send").await
    }

    /// [`Manager::send`] with the history kind to record (`continue`, `retry`, ...).
    pub async fn send_as(
        &self,
        name: &str,
        message: &str,
        timeout: Option<Duration>,
        kind: &str,
    ) -> Result<Response> {
        if message.trim().is_empty() {
            return Err(EngineError::Invalid("the message is empty".into()));
        }
        // In line from here (before anything waits) until the message is queued.
        let line = self
            .arrivals
            .lock()
            .unwrap()
            .entry(name.to_string())
            .or_default()
            .clone();
        let in_order = line.lock_owned().await;
        self.check_budgets().await?;
        let in_use = self.capacity.pin(name);
        let session = self.live_or_resume(name).await?;
        let result = self
            .turn(name, &session, kind, message, timeout, Some(in_order))
            .await;
        drop(in_use);
        self.trim().await;
        result
    }

    /// One turn on a live session, recorded in the store whatever its outcome.
    async fn turn(
        &self,
        name: &str,
        session: &Arc<LiveSession>,
        kind: &str,
        message: &str,
        timeout: Option<Duration>,
        in_order: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<Response> {
        let _turn_slot = self.admit(Kind::Turn, name).await?;
        // Budgets across sessions, then the session's own (across its processes): a
        // spent one takes no turn.
        self.check_budgets().await?;
        let info = session.info();
        budget_left(name, info.budget_usd, info.session_cost)?;
        let started = Instant::now();
        // Written before the turn and awaited, so the turn's end always lands after it.
        let n = name.to_string();
        if let Err(e) = self
            .blocking(move |s| s.set_state(&n, SessionState::Busy))
            .await
        {
            tracing::debug!("could not mark {name} busy: {e}");
        }
        // Dropped before the turn ends (Ctrl-C, a cancelled caller): the turn is still
        // recorded, as interrupted.
        let mut unfinished = Unfinished {
            store: self.store.clone(),
            session: session.clone(),
            name: name.to_string(),
            kind: kind.to_string(),
            message: message.to_string(),
            started,
            armed: true,
        };
        // Queued now, then the next request of this session may go on.
        let queued = session.enqueue(message, timeout);
        drop(in_order);
        let result = match queued {
            Ok(q) => session.answer(q).await,
            Err(e) => Err(e),
        };
        unfinished.armed = false;
        let result = self.conversation_missing(name, result).await;
        if matches!(result, Err(EngineError::LineTooLong { .. })) {
            // The session is stopping: wait for it, so the next send resumes cleanly.
            session.stop().await;
        }
        let info = session.info();
        let state = session.state();
        if !session.is_alive() {
            self.forget(name, session);
        }
        let (response, error) = match &result {
            Ok(r) => (Some(r.clone()), None),
            Err(e) => (e.partial().cloned(), Some(e.to_string())),
        };
        if let Some(r) = &response {
            *self.spent.lock().unwrap() += r.cost_usd;
        }
        let reported_cost_usd = info.reported_total;
        let (name2, kind2, message2) = (name.to_string(), kind.to_string(), message.to_string());
        let duration_ms = started.elapsed().as_millis() as u64;
        let keep_pid = session.is_alive();
        let record = self
            .blocking(move |s| {
                let outcome = TurnOutcome {
                    response: response.as_ref(),
                    error: error.as_deref(),
                    duration_ms,
                    session_id: info.session_id.as_deref(),
                    cwd: info.cwd.as_deref(),
                    reported_cost_usd,
                    cost_scope: info
                        .cost_baseline
                        .as_ref()
                        .map(|b| b.scope)
                        .filter(|s| *s != CostScope::Unknown),
                    session_cost_usd: Some(info.session_cost),
                };
                let rec = s.record_turn(&name2, &kind2, &message2, &outcome, state)?;
                if !keep_pid {
                    s.update(&name2, |r| {
                        r.pid = None;
                        r.host_pid = None;
                    })?;
                }
                Ok(rec)
            })
            .await;
        if let Err(e) = record {
            tracing::warn!(session = %name, "could not record the turn: {e}");
        }
        result
    }

    /// A resume that found no conversation (the CLI says `No conversation found`, as a
    /// failed result or on stderr) becomes an error naming where Claude Code looked.
    async fn conversation_missing(&self, name: &str, result: Result<Response>) -> Result<Response> {
        const NOT_FOUND: &str = "No conversation found";
        let partial = match &result {
            Ok(r) if r.is_error && r.errors.iter().any(|e| e.contains(NOT_FOUND)) => {
                Some(Box::new(r.clone()))
            }
            Err(EngineError::Exited {
                stderr, partial, ..
            }) if stderr.contains(NOT_FOUND) => partial.clone(),
            _ => return result,
        };
        let n = name.to_string();
        let Ok(Some(rec)) = self.blocking(move |s| s.get(&n)).await else {
            return result;
        };
        let Some(id) = rec.fork_parent_id.clone().or(rec.claude_session_id.clone()) else {
            return result;
        };
        let dir = rec.resume_dir().to_path_buf();
        let looked = conversation_path(&self.cfg.child_env, &dir, &id);
        Err(EngineError::ConversationMissing {
            name: name.to_string(),
            id,
            looked,
            dir,
            partial,
        })
    }

    fn forget(&self, name: &str, session: &Arc<LiveSession>) {
        let mut live = self.live.lock().unwrap();
        if live.get(name).is_some_and(|s| Arc::ptr_eq(s, session)) {
            live.remove(name);
        }
    }

    /// The live session, or a new process resuming the stored conversation. Another
    /// cms process driving the session is waited for, in arrival order (see
    /// [`crate::engine::lease`]), unless it keeps sessions live for long (an MCP server,
    /// a REPL, a script) or the configuration says not to wait.
    async fn live_or_resume(&self, name: &str) -> Result<Arc<LiveSession>> {
        let mut ticket: Option<Ticket> = None;
        // A free live slot, taken (waiting in line) before a process is started.
        let mut slot: Option<Slot> = None;
        loop {
            {
                let guard = self.start_lock.lock().await;
                if let Some(s) = self.live(name) {
                    // Ended from elsewhere (`cms stop` in another process) before this
                    // process heard of it: let it catch up, so the send resumes.
                    if s.is_alive() && !process::pid_running(s.pid()) {
                        s.stop().await;
                    }
                }
                if let Some(s) = self.live_here(name)? {
                    return Ok(s);
                }
                let Some(free) = slot.take() else {
                    // Waiting for capacity holds no lock: other requests go on.
                    drop(guard);
                    let n = name.to_string();
                    let rec = self.blocking(move |s| s.require(&n)).await?;
                    if rec.state == SessionState::Paused {
                        return Err(EngineError::Paused(name.to_string()));
                    }
                    slot = Some(self.admit(Kind::Live, name).await?);
                    continue;
                };
                let n = name.to_string();
                let mine = ticket.as_ref().map_or(i64::MAX, |t| t.id);
                let ahead = self.blocking(move |s| s.tickets_before(&n, mine)).await?;
                if ahead == 0 {
                    if let Some(lease) = lease::try_take(&self.cfg.home, name, &self.cfg.host_kind)?
                    {
                        drop(ticket.take());
                        return self.resume_locked(name, lease, free).await;
                    }
                }
                slot = Some(free);
                let n = name.to_string();
                self.blocking(move |s| s.require(&n)).await?;
                let holder = lease::holder(&self.cfg.home, name);
                // This very process (a child of ours just ended) is not waited on forever.
                let ours = holder.pid == Some(std::process::id());
                if holder.is_long_lived() && !ours {
                    return Err(EngineError::HeldElsewhere {
                        name: name.to_string(),
                        holder: holder.who(),
                    });
                }
                if !self.cfg.wait_when_busy {
                    return Err(EngineError::Busy {
                        name: name.to_string(),
                        holder: holder.who(),
                    });
                }
                if ticket.is_none() {
                    let n = name.to_string();
                    let id = self
                        .blocking(move |s| s.take_ticket(&n, std::process::id()))
                        .await?;
                    ticket = Some(Ticket {
                        id,
                        store: self.store.clone(),
                    });
                    self.sink().emit(SessionEvent {
                        session: name.to_string(),
                        at_ms: now_ms(),
                        kind: EventKind::Waiting {
                            holder_pid: holder.pid,
                            holder_kind: holder.kind,
                            position: ahead + 1,
                        },
                    });
                }
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// The session live in this process, if its child still runs.
    fn live_here(&self, name: &str) -> Result<Option<Arc<LiveSession>>> {
        if let Some(s) = self.live(name) {
            if s.is_alive() {
                if s.is_paused() {
                    return Err(EngineError::Paused(name.to_string()));
                }
                return Ok(Some(s));
            }
            self.live.lock().unwrap().remove(name);
        }
        Ok(None)
    }

    /// Start a process resuming (or forking) the stored conversation; the lease is held.
    async fn resume_locked(
        &self,
        name: &str,
        lease: lease::Lease,
        slot: Slot,
    ) -> Result<Arc<LiveSession>> {
        let n = name.to_string();
        let rec = self.blocking(move |s| s.require(&n)).await?;
        if rec.state == SessionState::Paused {
            return Err(EngineError::Paused(name.to_string()));
        }
        // A cms from before leases holds none: the store still says it is live there.
        not_held_elsewhere(&rec)?;
        let mut args = rec.options.claude_args();
        let mut recorded = rec.reported_cost_usd;
        let mut scope = rec.cost_scope;
        match (&rec.fork_parent_id, &rec.claude_session_id) {
            (Some(parent), planned) => {
                args.resume = Some(parent.clone());
                args.fork_session = true;
                args.session_id = planned.clone();
                // A fork starts from its parent's conversation, and its count from there.
                let parent_name = rec.forked_from.clone();
                let parent = match parent_name {
                    Some(p) => self.blocking(move |s| s.get(&p)).await?,
                    None => None,
                };
                recorded = parent.as_ref().and_then(|p| p.reported_cost_usd);
                scope = parent.and_then(|p| p.cost_scope);
            }
            (None, Some(id)) => args.resume = Some(id.clone()),
            (None, None) => return Err(EngineError::NoSessionId(name.to_string())),
        }
        let dir = rec.resume_dir().to_path_buf();
        // A worktree exists already; resuming must not create it again.
        args.worktree = None;
        let mut rec = rec;
        rec.reported_cost_usd = recorded;
        rec.cost_scope = scope;
        self.start_live_locked(&rec, args, &dir, lease, slot).await
    }

    async fn start_live(
        &self,
        rec: &SessionRecord,
        args: ClaudeArgs,
        cwd: &Path,
        lease: lease::Lease,
        slot: Slot,
    ) -> Result<Arc<LiveSession>> {
        let _guard = self.start_lock.lock().await;
        self.start_live_locked(rec, args, cwd, lease, slot).await
    }

    /// Start the child. `rec.reported_cost_usd` is the conversation total the CLI last
    /// reported (for a fork, the parent's). `slot` counts the child until it is in
    /// the live map, where it is counted from then on.
    async fn start_live_locked(
        &self,
        rec: &SessionRecord,
        mut args: ClaudeArgs,
        cwd: &Path,
        lease: lease::Lease,
        slot: Slot,
    ) -> Result<Arc<LiveSession>> {
        // `--max-budget-usd` counts one process; the session's budget is for its life.
        let budget_usd = args.max_budget_usd;
        args.max_budget_usd = budget_left(&rec.name, budget_usd, rec.total_cost_usd)?;
        let global = self.policy.read().unwrap().clone();
        let policy = global
            .session_policy(&rec.name, &rec.options)
            .unwrap_or(global);
        if policy.wants_tool_prompts() {
            args.permission_prompt_stdio = true;
        }
        let resumes = args.resume.is_some();
        let mut env = self.cfg.child_env.clone();
        policy.launch(&self.cfg.home, cwd, &mut args, &mut env);
        // A session pinned to a host starts through the runner; others as always.
        let launch = match &rec.options.on {
            Some(host) => {
                let runner = self.runner.read().unwrap().clone();
                Some(runner.launch(&RunRequest {
                    session: rec.name.clone(),
                    host: Some(host.clone()),
                    claude_bin: self.cfg.claude_bin.clone(),
                    argv: args.to_argv(),
                    cwd: cwd.to_path_buf(),
                    env: env.clone(),
                })?)
            }
            None => None,
        };
        let spec = StartSpec {
            name: rec.name.clone(),
            claude_bin: self.cfg.claude_bin.clone(),
            supervisor: self.cfg.supervisor.clone(),
            args,
            cwd: cwd.to_path_buf(),
            env,
            cost_before: rec.total_cost_usd,
            turns_before: rec.total_turns,
            recorded_conversation_cost: resumes.then_some(rec.reported_cost_usd).flatten(),
            recorded_scope: resumes.then_some(rec.cost_scope).flatten(),
            budget_usd,
            lease: Some(Arc::new(lease)),
            turn_timeout: self.cfg.turn_timeout,
            stop_grace: self.cfg.stop_grace,
            interrupt_grace: self.cfg.interrupt_grace,
            launch,
            host: rec.options.on.clone(),
        };
        let session = Arc::new(LiveSession::start(spec, policy, self.sink())?);
        self.live
            .lock()
            .unwrap()
            .insert(rec.name.clone(), session.clone());
        drop(slot);
        self.tell_capacity_on_exit(&session);
        let (name, pid, kind) = (rec.name.clone(), session.pid(), self.cfg.host_kind.clone());
        self.blocking(move |s| {
            s.update(&name, |r| {
                r.state = SessionState::Starting;
                r.pid = Some(pid);
                r.host_pid = Some(std::process::id());
                r.host_kind = Some(kind);
                r.retry = None;
            })
        })
        .await?;
        Ok(session)
    }

    // ----- lifecycle -------------------------------------------------------------

    /// Refuse new sends until resumed; the live process (if any) is kept. A turn in
    /// flight finishes.
    pub async fn pause(&self, name: &str) -> Result<SessionRecord> {
        if let Some(s) = self.live(name) {
            s.pause();
        }
        let n = name.to_string();
        self.blocking(move |s| s.update(&n, |r| r.state = SessionState::Paused))
            .await
    }

    /// Clear a pause; with a message, send it (resuming the process if needed).
    pub async fn resume(
        &self,
        name: &str,
        message: Option<&str>,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)> {
        let n = name.to_string();
        let rec = self.blocking(move |s| s.require(&n)).await?;
        let live = self.live(name).filter(|s| s.is_alive());
        let new_state = match &live {
            Some(s) => {
                s.unpause();
                // Idle again, it may be parked for a request waiting in line.
                self.capacity.bump();
                s.state()
            }
            None => match rec.state {
                SessionState::Paused => SessionState::Stopped,
                other => self.effective_state(&rec).unwrap_or(other),
            },
        };
        let n = name.to_string();
        self.blocking(move |s| s.update(&n, |r| r.state = new_state))
            .await?;
        let response = match message {
            Some(m) => Some(self.send_as(name, m, timeout, "resume").await?),
            None => None,
        };
        let n = name.to_string();
        let rec = self.blocking(move |s| s.require(&n)).await?;
        Ok((rec, response))
    }

    /// A new session holding the parent's conversation (`--resume ID --fork-session`).
    /// The parent is unchanged. Without a message the fork is recorded and runs on its
    /// first send.
    pub async fn fork(
        &self,
        name: &str,
        new_name: &str,
        message: Option<&str>,
        overrides: SessionOptions,
        timeout: Option<Duration>,
    ) -> Result<(SessionRecord, Option<Response>)> {
        validate_name(new_name)?;
        let n = name.to_string();
        let parent = self.blocking(move |s| s.require(&n)).await?;
        let parent_id = match (&parent.fork_parent_id, &parent.claude_session_id) {
            (None, Some(id)) => id.clone(),
            _ => return Err(EngineError::NoSessionId(name.to_string())),
        };
        let mut options = parent.options.clone();
        if overrides.model.is_some() {
            options.model = overrides.model;
        }
        if overrides.system_prompt.is_some() {
            options.system_prompt = overrides.system_prompt;
        }
        if overrides.permission_mode.is_some() {
            options.permission_mode = overrides.permission_mode;
        }
        options.worktree = None;
        // A budget is not renewed by forking: the fork gets what the parent has left.
        options.max_budget_usd = budget_left(name, options.max_budget_usd, parent.total_cost_usd)?;
        let mut rec = SessionRecord::new(new_name, options, parent.work_dir.clone());
        rec.cwd = parent.cwd.clone();
        rec.forked_from = Some(name.to_string());
        rec.fork_parent_id = Some(parent_id);
        rec.claude_session_id = Some(uuid::Uuid::new_v4().to_string());
        rec.state = SessionState::Stopped;
        let inserted = rec.clone();
        self.blocking(move |s| s.insert_session(&inserted)).await?;
        let response = match message {
            Some(m) => Some(self.send_as(new_name, m, timeout, "fork").await?),
            None => None,
        };
        let n = new_name.to_string();
        let rec = self.blocking(move |s| s.require(&n)).await?;
        Ok((rec, response))
    }

    /// Interrupt the running turn of a session live in this process.
    pub async fn interrupt(&self, name: &str) -> Result<()> {
        match self.live(name) {
            Some(s) => s.interrupt().await,
            None => {
                let n = name.to_string();
                let rec = self.blocking(move |s| s.require(&n)).await?;
                match (other_live_host(&rec), rec.pid) {
                    // SIGINT makes the CLI interrupt its turn and go on (PROTOCOL.md).
                    (Some(_), Some(pid)) => {
                        process::signal_pid(pid, libc::SIGINT);
                        Ok(())
                    }
                    _ => Err(EngineError::NotLive(name.to_string())),
                }
            }
        }
    }

    /// Stop gracefully (resumable later).
    pub async fn stop(&self, name: &str) -> Result<SessionRecord> {
        self.end(name, false).await
    }

    /// Kill the session's process group now (resumable later when an id is known).
    pub async fn kill(&self, name: &str) -> Result<SessionRecord> {
        self.end(name, true).await
    }

    async fn end(&self, name: &str, kill: bool) -> Result<SessionRecord> {
        let n = name.to_string();
        let rec = self.blocking(move |s| s.require(&n)).await?;
        let live = self.take_live(name);
        self.end_taken(rec, live, kill, SessionState::Stopped).await
    }

    /// Take a session out of the live map; its child counts in the slot returned
    /// until it has stopped.
    fn take_live(&self, name: &str) -> Option<(Slot, Arc<LiveSession>)> {
        let host = self.live(name).and_then(|s| s.host().map(str::to_string));
        let hold = Slot::take_now(&self.gate_for(host.as_deref()), Kind::Live);
        let s = self.live.lock().unwrap().remove(name)?;
        Some((hold, s))
    }

    /// Stop (or kill) a session taken out of the live map, or its process in another
    /// cms; record `resting` (`stopped`, or `parked`) unless it was killed or failed.
    async fn end_taken(
        &self,
        rec: SessionRecord,
        live: Option<(Slot, Arc<LiveSession>)>,
        kill: bool,
        resting: SessionState,
    ) -> Result<SessionRecord> {
        let name = rec.name.as_str();
        let mut last_error = None;
        if let Some((_stopping, s)) = live {
            let exit = if kill { s.kill().await } else { s.stop().await };
            if !kill && exit.code.is_some_and(|c| c != 0) {
                last_error = Some(format!("claude exited with code {:?} on stop", exit.code));
            }
        } else if let (Some(_), Some(pid)) = (other_live_host(&rec), rec.pid) {
            if kill {
                let _ = tokio::task::spawn_blocking(move || process::end_tree(pid)).await;
            } else {
                process::signal_group(pid, libc::SIGTERM);
                // Stopped means stopped: the holder's next send then resumes it.
                let limit = self.cfg.stop_grace + Duration::from_secs(3);
                let gone = tokio::task::spawn_blocking(move || process::wait_gone(pid, limit))
                    .await
                    .unwrap_or(false);
                if !gone {
                    // It ignored SIGTERM: end its tree, as a local stop does.
                    tokio::task::spawn_blocking(move || process::end_tree(pid))
                        .await
                        .ok();
                }
            }
        }
        let state = if kill {
            SessionState::Killed
        } else if rec.state == SessionState::Killed || rec.state == SessionState::Failed {
            rec.state
        } else {
            resting
        };
        let n = name.to_string();
        self.blocking(move |s| {
            s.update(&n, |r| {
                r.state = state;
                r.pid = None;
                r.host_pid = None;
                if last_error.is_some() {
                    r.last_error = last_error;
                }
            })
        })
        .await
    }

    /// Tool calls waiting for a person's decision in the sessions of this process,
    /// oldest first.
    pub fn approvals(&self) -> Vec<crate::engine::approval::Approval> {
        let live: Vec<Arc<LiveSession>> = self.live.lock().unwrap().values().cloned().collect();
        let mut all: Vec<_> = live.iter().flat_map(|s| s.approvals()).collect();
        all.sort_by_key(|a| a.asked_at_ms);
        all
    }

    /// Decide a tool call waiting in a session of this process.
    pub async fn decide(
        &self,
        verdict: crate::engine::approval::Verdict,
    ) -> Result<crate::engine::approval::Approval> {
        match self.live(&verdict.session) {
            Some(s) => s.decide(verdict).await,
            None => {
                self.store.require(&verdict.session)?;
                Err(EngineError::Invalid(format!(
                    "session '{}' has no running process in this cms process, so no tool call of \
                     it waits here: a call waits in the process that runs its session (the \
                     session host, or the command that ran it with --no-host) and is decided there",
                    verdict.session
                )))
            }
        }
    }

    /// Whether the session has a running process (here or in another cms process).
    pub fn has_process(&self, name: &str) -> Result<bool> {
        if self.live(name).is_some_and(|s| s.is_alive()) {
            return Ok(true);
        }
        let rec = self.status(name)?;
        // A session still starting (in another cms) is about to have one.
        Ok(rec.state == SessionState::Starting
            || (rec.pid.is_some() && other_live_host(&rec).is_some()))
    }

    /// Delete a session to start it anew (a plan run again): refused while another
    /// cms process drives it, so a re-run never destroys someone else's live work.
    pub async fn delete_to_replace(&self, name: &str) -> Result<()> {
        let n = name.to_string();
        let rec = self.blocking(move |s| s.require(&n)).await?;
        not_held_elsewhere(&rec)?;
        self.delete(name).await
    }

    /// Remove a session for good (its live process is killed).
    pub async fn delete(&self, name: &str) -> Result<()> {
        let n = name.to_string();
        let rec = self.blocking(move |s| s.require(&n)).await?;
        if let Some((_stopping, s)) = self.take_live(name) {
            s.kill().await;
        } else if let (Some(_), Some(pid)) = (other_live_host(&rec), rec.pid) {
            let _ = tokio::task::spawn_blocking(move || process::end_tree(pid)).await;
        }
        let n = name.to_string();
        self.blocking(move |s| s.delete(&n)).await?;
        self.capacity.forget(name);
        Ok(())
    }

    // ----- reading -----------------------------------------------------------------

    /// A record with its state as it really is now (a live state whose host is gone
    /// reads as `stopped`).
    pub fn status(&self, name: &str) -> Result<SessionRecord> {
        let mut rec = self.store.require(name)?;
        self.reconcile(&mut rec);
        Ok(rec)
    }

    /// Every session, most recently active first.
    pub fn list(&self) -> Result<Vec<SessionRecord>> {
        let mut recs = self.store.list()?;
        for r in &mut recs {
            self.reconcile(r);
        }
        Ok(recs)
    }

    fn reconcile(&self, rec: &mut SessionRecord) {
        if let Some(s) = self.live(&rec.name) {
            rec.state = s.state();
            return;
        }
        if let Some(state) = self.effective_state(rec) {
            rec.state = state;
            rec.pid = None;
            rec.host_pid = None;
        }
    }

    /// The state a record should have if its recorded process is gone (None: as stored).
    fn effective_state(&self, rec: &SessionRecord) -> Option<SessionState> {
        if rec.state == SessionState::Queued {
            // Waiting in a cms process: as stored while that process lives.
            let waiting = rec.host_pid.is_some_and(process::pid_alive);
            return (!waiting).then_some(SessionState::Stopped);
        }
        let claims_process = rec.state.is_live() || rec.pid.is_some();
        if !claims_process || self.live(&rec.name).is_some() || other_live_host(rec).is_some() {
            return None;
        }
        // Being started right now (here or in another process): no pid is known yet.
        let just_made = now_ms() - rec.updated_at < STARTING_GRACE_MS;
        if rec.state == SessionState::Starting && rec.pid.is_none() && just_made {
            return None;
        }
        Some(if rec.state.is_live() {
            SessionState::Stopped
        } else {
            rec.state
        })
    }

    /// The last response text.
    pub fn output(&self, name: &str) -> Result<Option<String>> {
        Ok(self.store.require(name)?.last_response)
    }

    pub fn history(&self, name: &str) -> Result<Vec<Interaction>> {
        self.store.require(name)?;
        self.store.history(name)
    }

    /// Delete sessions idle for more than `days` days (never one that is live here or in
    /// another running cms process). Returns the names removed.
    pub fn cleanup(&self, days: f64) -> Result<Vec<String>> {
        let names: Vec<String> = self.idle(days)?.into_iter().map(|r| r.name).collect();
        self.remove_idle(&names, days)
    }

    /// The sessions [`Manager::cleanup`] would remove now, most recently active first.
    pub fn idle(&self, days: f64) -> Result<Vec<SessionRecord>> {
        let cutoff = idle_cutoff(days)?;
        Ok(self
            .store
            .list()?
            .into_iter()
            .filter(|rec| self.is_idle(rec, cutoff))
            .collect())
    }

    /// Remove those of `names` that are still idle for more than `days` days (one
    /// may have been used since it was listed). Returns the names removed.
    pub fn remove_idle(&self, names: &[String], days: f64) -> Result<Vec<String>> {
        let cutoff = idle_cutoff(days)?;
        let mut removed = Vec::new();
        for name in names {
            let Some(rec) = self.store.get(name)? else {
                continue;
            };
            if self.is_idle(&rec, cutoff) && self.store.delete(&rec.name)? {
                removed.push(rec.name);
            }
        }
        Ok(removed)
    }

    fn is_idle(&self, rec: &SessionRecord, cutoff: i64) -> bool {
        rec.updated_at < cutoff && self.live(&rec.name).is_none() && other_live_host(rec).is_none()
    }

    /// Stop every live session of this process gracefully and flush recorded events.
    pub async fn shutdown(&self) {
        let sessions: Vec<(String, Arc<LiveSession>)> = self.live.lock().unwrap().drain().collect();
        let mut set = tokio::task::JoinSet::new();
        for (name, s) in sessions {
            let store = self.store.clone();
            set.spawn(async move {
                let paused = s.is_paused();
                s.stop().await;
                let _ = tokio::task::spawn_blocking(move || {
                    store.update(&name, |r| {
                        if r.state.is_live() {
                            r.state = if paused {
                                SessionState::Paused
                            } else {
                                SessionState::Stopped
                            };
                        }
                        r.pid = None;
                        r.host_pid = None;
                    })
                })
                .await;
            });
        }
        while set.join_next().await.is_some() {}
        let recorder = self.recorder.lock().unwrap().take();
        if let Some((tx, handle)) = recorder {
            drop(tx);
            let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
        }
    }

    /// Kill every live session of this process now (Ctrl-C, SIGTERM).
    pub async fn kill_all(&self) {
        let sessions: Vec<(String, Arc<LiveSession>)> = self.live.lock().unwrap().drain().collect();
        for (name, s) in sessions {
            s.kill().await;
            let store = self.store.clone();
            let _ = tokio::task::spawn_blocking(move || {
                store.update(&name, |r| {
                    r.state = SessionState::Stopped;
                    r.pid = None;
                    r.host_pid = None;
                    r.last_error = Some("cms was interrupted; the session can be resumed".into());
                })
            })
            .await;
        }
    }
}

fn idle_cutoff(days: f64) -> Result<i64> {
    if days.is_nan() || days < 0.0 {
        return Err(EngineError::Invalid(format!(
            "the idle time must be 0 days or more, got {days}"
        )));
    }
    Ok(now_ms() - (days * 86_400_000.0) as i64)
}

/// A turn whose caller went away before it ended (Ctrl-C, a cancelled request): its
/// interaction is recorded with the error `interrupted`, so `history` shows it.
struct Unfinished {
    store: Arc<Store>,
    session: Arc<LiveSession>,
    name: String,
    kind: String,
    message: String,
    started: Instant,
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let info = self.session.info();
        let outcome = TurnOutcome {
            response: None,
            error: Some("interrupted: cms stopped waiting before the turn finished"),
            duration_ms: self.started.elapsed().as_millis() as u64,
            session_id: info.session_id.as_deref(),
            cwd: info.cwd.as_deref(),
            reported_cost_usd: None,
            cost_scope: None,
            session_cost_usd: Some(info.session_cost),
        };
        let state = self.session.state();
        if let Err(e) =
            self.store
                .record_turn(&self.name, &self.kind, &self.message, &outcome, state)
        {
            tracing::debug!(session = %self.name, "could not record the interrupted turn: {e}");
        }
    }
}

/// Where Claude Code looks for a conversation: `<config>/projects/<cwd slug>/<id>.jsonl`,
/// the config folder being `CLAUDE_CONFIG_DIR`, or `~/.claude` (the child's
/// environment first, then this process's).
pub fn conversation_path(child_env: &[(String, String)], cwd: &Path, id: &str) -> PathBuf {
    let var = |k: &str| {
        child_env
            .iter()
            .rev()
            .find(|(key, _)| key == k)
            .map(|(_, v)| std::ffi::OsString::from(v))
            .or_else(|| std::env::var_os(k))
            .filter(|v| !v.is_empty())
    };
    let config = var("CLAUDE_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(var("HOME").unwrap_or_else(|| "~".into())).join(".claude")
        });
    let slug: String = cwd
        .display()
        .to_string()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    config
        .join("projects")
        .join(slug)
        .join(format!("{id}.jsonl"))
}

/// How long a new record may show `starting` without a process before it counts as
/// abandoned (its creator died before the child started).
const STARTING_GRACE_MS: i64 = 60_000;

/// What the recorder has already told the store, so a plain turn writes nothing:
/// `init` comes at every turn but its id is stored once, and `busy` matters only after
/// API retries (it clears them).
#[derive(Default)]
struct RecorderNews {
    ids: std::collections::HashSet<(String, String)>,
    retrying: std::collections::HashSet<String>,
}

impl RecorderNews {
    fn is_new(&mut self, e: &SessionEvent) -> bool {
        match &e.kind {
            EventKind::Init { session_id, .. } => {
                self.ids.insert((e.session.clone(), session_id.clone()))
            }
            EventKind::Retry(_) => {
                self.retrying.insert(e.session.clone());
                true
            }
            EventKind::State {
                state: SessionState::Busy,
            } => self.retrying.remove(&e.session),
            _ => true,
        }
    }
}

/// What is left of a session's budget (None: no budget), or `BudgetSpent`.
fn budget_left(name: &str, budget: Option<f64>, spent: f64) -> Result<Option<f64>> {
    match budget {
        Some(budget) if spent >= budget => Err(EngineError::BudgetSpent {
            name: name.to_string(),
            budget,
            spent,
        }),
        other => Ok(other.map(|b| b - spent)),
    }
}

/// How often a waiting command looks whether its turn has come.
const LEASE_POLL: Duration = Duration::from_millis(20);

/// A place in the queue of a session; leaves it when dropped (also when the wait is
/// cancelled).
struct Ticket {
    id: i64,
    store: Arc<Store>,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Err(e) = self.store.drop_ticket(self.id) {
            tracing::debug!("could not leave the queue: {e}");
        }
    }
}

/// The pid of another running cms process that holds this session live, if any.
/// Err(HeldElsewhere) when another cms process drives the session.
fn not_held_elsewhere(rec: &SessionRecord) -> Result<()> {
    match other_live_host(rec) {
        Some(host) => Err(EngineError::HeldElsewhere {
            name: rec.name.clone(),
            holder: Holder {
                pid: Some(host),
                kind: rec.host_kind.clone(),
            }
            .who(),
        }),
        None => Ok(()),
    }
}

fn other_live_host(rec: &SessionRecord) -> Option<u32> {
    let host = rec.host_pid?;
    (host != std::process::id()
        && rec.pid.is_some_and(process::pid_alive)
        && process::pid_alive(host))
    .then_some(host)
}

fn resolve_dir(dir: Option<&Path>) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().map_err(|e| EngineError::io("current directory", e))?,
    };
    std::fs::canonicalize(&dir).map_err(|e| {
        EngineError::io(
            format!("working directory {} is not usable", dir.display()),
            e,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_turn_gives_the_recorder_nothing_new() {
        let ev = |kind: EventKind| SessionEvent {
            session: "s".into(),
            at_ms: 0,
            kind,
        };
        let init = || {
            ev(EventKind::Init {
                session_id: "id".into(),
                model: None,
                cwd: None,
            })
        };
        let busy = || {
            ev(EventKind::State {
                state: SessionState::Busy,
            })
        };
        let mut news = RecorderNews::default();
        assert!(news.is_new(&init()), "the first init carries the id");
        assert!(!news.is_new(&init()), "later turns' inits do not");
        assert!(!news.is_new(&busy()), "busy without retries says nothing");
        let retry = ev(EventKind::Retry(crate::engine::events::ApiRetryEvent {
            attempt: 1,
            max_retries: 10,
            retry_delay_ms: 1.0,
            error_status: Some(529),
            error: None,
        }));
        assert!(news.is_new(&retry));
        assert!(news.is_new(&busy()), "busy after retries clears them");
        assert!(!news.is_new(&busy()));
    }

    #[test]
    fn names_are_validated() {
        for ok in ["a", "fix-auth", "task_1.v2", "...", ".a", &"x".repeat(64)] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "with space",
            "semi;colon",
            "slash/x",
            ".",
            "..",
            &"x".repeat(65),
            "ünï",
        ] {
            assert!(
                matches!(validate_name(bad), Err(EngineError::InvalidName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_batch_is_checked_before_anything_starts() {
        let spec = |n: &str, p: &str| SpawnSpec {
            name: n.into(),
            prompt: p.into(),
            ..SpawnSpec::default()
        };
        assert!(check_batch(&[])
            .unwrap_err()
            .to_string()
            .contains("no entries"));
        let twice = check_batch(&[spec("a", "x"), spec("a", "y")]).unwrap_err();
        assert!(twice.to_string().contains("names 'a' twice"), "{twice}");
        assert!(check_batch(&[spec("a", " ")])
            .unwrap_err()
            .to_string()
            .contains("empty prompt"));
        assert!(matches!(
            check_batch(&[spec("bad name", "x")]),
            Err(EngineError::InvalidName(_))
        ));
        assert!(check_batch(&[spec("a", "x"), spec("b", "y")]).is_ok());
    }

    #[test]
    fn batch_specs_accept_seed_and_snake_case_fields() {
        let specs: Vec<BatchSpec> = serde_json::from_str(
            r#"[{"name":"a","prompt":"p","model":"haiku","workDir":"/tmp","allowedTools":"Read, Grep"},
                {"name":"b","prompt":"q","allowed_tools":["Edit"],"maxBudget":1.5}]"#,
        )
        .unwrap();
        let a = specs[0].clone().into_request(true).unwrap();
        assert_eq!(a.options.allowed_tools, vec!["Read", "Grep"]);
        assert_eq!(a.options.work_dir.as_deref(), Some(Path::new("/tmp")));
        assert!(a.stop_after, "the caller's default applies");
        let b = specs[1].clone().into_request(true).unwrap();
        assert_eq!(b.options.allowed_tools, vec!["Edit"]);
        assert_eq!(b.options.max_budget_usd, Some(1.5));
        let live: SpawnSpec = serde_json::from_str(
            r#"{"name":"c","prompt":"p","stop":false,"timeout":2.5,"maxTurns":3}"#,
        )
        .unwrap();
        let c = live.into_request(true).unwrap();
        assert!(!c.stop_after, "the spec's own stop wins");
        assert_eq!(c.timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.options.max_turns, Some(3));
        let zero: SpawnSpec =
            serde_json::from_str(r#"{"name":"d","prompt":"p","timeout":0}"#).unwrap();
        assert!(zero
            .into_request(false)
            .unwrap_err()
            .to_string()
            .contains("timeout must be a number of seconds above 0"));
        let bad: std::result::Result<Vec<BatchSpec>, _> =
            serde_json::from_str(r#"[{"name":"a","prompt":"p","modle":"x"}]"#);
        assert!(
            bad.is_err(),
            "a misspelt field is an error, not silently ignored"
        );
    }
}
