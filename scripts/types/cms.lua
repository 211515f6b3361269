---@meta cms
-- LuaLS annotations for the `cms` module available to `cms script`, `cms repl`,
-- policies and plugins. Print this file with `cms lua-types > cms.lua` and add its
-- folder to `workspace.library` in `.luarc.json` so your editor completes and checks
-- scripts.
--
-- Every function marked `---@async` waits for Claude Code: it yields the calling
-- coroutine, so `cms.parallel` can run many of them at once.

---@class cms
---@field version string The cms version.
---@field args string[] The arguments given after the script file (`cms script plan.lua a b`).
cms = {}

-- The lists below come from the Rust types: the parts between "-- generated:" and
-- "-- end generated" are written by `cms lua-types` (a test keeps this file in step).

-- generated: cms.PermissionMode
---@alias cms.PermissionMode "default"|"acceptEdits"|"auto"|"plan"|"dontAsk"|"bypassPermissions"
-- end generated

-- generated: cms.SessionState
---@alias cms.SessionState "starting"|"idle"|"busy"|"retrying"|"paused"|"stopped"|"failed"|"killed"|"parked"|"queued"|"waiting_approval"
-- end generated

---A tool call Claude Code refused in a turn.
---@class cms.PermissionDenial
---@field tool_name string
---@field tool_use_id string
---@field tool_input table

