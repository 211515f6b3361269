//! The task that owns one session's child: it writes its stdin, takes its parsed
//! stdout lines, answers control requests through the policy, runs one turn at a
//! time (sends are queued FIFO), enforces turn deadlines, and ends the child on
//! stop, kill or a policy verdict. [`crate::engine::session::LiveSession`] is its
//! handle.

use crate::engine::approval::{Approval, Verdict as ApprovalVerdict, DEFAULT_APPROVAL_TIMEOUT};
use crate::engine::child::{exited_error, Cmd, EventSink, ExitInfo, Shared, StartSpec};
use crate::engine::cost::{decide_baseline, CostBaseline};
use crate::engine::error::{EngineError, Result};
use crate::engine::events::{now_ms, ApiRetryEvent, EventKind, SessionEvent};
use crate::engine::policy::{Decision, Policy, Progress, ToolCall, Verdict};
use crate::engine::process;
use crate::engine::reader::{self, Line};
use crate::engine::response::{retries_note, Response, TurnCollector};
use crate::engine::state::SessionState;
use crate::wire::cost::{parse_session_cost, ReportedCost, GET_SESSION_COST};

/// How long the command that ends a remote process group may take.
const REMOTE_END_LIMIT: Duration = Duration::from_secs(15);
use crate::wire::message::{ControlRequestBody, KnownBlock, Message};
use crate::wire::outgoing;
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant as TokioInstant;

struct Turn {
    reply: Option<oneshot::Sender<Result<Response>>>,
    collector: TurnCollector,
    started: Instant,
    deadline: TokioInstant,
    timeout: Duration,
    timed_out: bool,
    tool_results: u32,
    /// API retries in this turn, and the last one.
    retries: u32,
    last_retry: Option<ApiRetryEvent>,
}

impl Turn {
    /// What the CLI's retries of this turn say, for an error message.
    fn retrying(&self) -> String {
        retries_note(
            self.retries,
            self.last_retry.as_ref().and_then(|r| r.error_status),
        )
    }
}

/// A tool call waiting for a person's decision.
struct Waiting {
    approval: Approval,
    deadline: TokioInstant,
    timeout: Duration,
}

/// How long a resumed process may take to say what its cost count starts from.
const BASELINE_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ending {
    Stop,
    Kill,
    Timeout,
    PolicyStop,
    PolicyKill,
}

pub(crate) struct Actor {
    name: String,
    keep_resume_id: bool,
    include_partial: bool,
    cwd: String,
    pid: u32,
    /// The child is a supervisor ([`crate::engine::supervisor`]): it ends the whole tree.
    supervised: bool,
    /// Ends a supervised tree if this task is dropped before it reaped the child.
    tree_guard: process::TreeGuard,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Line>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    policy: Arc<dyn Policy>,
    sink: EventSink,
    queue: VecDeque<(String, Duration, oneshot::Sender<Result<Response>>)>,
    current: Option<Turn>,
    /// The process's last cumulative `total_cost_usd` (before its first turn: the
    /// figure its count starts from).
    process_total: f64,
    /// A resumed process's `get_session_cost` request in flight: no turn starts until
    /// it is answered (or its deadline passes), so the first turn's cost is exact.
    baseline_request: Option<(String, TokioInstant)>,
    recorded_conversation_cost: Option<f64>,
    recorded_scope: Option<crate::engine::cost::CostScope>,
    /// Held until this task ends, so no other cms process drives the session meanwhile.
    lease: Option<Arc<crate::engine::lease::Lease>>,
    /// The session's cost over all its processes.
    session_cost: f64,
    turns: u32,
    pending_controls: HashMap<String, oneshot::Sender<Result<Value>>>,
    next_request: AtomicU64,
    /// Set once the session is being ended on purpose.
    ending: Option<Ending>,
    /// When ending: the next escalation (SIGTERM, then SIGKILL).
    end_deadline: Option<(TokioInstant, i32)>,
    stop_grace: Duration,
    interrupt_grace: Duration,
    exit_waiters: Vec<oneshot::Sender<ExitInfo>>,
    policy_reason: Option<String>,
    /// A Stop/Kill verdict raised while emitting, applied by `after_policy`.
    policy_end: Option<(Ending, String)>,
    /// Tool calls waiting for a person, oldest first.
    approvals: Vec<Waiting>,
    /// Tools a person approved for the rest of this process ("always for session").
    always_allowed: HashSet<String>,
    /// Set when `claude` runs on another host: how to end its remote process group.
    remote: Option<crate::engine::runner::RemoteEnd>,
}

/// The child's pipes and the actor's inboxes.
pub(crate) struct Channels {
    pub child: Child,
    pub stdin: ChildStdin,
    pub pid: u32,
    pub lines: mpsc::Receiver<Line>,
    pub cmds: mpsc::UnboundedReceiver<Cmd>,
}

