-- The safety net of guarded sessions (`cms delegate`, `cms.delegate{}`).
--
-- cms calls `on_tool_use` before every tool call Claude Code asks about and
-- `on_event` after each tool use and each result. They run under a time limit;
-- one that fails or runs too long denies the call (fail closed).
--
--   ctx = { session, cwd, preset = {name = ..., allow = ...}, safety = bool,
--           limits = {max_cost = USD, max_turns = N}, cost = USD, turns = N,
--           elapsed = seconds of the current turn }
--   tool = { name = "Write", input = {...} }
--
-- on_tool_use returns "allow" [, changed_input] or "deny", reason [, rule]; a
-- denial with a rule is recorded as a safety violation.
-- on_event returns nil (go on), or "warn" | "stop" | "kill", message, rule.
-- Any other answer fails closed: on_tool_use denies, on_event stops the session.
--
-- Optional: on_spawn(spec, ctx) is asked before a session starts over MCP (or
-- from inside a guarded session): spec = {name, kind, permission_mode,
-- allowed_tools, preset, safety}, ctx = {caller = "mcp" | "session" | ...,
-- parent = {preset, safety}}. Return nil to let cms's defaults decide (sessions
-- over MCP are guarded; no acceptEdits, dontAsk, bypassPermissions or
-- safety = false), "allow" [, spec] to allow (a session started by a guarded one
-- is still never wider than it), or "deny", reason. For example:
--
--   function M.on_spawn(spec, ctx)
--     if ctx.caller == "mcp" and spec.preset == "full" then return "deny", "no full sessions over MCP" end
--   end
--
-- Override: ~/.config/cms/safety.lua or ./.cms/safety.lua.

local protected = require("protected_paths")

local M = {}

-- The defaults; `--max-cost`, `--max-turns` and `--timeout` override them.
-- A limit left out here keeps the built-in default: none is dropped by omission.
-- `timeout` (seconds per interaction) is the seed's 300 raised to cms's turn
-- default, 3600: real agent turns take 5-20 minutes and a cut turn is wasted
-- spend; the cost and turn limits are what stop a runaway delegation.
M.limits = { max_cost = 2.00, max_turns = 50, timeout = 3600 }

-- The host's caps and budgets, across every session one cms process (`cms serve`,
-- an MCP server, a script) holds. They apply to all its sessions, guarded or not,
-- and an edit takes effect without a restart. nil is no limit.
--   max_live   claude processes alive at once. When one more is needed, the least
--              recently used idle session is parked (stopped; its next message
--              resumes it with its conversation); when none is idle, the request
--              waits in line (state `queued`). nil: one per GiB of memory, 2 to 8.
--   max_turns  turns running at once across sessions; others wait in line.
--   daily_usd  USD all sessions may spend per day (since local midnight); once
--              spent, no turn starts until midnight.
--   total_usd  USD all sessions may spend while the host runs.
M.host = { max_live = nil, max_turns = nil, daily_usd = nil, total_usd = nil }

local function granted(preset, name)
  if not preset then return true end
  local allow = preset.allow
  if allow == "*" then return true end
  for _, t in ipairs(allow or {}) do
    if t == name then return true end
  end
  return false
end

-- Commands that reach the network, and those that do with some subcommands.
M.network_commands = {
  curl = true, wget = true, ssh = true, scp = true, sftp = true, rsync = true, nc = true,
  ncat = true, netcat = true, telnet = true, ftp = true, socat = true, http = true,
}
M.network_subcommands = {
  git = { push = true, pull = true, fetch = true, clone = true, ["ls-remote"] = true },
  npm = { install = true, i = true, ci = true, publish = true, update = true },
  pip = { install = true, download = true }, pip3 = { install = true, download = true },
  cargo = { install = true, publish = true, update = true, fetch = true },
  docker = { pull = true, push = true, login = true },
}

-- How long a question waits for a person before the call is denied (seconds).
M.approval_timeout = 600

-- The command itself (after sudo, env, nice, ... and VAR=value), by its name (so
-- `/usr/bin/curl` is `curl`), and the first word after it that is not an option.
local wrappers = { sudo = true, env = true, nice = true, nohup = true, command = true,
  exec = true, time = true, timeout = true, xargs = true, doas = true, stdbuf = true,
  ionice = true, builtin = true }
-- Options of a command that take the next word as their value (`git -C DIR push`).
local takes_value = { ["-C"] = true, ["-c"] = true, ["--git-dir"] = true, ["--work-tree"] = true,
  ["--prefix"] = true, ["-H"] = true, ["--context"] = true, ["-n"] = true }