---A turn's response: the same shape as `cms send --json` and the MCP tools give
---(every field of the engine's response, and `error`).
---@class cms.Response
---@field text string The final text of the turn.
---@field cost_usd number This turn's own cost in USD.
---@field session_cost_usd number The session's total cost in USD across all its processes, this turn included.
---@field num_turns integer Agent turns of this turn.
---@field tools_used string[] Tool names used in this turn, unique, in first-use order.
---@field permission_denials cms.PermissionDenial[] Tool calls refused in this turn.
---@field duration_ms integer Wall time of the turn in milliseconds.
---@field session_id string The Claude session id.
---@field subtype string `success`, `error_max_turns`, `error_max_budget_usd`, `error_during_execution`.
---@field is_error boolean True for every failed turn (API errors included, which come with `subtype = "success"`).
---@field api_error_status integer? The HTTP status of an API error.
---@field errors string[] The CLI's `result.errors` (limits, unknown resume id, ...).
---@field terminal_reason string?
---@field stop_reason string?
---@field usage table? This turn's token usage, as the CLI reports it.
---@field api_retries integer How many times the CLI retried a failing API call in this turn.
---@field last_retry_status integer? The HTTP status of the last retried API failure.
---@field structured_output any The structured output, when one was asked for.
---@field error string? Why the turn failed, one line (absent when it did not).

---An API retry in progress.
---@class cms.ApiRetry
---@field attempt integer
---@field max_retries integer
---@field retry_delay_ms number
---@field error_status integer?
---@field error string?

---A session's stored status: the same shape as `cms status --json` and MCP
---`get_session_status`. Times are RFC 3339 text (`2026-01-31T12:00:00Z`).
---@class cms.Status
---@field name string
---@field state cms.SessionState
---@field claude_session_id string? The Claude session id.
---@field model string?
---@field work_dir string
---@field cwd string? The working directory Claude Code reported.
---@field permission_mode cms.PermissionMode?
---@field allowed_tools string[]
---@field forked_from string?
---@field on string? The host of `hosts.lua` it runs on; absent: this machine.
---@field created_at string RFC 3339.
---@field updated_at string RFC 3339 (last activity).
---@field total_cost_usd number Total cost in USD over all its processes.
---@field total_turns integer Total agent turns.
---@field interaction_count integer Number of sends recorded.
---@field last_error string?
---@field pid integer? The `claude` process, while the session is live.
---@field host_pid integer? The cms process holding the session live.
---@field host_kind string? Its kind: `cli`, `mcp`, `repl`, ...
---@field retry cms.ApiRetry? The API retry in progress, if any.

---One recorded interaction: the same shape as `cms history --json` and MCP `get_history`.
---@class cms.Interaction
---@field id integer
---@field session string The session's name.
---@field at string RFC 3339.
---@field kind string `spawn`, `send`, `resume`, `fork`, `delegate`, `continue`, `retry`, ...
---@field message string What was sent.
---@field response string?
---@field cost_usd number
---@field num_turns integer
---@field duration_ms integer
---@field is_error boolean
---@field subtype string?
---@field error string?
---@field tools_used string[]
---@field permission_denials cms.PermissionDenial[]
---@field claude_session_id string?

-- generated: cms.SpawnOptions
---Options of `cms.spawn` (and of `cms spawn`, a batch entry, MCP `spawn_session`).
---@class cms.SpawnOptions
---@field name string Session name (1-64 of A-Z a-z 0-9 . _ -).
---@field prompt string The first message (on the command line, `-` reads it from stdin).
---@field model? string Model: sonnet, opus, haiku, or a full model id [default: sonnet].
---@field stop? boolean Stop the session after the first response (one-shot) [default: no; yes for a batch entry].
---@field work_dir? string Working directory for claude [default: the current directory].
---@field on? string Run the session on this host of `hosts.lua` (over its runner, e.g. ssh); it stays there for sends, resumes and forks [default: this machine].
---@field labels? string[]|string Labels a host must carry for placement to put the session there when `on` is not given (see `hosts.lua`, `placement.lua`): a list, or comma-separated, e.g. "gpu,big" [default: none].
---@field permission_mode? cms.PermissionMode Claude Code's permission mode [default: Claude Code's own setting].
---@field allowed_tools? string[]|string Tools allowed without asking: a list, or comma-separated, e.g. "Read,Grep,Bash(git *)" [default: none].
---@field disallowed_tools? string[]|string Tools removed from the session: a list, or comma-separated [default: none].
---@field system_prompt? string Text appended to Claude Code's system prompt [default: none].
---@field max_budget? number Hard budget in USD for the session's whole life, across restarts (each claude process gets what is left as `--max-budget-usd`; a fork gets what its parent has left) [default: no cap].
---@field max_turns? integer Agent turns allowed per message, `--max-turns` [default: no limit].
---@field agent? string Use a specific agent [default: none].
---@field worktree? string Run in a git worktree of this name, `claude -w` [default: none].
---@field mcp_config? string MCP servers for the session, `claude --mcp-config`: JSON text ({"mcpServers": {...}}) or a file [default: none].
---@field add_dirs? string[] More directories the file tools may use, `claude --add-dir` (relative ones from the working directory) [default: none].
---@field timeout? number Seconds one turn may take before it is interrupted (then killed if claude does not stop); the session stays resumable [default: 3600].
-- end generated

---Options of `session:fork`.
---@class cms.ForkOptions
---@field name string The new session's name.
---@field message? string A first message; without one the fork runs on its first send.
---@field model? string Another model for the fork.
---@field system_prompt? string Another appended system prompt.
---@field timeout? number Seconds the first message's turn may take (default 3600).
---@field keep? boolean Leave the fork live in the session host when the script ends [default: false].

---A session. Fields are read live from the store.
---@class cms.Session
---@field name string
---@field id string? The Claude session id.
---@field state cms.SessionState The current state.
---@field response cms.Response? The response of this object's last call.
local Session = {}

---Send a message and wait for its response. A stopped session is resumed first.
---Sends to one session run one after the other.
---@async
---@param text string
---@param opts? {timeout?: number} `timeout`: seconds before the turn is interrupted (default 3600).
---@return cms.Response
function Session:send(text, opts) end

---Refuse new messages until resumed (a turn in flight finishes).
---@async
function Session:pause() end

---Clear a pause; with a message, send it.
---@async
---@param message? string
---@return cms.Response?
function Session:resume(message) end

---Stop gracefully; the conversation can be resumed later.
---@async
function Session:stop() end

---Kill the session's process now (resumable later).
---@async
function Session:kill() end

---Interrupt the running turn; its `send` returns an `error_during_execution` response.
---@async
function Session:interrupt() end