impl Actor {
    pub(crate) fn new(
        spec: &StartSpec,
        io: Channels,
        shared: Arc<Shared>,
        policy: Arc<dyn Policy>,
        sink: EventSink,
    ) -> Actor {
        Actor {
            name: spec.name.clone(),
            keep_resume_id: spec.args.resume.is_some() && !spec.args.fork_session,
            include_partial: spec.args.include_partial_messages,
            // Tool paths are relative to where claude runs: the remote folder, if remote.
            cwd: match spec.launch.as_ref().and_then(|l| l.remote.as_ref()) {
                Some(r) => r.cwd.clone(),
                None => spec.cwd.display().to_string(),
            },
            pid: io.pid,
            supervised: spec.supervisor.is_some(),
            tree_guard: process::TreeGuard {
                pid: io.pid,
                armed: spec.supervisor.is_some(),
            },
            child: io.child,
            stdin: Some(io.stdin),
            lines: io.lines,
            cmds: io.cmds,
            shared,
            policy,
            sink,
            queue: VecDeque::new(),
            current: None,
            process_total: 0.0,
            baseline_request: None,
            recorded_conversation_cost: spec.recorded_conversation_cost,
            recorded_scope: spec.recorded_scope,
            lease: spec.lease.clone(),
            session_cost: spec.cost_before,
            turns: spec.turns_before,
            pending_controls: HashMap::new(),
            next_request: AtomicU64::new(1),
            ending: None,
            end_deadline: None,
            stop_grace: spec.stop_grace,
            interrupt_grace: spec.interrupt_grace,
            exit_waiters: Vec::new(),
            policy_reason: None,
            policy_end: None,
            approvals: Vec::new(),
            always_allowed: HashSet::new(),
            remote: spec.launch.as_ref().and_then(|l| l.remote.clone()),
        }
    }

    pub(crate) async fn run(mut self, resumes: bool) {
        if resumes {
            self.ask_baseline().await;
        } else {
            self.set_baseline(CostBaseline::fresh());
        }
        let mut commands_open = true;
        loop {
            if self.current.is_none() && self.ending.is_none() && self.baseline_request.is_none() {
                if let Some((text, timeout, reply)) = self.queue.pop_front() {
                    self.begin_turn(text, timeout, reply).await;
                }
            }
            let turn_deadline = self.current.as_ref().map(|t| t.deadline);
            let end_deadline = self.end_deadline.map(|(d, _)| d);
            let baseline_deadline = self.baseline_request.as_ref().map(|(_, d)| *d);
            let approval_deadline = self.approvals.iter().map(|w| w.deadline).min();
            tokio::select! {
                cmd = self.cmds.recv(), if commands_open => match cmd {
                    Some(cmd) => self.on_command(cmd).await,
                    None => {
                        // Every handle is gone: nobody can use this process any more.
                        commands_open = false;
                        self.begin_kill(Ending::Kill);
                    }
                },
                line = self.lines.recv() => match line {
                    Some(Line::Msg(m)) => {
                        self.on_message(*m).await;
                        self.after_policy().await;
                    }
                    Some(Line::Oversized) => self.on_oversized_line().await,
                    Some(Line::Garbage(g)) => {
                        tracing::warn!(session = %self.name, "garbage on claude's stdout: {g}");
                        self.emit(EventKind::Error { message: format!("unreadable line from claude: {g}") });
                    }
                    None => break,
                },
                _ = sleep_until_opt(turn_deadline), if turn_deadline.is_some() => self.on_turn_deadline().await,
                _ = sleep_until_opt(end_deadline), if end_deadline.is_some() => self.escalate(),
                _ = sleep_until_opt(baseline_deadline), if baseline_deadline.is_some() => {
                    self.settle_baseline(None);
                }
                _ = sleep_until_opt(approval_deadline), if approval_deadline.is_some() => {
                    self.expire_approvals().await;
                }
            }
        }
        self.finish().await;
    }

    /// Ask a resumed process what its cost count starts from.
    async fn ask_baseline(&mut self) {
        let id = self.request_id();
        let line = outgoing::control_request(&id, GET_SESSION_COST, Value::Null);
        if self.write_line(&line).await {
            self.baseline_request = Some((id, TokioInstant::now() + BASELINE_WAIT));
        } else {
            self.settle_baseline(None);
        }
    }

    /// The CLI answered `get_session_cost` (None: it refused, or never answered).
    fn settle_baseline(&mut self, reported: Option<ReportedCost>) {
        self.baseline_request = None;
        self.set_baseline(decide_baseline(
            reported,
            self.recorded_conversation_cost,
            self.recorded_scope,
        ));
    }

