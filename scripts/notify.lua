-- Notifications from the session host (`cms serve`): what you are told, and how.
--
-- Override: copy this file to ~/.config/cms/notify.lua (it is read again when it
-- changes). A project's .cms/ never decides this: only yours and the built-in count.
--
-- Kinds:
--   turn_done         a session finished a turn
--   needs_input       a turn ended on a question
--   waiting_approval  a tool call waits for your decision (`cms approvals`)
--   failed            a turn failed
--   budget_spent      a session went over its cost or turn limit

local M = {}

-- Which kinds are told. Finished turns are many: off unless you want them.
M.on = {
  turn_done = false,
  needs_input = true,
  waiting_approval = true,
  failed = true,
  budget_spent = true,
}

-- A terminal bell, when the host's stderr is a terminal (`cms serve` in a window).
M.bell = true

-- A desktop notification through `notify-send`, where it is installed.
M.desktop = true

-- A command of yours, run without a shell; {kind}, {session} and {message} are
-- filled in. For example, to a phone through ntfy:
--   M.command = { "curl", "-s", "-d", "{message}", "https://ntfy.sh/my-cms-topic" }
M.command = nil

-- At most one notice of a kind per session in this many seconds, and this many a
-- minute in all.
M.min_interval = 10
M.per_minute = 20

-- Your own way to tell (optional): called with { kind, session, message } before
-- the bell, the desktop and the command; return false when you told the user
-- yourself and the rest should not.
-- function M.notify(n)
--   cms.log("info", n.kind .. ": " .. n.message)
-- end

return M