---Remove the session for good.
---@async
function Session:delete() end

---A new session holding this one's conversation; this one is unchanged.
---@async
---@param opts cms.ForkOptions
---@return cms.Session
function Session:fork(opts) end

---Every recorded interaction with its cost.
---@return cms.Interaction[]
function Session:history() end

---The stored status.
---@return cms.Status
function Session:status() end

---`cms.spawn`'s own option, beside the spawn options of every face.
---@class cms.SpawnCall: cms.SpawnOptions
---@field replace? boolean Stop and delete a session of this name first, so a plan can run again [default: false].
---@field keep? boolean Leave the session live in the session host when the script (or the REPL) ends; without it, sessions a script started are stopped (resumable) when it ends [default: false].

---Start a new session and send its first prompt; returns when the response is in
---(`s.response`). A session of that name is an error, unless `replace = true`
---(which deletes it first, its process ended).
---@async
---@param opts cms.SpawnCall
---@return cms.Session
function cms.spawn(opts) end

---The session of that name as it is (its own options; `s.response` is nil until a
---send), or a new one spawned with `opts` when there is none: a plan that runs again
---picks up where it left off.
---@async
---@param opts cms.SpawnCall
---@return cms.Session
function cms.get_or_spawn(opts) end

---The session of that name, or nil.
---@param name string
---@return cms.Session?
function cms.get(name) end

---Every session, most recently active first.
---@return cms.Status[]
function cms.list() end

---Run the functions concurrently and return their first results in order. If any
---fails, raises one error naming each failed function by index, after all finished;
---use `pcall` inside a function to keep going with partial results.
---@async
---@param fns (fun(): any)[]
---@return any[]
function cms.parallel(fns) end

---An engine event. Every event has `session`, `at_ms` and `event`; the rest
---depends on `event`:
---
--- | event         | fields                                                       |
--- |---------------|--------------------------------------------------------------|
--- | `init`        | `session_id`, `model`, `cwd`                                 |
--- | `text`        | `text`                                                       |
--- | `tool_use`    | `id`, `name` (the tool), `input`                             |
--- | `tool_result` | `tool_use_id`, `is_error`, `content`                         |
--- | `permission`  | `tool`, `allowed`, `reason`                                  |
--- | `retry`       | `attempt`, `max_retries`, `retry_delay_ms`, `error_status`, `error` |
--- | `cost_baseline` | `usd`, `scope` (`process`, `conversation`, `unknown`), `note`: where a process's cost count starts |
--- | `waiting`     | `holder_pid`, `holder_kind`, `position`: another cms process drives the session |
--- | `queued`      | `position` (1: next): the request waits for a free slot of the host (`host.max_live`, `host.max_turns` in `safety.lua`) |
--- | `approval`    | `id`, `tool`, `input`, `reason`, `deadline_ms`: a tool call waits for a person (a handler may return `"allow"` or `"deny", reason`) |
--- | `decided`     | `id`, `tool`, `allowed`, `by` (`cli`, `mcp`, `lua`, `deadline`), `reason` |
--- | `violation`   | `rule`, `message`, `action`, `tool`                          |
--- | `result`      | `cost_usd`, `session_cost_usd`, `num_turns`, `is_error`, `subtype` |
--- | `state`       | `state`                                                      |
--- | `error`       | `message`                                                    |
--- | `exit`        | `code`, `signal`                                             |
---@class cms.Event
---@field session string The cms session name.
---@field at_ms integer Milliseconds since the Unix epoch.
---@field event "init"|"text"|"tool_use"|"tool_result"|"permission"|"retry"|"cost_baseline"|"waiting"|"queued"|"approval"|"decided"|"violation"|"result"|"state"|"error"|"exit"
---@field [string] any