    fn set_baseline(&mut self, baseline: CostBaseline) {
        if let Some(note) = &baseline.note {
            tracing::warn!(session = %self.name, "cost: {note}");
        }
        self.process_total = baseline.usd;
        self.shared.info.lock().unwrap().cost_baseline = Some(baseline.clone());
        self.emit(EventKind::CostBaseline(baseline));
    }

    fn set_state(&mut self, state: SessionState) {
        let changed = *self.shared.state.borrow() != state;
        if changed {
            self.shared.state.send_replace(state);
            self.emit(EventKind::State { state });
        }
    }

    fn emit(&mut self, kind: EventKind) {
        let event = SessionEvent {
            session: self.name.clone(),
            at_ms: now_ms(),
            kind,
        };
        // Once the session is ending, further events need no more verdicts.
        let verdict = if self.policy_end.is_some() || self.ending.is_some() {
            Verdict::Continue
        } else {
            self.policy.on_event(&event, &self.progress())
        };
        self.sink.emit(event);
        let (violation, action) = match verdict {
            Verdict::Continue => return,
            Verdict::Warn(v) => (v, "warned"),
            Verdict::Stop(v) => {
                self.policy_end
                    .get_or_insert((Ending::PolicyStop, v.message.clone()));
                (v, "stopped")
            }
            Verdict::Kill(v) => {
                self.policy_end = Some((Ending::PolicyKill, v.message.clone()));
                (v, "killed")
            }
        };
        tracing::info!(session = %self.name, rule = %violation.rule, "policy: {} ({action})", violation.message);
        self.sink.emit(SessionEvent {
            session: self.name.clone(),
            at_ms: now_ms(),
            kind: EventKind::Violation {
                rule: violation.rule,
                message: violation.message,
                action: action.into(),
                tool: None,
            },
        });
    }

    fn progress(&self) -> Progress {
        let (live_turns, elapsed) = match &self.current {
            Some(t) => (1 + t.tool_results, t.started.elapsed()),
            None => (0, Duration::ZERO),
        };
        Progress {
            cost_usd: self.session_cost,
            turns: self.turns + live_turns,
            turn_elapsed: elapsed,
        }
    }

    /// Apply a Stop/Kill verdict raised while emitting.
    async fn after_policy(&mut self) {
        let Some((how, reason)) = self.policy_end.take() else {
            return;
        };
        if self.ending.is_some() {
            return;
        }
        tracing::info!(session = %self.name, "the policy ends the session: {reason}");
        self.policy_reason = Some(reason);
        if how == Ending::PolicyKill {
            self.begin_kill(how);
        } else {
            self.begin_stop(how).await;
        }
    }

    async fn write_line(&mut self, line: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else {
            return false;
        };
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        match stdin.write_all(&bytes).await {
            Ok(()) => stdin.flush().await.is_ok(),
            Err(e) => {
                tracing::debug!(session = %self.name, "stdin write failed: {e}");
                false
            }
        }
    }

    fn request_id(&self) -> String {
        format!("cms_{}", self.next_request.fetch_add(1, Ordering::Relaxed))
    }

    async fn begin_turn(
        &mut self,
        text: String,
        timeout: Duration,
        reply: oneshot::Sender<Result<Response>>,
    ) {
        let now = Instant::now();
        self.current = Some(Turn {
            reply: Some(reply),
            collector: TurnCollector::new(),
            started: now,
            deadline: TokioInstant::from_std(now + timeout),
            timeout,
            timed_out: false,
            tool_results: 0,
            retries: 0,
            last_retry: None,
        });
        self.set_state(SessionState::Busy);
        // If the write fails the child is gone: stdout ends and the turn fails with
        // the child's exit status and stderr, which says more than EPIPE.
        self.write_line(&outgoing::user_text(&text)).await;
    }

