-- Permission presets for delegated sessions (`cms delegate --preset NAME`).
--
-- cms runs guarded sessions in Claude Code's `default` mode with every permission
-- question sent to cms, so the safety net sees each tool call before it runs and
-- the preset answers what the net lets through:
--
--   permission_mode   the CLI's mode (`default` or `plan`; cms never uses
--                     `bypassPermissions`, which asks nothing and refuses root)
--   allowed_tools     tools the CLI runs without asking (keep to read-only ones:
--                     the safety net does not see those calls)
--   disallowed_tools  tools removed from the session altogether
--   allow             tools the preset grants when the CLI asks ("*" for all)
--   ask               calls a person decides (`cms approve` / `cms deny`, `cms top`,
--                     MCP `decide_approval`, a Lua `approval` handler) before they run:
--                       writes_outside_work_dir   a file written outside the work dir
--                       network                   a shell command that reaches the network
--                     (see `questions` in safety.lua); nobody deciding in time denies.
--
-- Override: ~/.config/cms/presets.lua or ./.cms/presets.lua.

local READ = { "Read", "Glob", "Grep", "LS", "WebSearch", "WebFetch", "TodoWrite" }
local EDIT = { "Edit", "Write", "MultiEdit", "NotebookEdit" }

local function join(...)
  local out = {}
  for _, list in ipairs({ ... }) do
    for _, v in ipairs(list) do out[#out + 1] = v end
  end
  return out
end

return {
  ["read-only"] = {
    description = "Search and read files only",
    permission_mode = "default",
    allowed_tools = READ,
    disallowed_tools = EDIT,
    allow = READ,
  },
  review = {
    description = "Code review: read-only",
    permission_mode = "default",
    allowed_tools = READ,
    disallowed_tools = EDIT,
    allow = READ,
  },
  edit = {
    description = "Read and edit files; no other commands that change things",
    permission_mode = "default",
    allowed_tools = READ,
    allow = join(READ, EDIT),
  },
  full = {
    description = "Everything, root included; the safety net still decides every call",
    permission_mode = "default",
    allowed_tools = READ,
    allow = "*",
  },
  supervised = {
    description = "Everything, but a person approves writes outside the work dir and network commands",
    permission_mode = "default",
    allowed_tools = READ,
    allow = "*",
    ask = { writes_outside_work_dir = true, network = true },
  },
  plan = {
    description = "Explore and plan; nothing is executed",
    permission_mode = "plan",
    allowed_tools = READ,
    allow = READ,
  },
}