---Call `fn(event)` for engine events (see `cms.Event`), or `*` for all. Handlers
---run on the script's thread after each engine call returns (and during
---`cms.sleep`), under a time limit; they cannot call async functions. An
---`approval` handler may decide the call by returning `"allow"` or `"deny", reason`
---(nil leaves it to a person); a script that waits for that turn itself decides in
---a function beside it (`cms.parallel`) that sleeps, so handlers get to run.
---@param event string
---@param fn fun(event: cms.Event): (("allow"|"deny")?, string?)
---@return integer id For `cms.off`.
function cms.on(event, fn) end

---Remove an event handler.
---@param id integer
---@return boolean removed
function cms.off(id) end

---A tool call waiting for a person's decision.
---@class cms.Approval
---@field session string
---@field id string What a decision names.
---@field tool string
---@field input table
---@field reason string Why the policy asks.
---@field asked_at_ms integer
---@field deadline_ms integer When it is denied if nobody decides.

---Tool calls waiting for a person's decision, oldest first.
---@async
---@return cms.Approval[]
function cms.approvals() end

---Approve or deny a waiting tool call (the session's oldest, or `id`); recorded as
---decided by `lua`.
---@async
---@param opts {session: string, id?: string, allow: boolean, reason?: string, always?: boolean}
---@return cms.Approval decided
function cms.decide(opts) end

---Wait without blocking other coroutines.
---@async
---@param seconds number
function cms.sleep(seconds) end

---Log to stderr through cms's logger: `cms.log("text")` (info, shown by default) or
---`cms.log("warn", "text")`; `debug` and `trace` show with `-v`/`-vv` or `RUST_LOG=lua=debug`.
---@param ... any
function cms.log(...) end

cms.json = {}

---Encode a Lua value as JSON.
---@param value any
---@param pretty? boolean
---@return string
function cms.json.encode(value, pretty) end

---Decode JSON text (null becomes nil).
---@param text string
---@return any
function cms.json.decode(text) end

-- generated: cms.DelegateOptions
---Options of `cms.delegate` (and of `cms delegate`, MCP `delegate_task`).
---@class cms.DelegateOptions
---@field name string Session name (1-64 of A-Z a-z 0-9 . _ -).
---@field task string What to do (on the command line, `-` reads it from stdin).
---@field model? string Model: sonnet, opus, haiku, or a model id [default: sonnet].
---@field preset? "read-only"|"review"|"edit"|"full"|"plan"|string Permission preset: read-only, review, edit, full, plan, or one of presets.lua [default: edit].
---@field max_cost? number Cost limit in USD over the session's life [default: safety.lua's, 2.00].
---@field max_turns? integer Agent-turn limit over the session's life [default: safety.lua's, 50].
---@field timeout? number Seconds one interaction (a turn, a check) may take [default: safety.lua's, 3600].
---@field safety? boolean The safety net: limits and protected paths; false turns it off (the preset still applies) [default: true].
---@field context? string Extra context put before the task [default: none].
---@field work_dir? string Working directory [default: the current directory].
---@field system_prompt? string Text appended to Claude Code's system prompt [default: none].
---@field agent? string Use a specific agent [default: none].
---@field strategy? string single, correction_loop, review, or a strategy of yours [default: single].
---@field check? string|fun(r: cms.Response): boolean, string? For correction_loop: a shell command that must exit 0, e.g. "cargo test" (in Lua, also a function) [default: none].
---@field max_attempts? integer Attempts for correction_loop, review rounds for review [default: 3 and 2].
---@field review_model? string The reviewer's model for review [default: the task's].
-- end generated

---A delegation's result (the JSON of `cms delegate --json`), with methods to go on.
---@class cms.Delegation
---@field status "completed"|"needs_input"|"check_failed"|"failed"|"cost_exceeded"|"turns_exceeded" `check_failed`: the last check did not pass.
---@field response string The final text.
---@field cost number The cost of this call.
---@field turns integer
---@field duration integer Milliseconds.
---@field sessionId string?
---@field name string
---@field canContinue boolean
---@field toolsUsed string[]
---@field safety {totalViolations: integer, violations: {type: string, message: string, action: string, tool: string?, timestamp: integer}[], limits: {maxCostUsd: number?, maxTurns: integer?, timeoutSecs: number?}}?
---@field error string?
---@field deniedBeforeExecution {tool: string, reason: string}[] Tool calls refused before they ran.
---@field permissionDenials {tool: string, input: table}[]
---@field retries integer Follow-ups the strategy sent.
---@field totalCost number The session's cost over its life.
---@field preset string
---@field strategy string
---@field checks {passed: boolean, output: string}[]
---@field reviews {session: string, response: string, cost: number}[]
local Delegation = {}