local shells = { sh = true, bash = true, dash = true, zsh = true, ksh = true }
local function basename(word) return (word:match("([^/]+)$")) or word end
local function command_words(argv)
  local i = 1
  while argv[i] and (wrappers[basename(argv[i])] or argv[i]:find("=", 1, true)
      or argv[i]:sub(1, 1) == "-") do
    i = i + 1
  end
  local cmd = argv[i] and basename(argv[i])
  local j = i + 1
  while argv[j] and argv[j]:sub(1, 1) == "-" do
    j = j + (takes_value[argv[j]] and 2 or 1)
  end
  return cmd, argv[j], i
end

-- Where a write may go without a question: the work dir, and these.
local harmless_targets = { ["/dev/null"] = true, ["/dev/stdout"] = true, ["/dev/stderr"] = true,
  ["/dev/tty"] = true }

local function outside(path, cwd)
  return path ~= nil and not harmless_targets[path] and cms.path.relative(path, cwd) == nil
end

-- Why a shell line needs a person (preset.ask), or nil. `depth` bounds `sh -c` nesting.
local function shell_question(line, ask, cwd, depth)
  if depth > 4 then return "a shell command nested too deep to read: " .. line end
  local ok, commands = pcall(cms.shell.parse, line)
  if not ok then return "a shell command cms cannot read: " .. line end
  for _, c in ipairs(commands) do
    local cmd, sub, at = command_words(c.argv)
    -- `sh -c "..."`: the string is a command line of its own.
    if cmd and shells[cmd] then
      for k = at + 1, #c.argv do
        if c.argv[k] == "-c" and c.argv[k + 1] then
          local why = shell_question(c.argv[k + 1], ask, cwd, depth + 1)
          if why then return why end
        end
      end
    end
    if ask.network then
      -- Any word naming a network command counts (`xargs curl`, `sudo -u me ssh`).
      for k = 1, #c.argv do
        if M.network_commands[basename(c.argv[k])] then
          return "a command that reaches the network: " .. line
        end
      end
      local subs = cmd and M.network_subcommands[cmd]
      if subs and sub and subs[sub] then
        return "a command that reaches the network: " .. line
      end
    end
    if ask.writes_outside_work_dir then
      -- A command run from another folder writes where this one cannot follow.
      if cmd == "cd" or cmd == "pushd" then
        local dir = c.argv[at + 1]
        if dir == nil or dir == "-" or dir:find("[$`]") or outside(dir, cwd) then
          return "a command that changes to a folder outside the work dir: " .. line
        end
      end
      for _, r in ipairs(c.redirects) do
        if r.writes and outside(r.target, cwd) then
          return "a command that writes outside the work dir: " .. line
        end
      end
      if cmd and protected.writers[cmd] then
        for k = at + 1, #c.argv do
          local w = c.argv[k]
          if w:sub(1, 1) ~= "-" and (w:sub(1, 1) == "/" or w:sub(1, 1) == "~" or w:find("..", 1, true)
              or w:find("[$`]")) and outside(w, cwd) then
            return "a command that writes outside the work dir: " .. line
          end
        end
      end
    end
  end
  return nil
end

-- Why a person should decide this call (preset.ask), or nil.
function M.questions(tool, ctx)
  local ask = ctx.preset and ctx.preset.ask
  if not ask then return nil end
  if ask.writes_outside_work_dir then
    local key = protected.file_tools[tool.name]
    local path = key and tool.input[key]
    if outside(path, ctx.cwd) then
      return ("%s writes outside the work dir: %s"):format(tool.name, path)
    end
  end
  if tool.name == "Bash" and type(tool.input.command) == "string" then
    return shell_question(tool.input.command, ask, ctx.cwd, 0)
  end
  return nil
end

function M.on_tool_use(tool, ctx)
  if ctx.safety then
    local why = protected.violation(tool, ctx.cwd)
    if why then return "deny", why, "protected_path" end
  end
  if not granted(ctx.preset, tool.name) then
    return "deny", ("the %s preset does not allow %s"):format(ctx.preset.name, tool.name)
  end
  -- Allowed, unless the preset wants a person to decide this one.
  local question = M.questions(tool, ctx)
  if question then return "ask", question, M.approval_timeout end
  return "allow"
end

function M.on_event(event, ctx)
  if not ctx.safety then return nil end
  local limits = ctx.limits
  if limits.max_cost and ctx.cost > limits.max_cost then
    return "kill", ("Cost $%.4f exceeded limit $%.4f"):format(ctx.cost, limits.max_cost), "cost_exceeded"
  end
  if limits.max_turns and ctx.turns > limits.max_turns then
    return "kill", ("Turns %d exceeded limit %d"):format(ctx.turns, limits.max_turns), "turns_exceeded"
  end
  return nil
end

return M
