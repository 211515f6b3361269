-- git-guard: a policy plugin. Guarded sessions (`cms delegate`) may not force-push,
-- push to main/master, or commit while main/master is checked out.
--
-- A plugin is a folder with an init.lua returning a table. Policies here run
-- before the safety net's own rules, for every tool call of a guarded session:
-- return "deny", reason to refuse (the model sees the reason), nothing to pass.

local PROTECTED_BRANCHES = { main = true, master = true }

-- The branch checked out in `dir`, from .git/HEAD (nil when unknown).
local function current_branch(dir)
  local f = io.open(dir .. "/.git/HEAD")
  if not f then return nil end
  local head = f:read("l") or ""
  f:close()
  return head:match("^ref: refs/heads/(.+)$")
end

local function has(list, wanted)
  for _, v in ipairs(list) do
    if wanted[v] then return v end
  end
  return nil
end

local function check_git(argv, cwd)
  -- Skip options before the subcommand (`git -C dir push`).
  local i = 2
  while argv[i] and argv[i]:match("^%-") do
    if argv[i] == "-C" then i = i + 1 end
    i = i + 1
  end
  local sub, args = argv[i], { table.unpack(argv, i + 1) }
  if sub == "push" then
    if has(args, { ["--force"] = true, ["-f"] = true, ["--force-with-lease"] = true, ["--mirror"] = true }) then
      return "force pushes are blocked by git-guard"
    end
    for _, a in ipairs(args) do
      if a:match("^%+") then return "force pushes (+refspec) are blocked by git-guard" end
      local target = a:match(":(.+)$") or a
      if PROTECTED_BRANCHES[target] then
        return ("pushing to %s is blocked by git-guard: push a branch and open a review"):format(target)
      end
    end
  elseif sub == "commit" then
    local branch = current_branch(cwd)
    if branch and PROTECTED_BRANCHES[branch] then
      return ("committing on %s is blocked by git-guard: create a branch first (git switch -c ...)"):format(branch)
    end
  end
  return nil
end

return {
  name = "git-guard",
  version = "1.0.0",
  description = "Blocks force pushes, pushes to main/master and commits on main/master",
  policies = {
    {
      name = "git-guard",
      on_tool_use = function(tool, ctx)
        if tool.name ~= "Bash" or type(tool.input.command) ~= "string" then return nil end
        for _, cmd in ipairs(cms.shell.parse(tool.input.command)) do
          local name = cmd.argv[1] and cmd.argv[1]:match("[^/]*$")
          if name == "git" then
            local why = check_git(cmd.argv, ctx.cwd)
            if why then return "deny", why end
          end
        end
        return nil
      end,
    },
  },
}