    async fn on_command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Send {
                text,
                timeout,
                reply,
            } => {
                if let Some(ending) = self.ending {
                    let _ = reply.send(Err(self.ending_error(ending, None)));
                } else {
                    self.queue.push_back((text, timeout, reply));
                }
            }
            Cmd::Interrupt { reply } => {
                if self.current.is_some() {
                    let id = self.request_id();
                    if !self.write_line(&outgoing::interrupt(&id)).await {
                        let _ =
                            reply.send(Err(EngineError::Write("claude's stdin is closed".into())));
                        return;
                    }
                }
                let _ = reply.send(Ok(()));
            }
            Cmd::Control {
                subtype,
                fields,
                reply,
            } => {
                let id = self.request_id();
                if self
                    .write_line(&outgoing::control_request(&id, subtype, fields))
                    .await
                {
                    self.pending_controls.insert(id, reply);
                } else {
                    let _ = reply.send(Err(EngineError::Write("claude's stdin is closed".into())));
                }
            }
            Cmd::Stop { reply } => {
                self.exit_waiters.push(reply);
                if self.ending.is_none() {
                    self.begin_stop(Ending::Stop).await;
                }
            }
            Cmd::Kill { reply } => {
                self.exit_waiters.push(reply);
                self.begin_kill(Ending::Kill);
            }
            Cmd::Decide { verdict, reply } => {
                let _ = reply.send(self.decide(verdict).await);
            }
        }
    }

    /// Answer a waiting tool call as a person decided.
    async fn decide(&mut self, v: ApprovalVerdict) -> Result<Approval> {
        let at = match &v.id {
            Some(id) => self.approvals.iter().position(|w| w.approval.id == *id),
            None => (!self.approvals.is_empty()).then_some(0),
        };
        let Some(at) = at else {
            return Err(EngineError::Invalid(match &v.id {
                Some(id) => format!(
                    "session '{}' has no tool call {id} waiting for approval (decided already, or its turn ended)",
                    self.name
                ),
                None => format!("session '{}' has no tool call waiting for approval", self.name),
            }));
        };
        let w = self.approvals.remove(at);
        let reason = (!v.allow).then(|| {
            let why = v.reason.clone().unwrap_or_else(|| "no reason given".into());
            format!("a person ({}) denied this tool call: {why}", v.by)
        });
        if v.allow && v.always {
            self.always_allowed.insert(w.approval.tool.clone());
        }
        self.answer(&w.approval, v.allow, reason, &v.by).await;
        Ok(w.approval)
    }

    /// Write the answer to a waiting call, and say who gave it.
    async fn answer(&mut self, a: &Approval, allowed: bool, reason: Option<String>, by: &str) {
        let line = match &reason {
            Some(r) if !allowed => outgoing::deny_tool(&a.id, r, false),
            _ => outgoing::allow_tool(&a.id, &a.input),
        };
        self.write_line(&line).await;
        self.publish_approvals();
        self.emit(EventKind::Decided {
            id: a.id.clone(),
            tool: a.tool.clone(),
            allowed,
            by: by.to_string(),
            reason: reason.clone(),
        });
        self.emit(EventKind::Permission {
            tool: a.tool.clone(),
            allowed,
            reason,
        });
        if self.approvals.is_empty() && *self.shared.state.borrow() == SessionState::WaitingApproval
        {
            self.set_state(if self.current.is_some() {
                SessionState::Busy
            } else {
                SessionState::Idle
            });
        }
    }

    /// Deny the calls whose deadline passed: nobody decided, so cms fails closed.
    async fn expire_approvals(&mut self) {
        let now = TokioInstant::now();
        while let Some(at) = self.approvals.iter().position(|w| w.deadline <= now) {
            let w = self.approvals.remove(at);
            let reason = format!(
                "nobody approved this tool call within {}s, so it was denied (cms fails closed); \
                 the policy asked because: {}",
                w.timeout.as_secs(),
                w.approval.reason
            );
            self.answer(&w.approval, false, Some(reason), "deadline")
                .await;
        }
    }

    /// What anyone may read about the waiting calls.
    fn publish_approvals(&self) {
        self.shared.info.lock().unwrap().approvals =
            self.approvals.iter().map(|w| w.approval.clone()).collect();
    }

    /// A call the policy wants a person to decide: it waits (the CLI holds the tool
    /// until it is answered), unless a person already approved this tool for the session.
    async fn ask(
        &mut self,
        request_id: &str,
        call: &ToolCall,
        reason: String,
        timeout: Option<Duration>,
    ) {
        if self.always_allowed.contains(&call.tool_name) {
            self.write_line(&outgoing::allow_tool(request_id, &call.input))
                .await;
            self.emit(EventKind::Permission {
                tool: call.tool_name.clone(),
                allowed: true,
                reason: Some("approved for the rest of the session".into()),
            });
            return;
        }
        let timeout = timeout.unwrap_or(DEFAULT_APPROVAL_TIMEOUT);
        let now = now_ms();
        let approval = Approval {
            session: self.name.clone(),
            id: request_id.to_string(),
            tool: call.tool_name.clone(),
            input: call.input.clone(),
            reason: reason.clone(),
            asked_at_ms: now,
            deadline_ms: now + timeout.as_millis() as i64,
        };
        self.approvals.push(Waiting {
            approval: approval.clone(),
            deadline: TokioInstant::now() + timeout,
            timeout,
        });
        self.publish_approvals();
        self.set_state(SessionState::WaitingApproval);
        self.emit(EventKind::Approval {
            id: approval.id,
            tool: approval.tool,
            input: approval.input,
            reason,
            deadline_ms: approval.deadline_ms,
        });
    }

    async fn begin_stop(&mut self, why: Ending) {
        self.ending = Some(why);
        if self.current.is_some() {
            let id = self.request_id();
            self.write_line(&outgoing::interrupt(&id)).await;
        }
        self.fail_queue(why);
        // Closing stdin ends the CLI after the turn in flight.
        self.stdin = None;
        self.end_deadline = Some((TokioInstant::now() + self.stop_grace, libc::SIGTERM));
    }

    fn begin_kill(&mut self, why: Ending) {
        if matches!(self.ending, Some(Ending::Kill)) {
            return;
        }
        self.ending = Some(why);
        self.stdin = None;
        if self.supervised {
            // The supervisor kills the whole tree, tools in their own groups included;
            // if it has not within a second, the group is killed.
            process::signal_pid(self.pid, crate::engine::supervisor::KILL_TREE);
            self.end_deadline = Some((TokioInstant::now() + Duration::from_secs(1), libc::SIGKILL));
        } else {
            process::signal_group(self.pid, libc::SIGKILL);
            // If the pipes stay open (a grandchild holds them), stop waiting after a while.
            self.end_deadline = Some((TokioInstant::now() + Duration::from_secs(2), -1));
        }
        self.fail_queue(why);
    }

    fn escalate(&mut self) {
        match self.end_deadline.take() {
            Some((_, sig)) if sig == libc::SIGTERM => {
                tracing::debug!(session = %self.name, "claude did not exit after stdin closed: SIGTERM");
                process::signal_group(self.pid, libc::SIGTERM);
                // A supervisor gives claude its grace before it kills the tree.
                let wait = if self.supervised {
                    crate::engine::supervisor::GRACE + Duration::from_secs(1)
                } else {
                    Duration::from_secs(2)
                };
                self.end_deadline = Some((TokioInstant::now() + wait, libc::SIGKILL));
            }
            Some((_, sig)) if sig == libc::SIGKILL => {
                process::signal_group(self.pid, libc::SIGKILL);
                self.end_deadline = Some((TokioInstant::now() + Duration::from_secs(2), -1));
            }
            _ => {
                // Give up on the pipes: close our end so the loop ends.
                self.lines.close();
            }
        }
    }

    fn fail_queue(&mut self, why: Ending) {
        for (_, _, reply) in self.queue.drain(..) {
            let _ = reply.send(Err(match why {
                Ending::Kill => EngineError::Killed { partial: None },
                _ => EngineError::Stopped { partial: None },
            }));
        }
    }

    fn ending_error(&self, ending: Ending, partial: Option<Box<Response>>) -> EngineError {
        match ending {
            Ending::Stop => EngineError::Stopped { partial },
            Ending::Kill => EngineError::Killed { partial },
            Ending::Timeout => EngineError::Timeout {
                secs: self
                    .current
                    .as_ref()
                    .map(|t| t.timeout.as_secs_f64())
                    .unwrap_or(0.0),
                action: "interrupted, then its process was killed because claude did not stop; \
                         the session is stopped and resumes on the next send",
                retrying: self
                    .current
                    .as_ref()
                    .map(Turn::retrying)
                    .unwrap_or_default(),
                partial,
            },
            Ending::PolicyStop | Ending::PolicyKill => EngineError::PolicyStopped {
                reason: self.policy_reason.clone().unwrap_or_default(),
                partial,
            },
        }
    }

    /// A line too long to read may have been the turn's answer: waiting for it could
    /// last forever, so the turn fails now and the session stops (it stays resumable).
    async fn on_oversized_line(&mut self) {
        tracing::warn!(session = %self.name, "claude printed a line over {} bytes: dropped", reader::MAX_LINE);
        let error = || EngineError::LineTooLong {
            limit_mib: reader::MAX_LINE >> 20,
        };
        self.emit(EventKind::Error {
            message: error().to_string(),
        });
        if let Some(reply) = self.current.as_mut().and_then(|t| t.reply.take()) {
            let _ = reply.send(Err(error()));
            if self.ending.is_none() {
                self.begin_stop(Ending::Stop).await;
            }
        }
    }

    async fn on_turn_deadline(&mut self) {
        let Some(turn) = self.current.as_mut() else {
            return;
        };
        if !turn.timed_out {
            turn.timed_out = true;
            turn.deadline = TokioInstant::now() + self.interrupt_grace;
            tracing::warn!(session = %self.name, "turn timed out after {:?}: interrupting", turn.timeout);
            let id = self.request_id();
            self.write_line(&outgoing::interrupt(&id)).await;
        } else {
            tracing::warn!(session = %self.name, "claude ignored the interrupt: killing it");
            if let Some(t) = self.current.as_mut() {
                t.deadline = TokioInstant::now() + Duration::from_secs(3600);
            }
            self.begin_kill(Ending::Timeout);
        }
    }

    async fn on_message(&mut self, msg: Message) {
        match msg {
            Message::System(sys) => {
                if let Some(init) = sys.init() {
                    let id = sys.session_id.clone().unwrap_or_default();
                    {
                        let mut info = self.shared.info.lock().unwrap();
                        if !self.keep_resume_id || info.session_id.is_none() {
                            info.session_id = Some(id.clone());
                        } else if info.session_id.as_deref() != Some(id.as_str()) {
                            tracing::warn!(session = %self.name, init_id = %id, "init reports another session id on resume; keeping the stored one");
                        }
                        // A remote claude reports the remote folder; resumes start here.
                        if init.cwd.is_some() && self.remote.is_none() {
                            info.cwd = init.cwd.clone();
                        }
                        if init.model.is_some() {
                            info.model = init.model.clone();
                        }
                    }
                    self.emit(EventKind::Init {
                        session_id: id,
                        model: init.model,
                        cwd: init.cwd,
                    });
                } else if let Some(retry) = sys.api_retry() {
                    let retry = ApiRetryEvent::from(retry);
                    if let Some(t) = self.current.as_mut() {
                        t.retries += 1;
                        t.last_retry = Some(retry.clone());
                        self.shared.info.lock().unwrap().retry = Some(retry.clone());
                        self.set_state(SessionState::Retrying);
                    }
                    self.emit(EventKind::Retry(retry));
                }
            }
            Message::Assistant(a) => {
                let blocks = a.message.content.blocks();
                if *self.shared.state.borrow() == SessionState::Retrying {
                    self.shared.info.lock().unwrap().retry = None;
                    self.set_state(SessionState::Busy);
                }
                if let Some(t) = self.current.as_mut() {
                    t.collector.assistant_blocks(&blocks);
                }
                for b in blocks {
                    match b {
                        KnownBlock::Text { text } if !self.include_partial => {
                            self.emit(EventKind::Text { text })
                        }
                        KnownBlock::ToolUse { id, name, input } => {
                            self.emit(EventKind::ToolUse { id, name, input })
                        }
                        _ => {}
                    }
                }
            }
            Message::User(u) => {
                for b in u.message.content.blocks() {
                    if let KnownBlock::ToolResult {
                        tool_use_id,
                        content,
                        is_error,
                    } = b
                    {
                        if let Some(t) = self.current.as_mut() {
                            t.tool_results += 1;
                        }
                        self.emit(EventKind::ToolResult {
                            tool_use_id,
                            is_error: is_error.unwrap_or(false),
                            content,
                        });
                    }
                }
            }
            Message::StreamEvent(e) => {
                if let Some(text) = e.text_delta() {
                    self.emit(EventKind::Text {
                        text: text.to_string(),
                    });
                }
            }
            Message::Result(r) => self.on_result(*r),
            Message::ControlRequest(req) => self.on_control_request(req).await,
            Message::ControlResponse(resp)
                if self
                    .baseline_request
                    .as_ref()
                    .is_some_and(|(id, _)| *id == resp.response.request_id) =>
            {
                let reported = (resp.response.subtype == "success")
                    .then_some(resp.response.response.as_ref())
                    .flatten()
                    .and_then(|v| v.get("text"))
                    .and_then(Value::as_str)
                    .and_then(parse_session_cost);
                self.settle_baseline(reported);
            }
            Message::ControlResponse(resp) => {
                if let Some(reply) = self.pending_controls.remove(&resp.response.request_id) {
                    let _ = reply.send(if resp.response.subtype == "success" {
                        Ok(resp.response.response.unwrap_or(Value::Null))
                    } else {
                        Err(EngineError::Invalid(format!(
                            "claude refused the request: {}",
                            resp.response
                                .error
                                .unwrap_or_else(|| "unknown error".into())
                        )))
                    });
                }
            }
            Message::KeepAlive | Message::Unknown(_) => {}
        }
    }

    async fn on_control_request(&mut self, req: crate::wire::ControlRequest) {
        match req.body() {
            ControlRequestBody::CanUseTool(t) => {
                let call = ToolCall {
                    session: self.name.clone(),
                    tool_name: t.tool_name.clone(),
                    input: t.input.clone(),
                    tool_use_id: t.tool_use_id.clone(),
                    cwd: self.cwd.clone(),
                    host: self.remote.as_ref().map(|r| r.host.clone()),
                    blocked_path: t.blocked_path.clone(),
                    progress: self.progress(),
                };
                let decision = self.policy.decide(&call);
                if let Decision::Ask { reason, timeout } = decision {
                    self.ask(&req.request_id, &call, reason, timeout).await;
                    return;
                }
                let (line, allowed, reason) = match &decision {
                    Decision::Ask { .. } => unreachable!("answered above"),
                    Decision::Allow => {
                        (outgoing::allow_tool(&req.request_id, &t.input), true, None)
                    }
                    Decision::AllowWith(input) => {
                        (outgoing::allow_tool(&req.request_id, input), true, None)
                    }
                    Decision::Deny {
                        reason,
                        interrupt,
                        rule,
                    } => {
                        if let Some(rule) = rule {
                            self.emit(EventKind::Violation {
                                rule: rule.clone(),
                                message: reason.clone(),
                                action: "denied".into(),
                                tool: Some(t.tool_name.clone()),
                            });
                        }
                        (
                            outgoing::deny_tool(&req.request_id, reason, *interrupt),
                            false,
                            Some(reason.clone()),
                        )
                    }
                };
                self.write_line(&line).await;
                self.emit(EventKind::Permission {
                    tool: t.tool_name,
                    allowed,
                    reason,
                });
            }
            ControlRequestBody::Other { subtype } => {
                let line = outgoing::error_response(
                    &req.request_id,
                    &format!("cms does not handle control request subtype '{subtype}'"),
                );
                self.write_line(&line).await;
            }
        }
    }

    fn on_result(&mut self, result: crate::wire::ResultMessage) {
        // A turn that ended (interrupted) while a call waited: nobody can answer it now.
        if !self.approvals.is_empty() {
            self.approvals.clear();
            self.publish_approvals();
        }
        let mut turn = self.current.take();
        let measured = turn
            .as_ref()
            .map_or(0, |t| t.started.elapsed().as_millis() as u64);
        let collector = turn
            .as_mut()
            .map(|t| std::mem::take(&mut t.collector))
            .unwrap_or_default();
        let mut response =
            collector.finish(&result, self.process_total, self.session_cost, measured);
        if let Some(t) = &turn {
            response.api_retries = t.retries;
            response.last_retry_status = t.last_retry.as_ref().and_then(|r| r.error_status);
        }
        if let Some(total) = result.total_cost_usd {
            self.process_total = total;
        }
        self.session_cost = response.session_cost_usd;
        self.turns += response.num_turns;
        {
            let mut info = self.shared.info.lock().unwrap();
            info.session_cost = self.session_cost;
            info.turns = self.turns;
            info.retry = None;
            if result.total_cost_usd.is_some() {
                info.reported_total = Some(self.process_total);
            }
            if !self.keep_resume_id && !result.session_id.is_empty() {
                info.session_id = Some(result.session_id.clone());
            }
        }
        self.emit(EventKind::Result {
            cost_usd: response.cost_usd,
            session_cost_usd: response.session_cost_usd,
            num_turns: response.num_turns,
            is_error: response.is_error,
            subtype: response.subtype.clone(),
        });
        // Idle before the caller hears the answer: whoever reads the state next sees it.
        if self.ending.is_none() {
            self.set_state(SessionState::Idle);
        }
        match turn {
            Some(mut t) => {
                let reply = t.reply.take();
                let outcome = match self.ending {
                    Some(e) => Err(self.ending_error(e, Some(Box::new(response)))),
                    None if t.timed_out => Err(EngineError::Timeout {
                        secs: t.timeout.as_secs_f64(),
                        action:
                            "interrupted; the session itself is unharmed and takes the next message",
                        retrying: t.retrying(),
                        partial: Some(Box::new(response)),
                    }),
                    None => Ok(response),
                };
                if let Some(reply) = reply {
                    let _ = reply.send(outcome);
                }
            }
            None => tracing::debug!(session = %self.name, "result with no turn waiting (counted)"),
        }
    }

    /// A remote session ended on purpose (kill, timeout, a policy, a stop that had to
    /// signal): end its remote process group too, since ending the local client (`ssh`)
    /// does not. Waits for the end command, up to [`REMOTE_END_LIMIT`].
    async fn end_remote(&self, exit: &ExitInfo) {
        let Some(remote) = &self.remote else { return };
        let forced = match self.ending {
            Some(Ending::Stop) => exit.signal.is_some(),
            Some(_) => true,
            None => exit.signal.is_some(),
        };
        let pgid = self.shared.info.lock().unwrap().remote_pgid;
        if let (true, Some(pgid)) = (forced, pgid) {
            let argv = remote.command(pgid);
            let ok = crate::engine::runner::end_remote(&argv, REMOTE_END_LIMIT).await;
            tracing::debug!(session = %self.name, host = %remote.host, pgid, ok, "ended the remote process group");
        }
    }

    /// The error of a child that exited on its own: a host out of reach, else the exit.
    fn exit_error(&self, exit: &ExitInfo, partial: Option<Box<Response>>) -> EngineError {
        self.unreachable(exit)
            .unwrap_or_else(|| exited_error(exit, partial))
    }

    /// The runner's client could not reach the host (OpenSSH exits 255 on its own
    /// errors, and the remote side never printed its pgid): a clear error naming the host.
    fn unreachable(&self, exit: &ExitInfo) -> Option<EngineError> {
        let remote = self.remote.as_ref()?;
        let started = self.shared.info.lock().unwrap().remote_pgid.is_some();
        if started || exit.code != Some(255) {
            return None;
        }
        let detail = crate::engine::child::last_lines(&exit.stderr, 3);
        Some(EngineError::RunsOn {
            host: remote.host.clone(),
            detail: if detail.is_empty() {
                "cannot be reached (the runner's client exited with 255)".into()
            } else {
                format!("cannot be reached: {detail}")
            },
        })
    }

    /// The child's stdout ended: collect its exit, fail what is still waiting.
    async fn finish(mut self) {
        self.stdin = None;
        let status = match tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await {
            Ok(Ok(s)) => Some(s),
            _ => {
                process::signal_group(self.pid, libc::SIGKILL);
                tokio::time::timeout(Duration::from_secs(2), self.child.wait())
                    .await
                    .ok()
                    .and_then(|r| r.ok())
            }
        };
        if status.is_some() {
            self.tree_guard.armed = false;
        }
        // The child is gone: another cms process may drive the session from now on, and
        // one in this process may start it again as soon as it hears of the exit.
        self.lease = None;
        use std::os::unix::process::ExitStatusExt;
        // Let the stderr reader drain what the child wrote last.
        tokio::time::sleep(Duration::from_millis(20)).await;
        let exit = ExitInfo {
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            stderr: self.shared.stderr_tail(),
        };
        self.shared.info.lock().unwrap().exit = Some(exit.clone());
        // Nothing waits for a process that is gone.
        self.approvals.clear();
        self.publish_approvals();
        self.end_remote(&exit).await;
        // Ended by a signal we did not send: `cms stop` (SIGTERM) or `cms kill` (the
        // tree killed) from another process. That is a stop or a kill, not a failure.
        if self.ending.is_none() {
            self.ending = match exit.signal {
                Some(libc::SIGTERM) => Some(Ending::Stop),
                Some(libc::SIGKILL) | Some(crate::engine::supervisor::KILL_TREE) => {
                    Some(Ending::Kill)
                }
                _ => None,
            };
        }
        // The state is final before anyone waiting hears of the exit.
        let state = match self.ending {
            Some(Ending::Kill) => SessionState::Killed,
            Some(Ending::Stop) | Some(Ending::Timeout) => SessionState::Stopped,
            Some(Ending::PolicyStop) => SessionState::Stopped,
            Some(Ending::PolicyKill) => SessionState::Killed,
            None if exit.code == Some(0) => SessionState::Stopped,
            None => SessionState::Failed,
        };
        if state == SessionState::Failed {
            self.emit(EventKind::Error {
                message: self.exit_error(&exit, None).to_string(),
            });
        }
        self.emit(EventKind::Exit {
            code: exit.code,
            signal: exit.signal,
        });
        self.set_state(state);
        let partial = self.current.as_ref().map(|t| {
            Box::new(Response {
                text: t.collector.text(),
                session_id: self
                    .shared
                    .info
                    .lock()
                    .unwrap()
                    .session_id
                    .clone()
                    .unwrap_or_default(),
                session_cost_usd: self.session_cost,
                is_error: true,
                subtype: "incomplete".into(),
                ..Response::default()
            })
        });
        let error = match self.ending {
            Some(e) => self.ending_error(e, partial),
            None => self.exit_error(&exit, partial),
        };
        if let Some(mut t) = self.current.take() {
            if let Some(reply) = t.reply.take() {
                let _ = reply.send(Err(error));
            }
        }
        let queue: Vec<_> = self.queue.drain(..).collect();
        for (_, _, reply) in queue {
            let _ = reply.send(Err(match self.ending {
                Some(Ending::Kill) => EngineError::Killed { partial: None },
                Some(_) => EngineError::Stopped { partial: None },
                None => self.exit_error(&exit, None),
            }));
        }
        let controls: Vec<_> = self.pending_controls.drain().collect();
        for (_, reply) in controls {
            let _ = reply.send(Err(self.exit_error(&exit, None)));
        }
        for w in self.exit_waiters.drain(..) {
            let _ = w.send(exit.clone());
        }
        // Drain commands that raced with the exit.
        self.cmds.close();
        while let Ok(cmd) = self.cmds.try_recv() {
            match cmd {
                Cmd::Send { reply, .. } => {
                    let _ = reply.send(Err(self.exit_error(&exit, None)));
                }
                Cmd::Interrupt { reply } => {
                    let _ = reply.send(Err(self.exit_error(&exit, None)));
                }
                Cmd::Control { reply, .. } => {
                    let _ = reply.send(Err(self.exit_error(&exit, None)));
                }
                Cmd::Stop { reply } | Cmd::Kill { reply } => {
                    let _ = reply.send(exit.clone());
                }
                Cmd::Decide { reply, .. } => {
                    let _ = reply.send(Err(exited_error(&exit, None)));
                }
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<TokioInstant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
