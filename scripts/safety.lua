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

function M.on_tool_use(tool, ctx)
  if ctx.safety then
    local why = protected.violation(tool, ctx.cwd)
    if why then return "deny", why, "protected_path" end
  end
  if not granted(ctx.preset, tool.name) then
    return "deny", ("the %s preset does not allow %s"):format(ctx.preset.name, tool.name)
  end
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