---Send a follow-up or correction; the strategy runs again under the same guard.
---@async
---@param message string
---@return cms.Delegation
function Delegation:continue(message) end

---Stop the session gracefully (resumable).
---@async
---@return {name: string, status: "finished", totalCost: number, totalTurns: integer}
function Delegation:finish() end

---Kill the session now.
---@async
---@return {name: string, status: "aborted", totalCost: number, totalTurns: integer}
function Delegation:abort() end

---Hand a task to a guarded session (preset + safety net) driven by a strategy.
---@async
---@param opts cms.DelegateOptions
---@return cms.Delegation
function cms.delegate(opts) end

---The `task` a strategy (`scripts/strategies/NAME.lua`) is given. A strategy returns
---the last response and optionally a status: `"needs_input"`, `"check_failed"`,
---`"failed"` or `"completed"`. Whatever it returns, a delegation whose last
---`task:check` did not pass is `check_failed`.
---@class cms.Task
---@field name string The session's name.
---@field prompt string The task (context included), or the `continue` message.
---@field preset string
---@field strategy string
---@field work_dir string
---@field options cms.DelegateOptions
local Task = {}

---Send to the task's session (the first call starts it). Never raises: a failed turn
---comes back with `is_error` and `error`.
---@async
---@param text string
---@param kind? string The history kind (`retry`, `correction`, ...).
---@return cms.Response
function Task:send(text, kind) end

---Run the task's check (`options.check`, or the function given to `cms.delegate`):
---true, or false and its output. Every call is listed in the result's `checks`; if the
---last one failed, the delegation ends `check_failed`.
---@async
---@param last cms.Response The response to check.
---@return boolean passed
---@return string output
function Task:check(last) end

---Ask a read-only reviewer session (preset `review`) about the work.
---@async
---@param prompt string
---@return cms.Response
function Task:review(prompt) end

---Tool calls refused before they ran in this call: `{tool, reason}`.
---@return {tool: string, reason: string}[]
function Task:refusals() end

---True once the safety net stopped or killed the session (send nothing more).
---@return boolean
function Task:ended() end

cms.path = {}

---The absolute path `path` names from `cwd`: `~` expanded, `.`/`..` and symlinks resolved.
---@param path string
---@param cwd? string
---@return string
function cms.path.resolve(path, cwd) end

---`path` relative to `cwd` (both resolved), or nil when it lies outside.
---@param path string
---@param cwd? string
---@return string?
function cms.path.relative(path, cwd) end

---@param path string
---@return boolean
function cms.path.exists(path) end

---@param path string
---@return boolean
function cms.path.is_dir(path) end

---The text of a file, or nil and an error. Policies, plugins and strategies read
---files (this, `io.open(path)`, `io.lines`) but cannot write or delete them.
---@param path string
---@return string? text
---@return string? err
function cms.path.read(path) end

cms.shell = {}

---The simple commands of a Bash line (nested `$( )` and backticks included), with
---quotes and escapes removed.
---@param line string
---@return {argv: string[], assigns: string[], redirects: {op: string, target: string, writes: boolean}[]}[]
function cms.shell.parse(line) end

---The context a safety policy (`safety.lua`) is given with each call.
---@class cms.PolicyContext
---@field session string
---@field cwd string Where claude runs: for a session on another host, the folder there.
---@field host string? The host of `hosts.lua` the session runs on; nil: this machine.
---@field preset table? The session's preset from `presets.lua`, with `name`.
---@field safety boolean False with `--no-safety`.
---@field limits {max_cost: number?, max_turns: integer?, timeout: number?}
---@field cost number The session's cost so far (USD).
---@field turns integer Agent turns so far.
---@field elapsed number Seconds of the current turn.

---A request for a new session, as `on_spawn(spec, ctx)` in `safety.lua` sees it.
---Return nil (cms's defaults decide), "allow" [, spec] (perhaps lowered), or
---"deny", reason. Any other answer refuses.
---@class cms.SpawnSpec
---@field name string
---@field kind "session"|"delegate"
---@field permission_mode cms.PermissionMode?
---@field allowed_tools string[] Tools the CLI would run without asking cms.
---@field preset string? The preset it is guarded with (nil: unguarded).
---@field safety boolean
---@field mcp_config string? MCP servers Claude Code would start (refused over MCP unless allowed here).
---@field add_dirs string[] More directories for the file tools (refused over MCP unless allowed here).

---Who asks for a new session.
---@class cms.SpawnContext
---@field caller "cli"|"script"|"mcp"|"session" "session": a guarded session, through cms's MCP tools.
---@field parent {preset: string?, safety: boolean}? The guard of the session asking, if any.

---A plugin: `plugins/NAME/init.lua` returns one.
---@class cms.Plugin
---@field name string
---@field version? string
---@field description? string
---@field tools? cms.PluginTool[] MCP tools (`cms mcp`).
---@field policies? {name: string, on_tool_use: fun(tool: {name: string, input: table}, ctx: cms.PolicyContext): ("deny"|"allow"|nil), string?}[] Run before safety.lua for guarded sessions: nil or "allow" pass to the next, "deny" refuses; any other answer refuses too, naming the plugin.
---@field strategies? table<string, fun(task: cms.Task): cms.Response?, string?> Used with `--strategy NAME`.

---@class cms.PluginTool
---@field name string Letters, digits, `_` or `-`.
---@field description string
---@field input_schema? table A JSON Schema object (default `{type = "object"}`).
---@field handler fun(args: table): any The result is sent back as JSON; an error becomes a tool error.


--- A machine of `hosts.lua` that sessions can run on (`cms spawn --on NAME`).
---@class cms.Host
---@field runner? string `ssh` (default), `local`, `docker`, `kubectl`, or `runners/NAME.lua` of yours.
---@field address? string `user@host`, or an alias of `~/.ssh/config` (default: the host's name).
---@field work_dir_map? table<string, string> Local folder prefix → the same folder on the host.
---@field max_live? integer Most live sessions on the host (its own cap: parked, then queued, at it).
---@field labels? string[]
---@field claude? string The `claude` executable on the host (default `claude`).
---@field env? table<string, string> The remote child's environment; nothing else of yours crosses.
---@field ssh_options? string[] Extra client options, e.g. `{ "-F", "/path/ssh_config" }`.
---@field image? string docker: an image to `run` (instead of a container to `exec` into, `address`).
---@field program? string docker: the program run instead of `docker`, one with its command line (`podman`).
---@field namespace? string kubectl: the pod's namespace (`-n`).
---@field context? string kubectl: the kubeconfig context (`--context`).

--- What a runner (`runners/NAME.lua`, a function of this) is asked to start.
---@class cms.RunRequest
---@field session string The session's name.
---@field host string The host's name in `hosts.lua`.
---@field config cms.Host The host's entry.
---@field claude string The `claude` executable to run.
---@field argv string[] claude's arguments.
---@field dir string The working folder where claude runs (the local one mapped by `work_dir_map`).
---@field local_dir string The session's folder on this machine.
---@field env table<string, string> The host's `env` and the session's guard: what may cross.
---@field local_env table<string, string> What cms would give a claude run here (for local runners only).

--- What a runner returns: the local command that carries stream-json on its stdio.
---@class cms.Launch
---@field argv string[] The local command (`ssh`, `docker`, ...) and its arguments.
---@field env? table<string, string> Extra environment of the local command.
---@field kill? string[] Run locally to end the remote side after a kill; `{pgid}` is the group the remote side printed as `cms-remote-pgid N` on stderr.

return cms
