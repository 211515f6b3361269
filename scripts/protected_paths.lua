-- Protected paths: files and folders a guarded session may not change.
--
-- Checked *before* a tool runs, for Write, Edit, MultiEdit, NotebookEdit and for
-- Bash commands that would write there. Paths are resolved first (`..`, relative
-- or absolute, `~`, symlinks), and names are compared without regard to case.
--
-- Override: copy this file to ~/.config/cms/protected_paths.lua (yours) or
-- ./.cms/protected_paths.lua (this project's). Edits take effect at once.
--
-- Entry forms:
--   ".env"          a file or folder of that name, anywhere (not ".envrc")
--   ".env.*"        a glob on the name
--   ".git/"         a folder: the folder itself and everything under it
--   "config/prod.yml"  a path relative to the session's working directory

local M = {}

-- cms's and Claude Code's own configuration (`.cms/`, `.claude/`, `.mcp.json`,
-- `~/.claude.json`, the user's config dir, $CMS_HOME) and `.git/` are protected by
-- cms itself for every guarded session, whether or not they are listed here.
M.paths = {
  ".env", ".env.*", ".cms/", ".claude/", ".mcp.json", ".claude.json",
  ".git/", "node_modules/", "credentials/", "secrets/",
  ".ssh/", ".aws/", ".gnupg/",
  "id_rsa", "id_ed25519", "*.pem", "*.key", ".npmrc", ".netrc",
  "package-lock.json", "yarn.lock", "pnpm-lock.yaml",
}

-- Tools whose input names the file they write.
M.file_tools = { Write = "file_path", Edit = "file_path", MultiEdit = "file_path", NotebookEdit = "notebook_path" }

-- Commands that only read: naming a protected path in them is fine.
M.readers = {
  cat = true, less = true, more = true, head = true, tail = true, grep = true, rg = true, egrep = true,
  fgrep = true, ls = true, wc = true, stat = true, file = true, diff = true, cmp = true, md5sum = true,
  sha1sum = true, sha256sum = true, echo = true, printf = true, test = true, ["["] = true, pwd = true,
  realpath = true, readlink = true, basename = true, dirname = true, du = true, tree = true, jq = true,
}

-- Commands that write the files they are given: a computed argument ($VAR) is refused.
M.writers = {
  rm = true, rmdir = true, mv = true, cp = true, tee = true, touch = true, truncate = true, dd = true,
  ln = true, chmod = true, chown = true, chgrp = true, install = true, mkdir = true, rsync = true,
  shred = true, unlink = true, sed = true, perl = true, patch = true, tar = true, unzip = true,
}

-- Wrappers that run the command after them.
local wrappers = { sudo = true, env = true, nice = true, nohup = true, command = true, builtin = true,
  exec = true, time = true, timeout = true, stdbuf = true, xargs = true, doas = true, ionice = true }
local shells = { bash = true, sh = true, zsh = true, dash = true, ksh = true, fish = true }

local function lower(s) return s:lower() end

-- A glob (`*`, `?`, `[...]`) as a Lua pattern.
local function glob_pattern(glob)
  local p = glob:gsub("[%^%$%(%)%%%.%+%-]", "%%%0"):gsub("%*", ".*"):gsub("%?", ".")
  return "^" .. p .. "$"
end

-- M.paths prepared once (names lower-cased, globs as patterns); redone if replaced.
local prepared, prepared_for
local function entries()
  if prepared_for ~= M.paths then
    prepared, prepared_for = {}, M.paths
    for _, entry in ipairs(M.paths) do
      local e = { entry = entry, name = lower(entry:gsub("/$", "")), dir = entry:sub(-1) == "/" }
      e.path = not e.dir and e.name:find("/", 1, true) ~= nil
      e.glob = e.name:find("[*?%[]") ~= nil
      e.pattern = e.glob and glob_pattern(e.name) or nil
      prepared[#prepared + 1] = e
    end
  end
  return prepared
end

-- `name` is already lower-case.
local function name_matches(e, name)
  if e.glob then return name:match(e.pattern) ~= nil end
  return e.name == name
end

--- The protected entry `path` falls under, or nil. `path` is as a tool gives it.
function M.match(path, cwd)
  if type(path) ~= "string" or path == "" then return nil end
  local rel, abs = cms.path.relative(path, cwd)
  rel = lower(rel or abs:sub(2))
  local parts = {}
  for part in rel:gmatch("[^/]+") do parts[#parts + 1] = part end
  local last = parts[#parts]
  for _, e in ipairs(entries()) do
    if e.dir then
      for _, part in ipairs(parts) do
        if name_matches(e, part) then return e.entry end
      end
    elseif e.path then
      if rel == e.name then return e.entry end
    elseif last and name_matches(e, last) then
      return e.entry
    end
  end
  return nil
end

-- Could a glob word (`rm *`, `cp x .e*`) expand to a protected name?
local function glob_hits(word)
  local base = word:match("[^/]*$")
  if base == "" or not base:find("[*?%[]") then return nil end
  local pattern = glob_pattern(lower(base))
  for _, e in ipairs(entries()) do
    if not e.glob and not e.path and e.name:match(pattern) then return e.entry end
  end
  return nil
end

-- Does `word` mention a protected name anywhere (`open('.env','w')`, `of=.env`)?
local function mentions(word)
  local w = lower(word)
  for _, e in ipairs(entries()) do
    if not e.glob then
      local from = 1
      while true do
        local s, f = w:find(e.name, from, true)
        if not s then break end
        local before, after = w:sub(s - 1, s - 1), w:sub(f + 1, f + 1)
        if not before:match("[%w_%-]") and not after:match("[%w_%-%.]") then return e.entry end
        from = s + 1
      end
    end
  end
  return nil
end

local function is_dynamic(word) return word:find("[$`]") ~= nil end

-- The cwd, or a folder above it: removing or moving it takes protected paths along.
local function holds_project(word, cwd)
  local target = cms.path.resolve(word, cwd)
  local base = cms.path.resolve(".", cwd)
  return base == target or base:sub(1, #target + 1) == target .. "/" or target == "/"
end

local check_command -- forward

--- Why a Bash command line is refused, or nil.
function M.bash_violation(line, cwd, depth)
  depth = depth or 0
  if depth > 4 then return "the command nests shells too deeply to check" end
  for _, cmd in ipairs(cms.shell.parse(line)) do
    local why = check_command(cmd, cwd, depth)
    if why then return why end
  end
  return nil
end

check_command = function(cmd, cwd, depth)
  for _, r in ipairs(cmd.redirects) do
    if r.writes then
      if is_dynamic(r.target) then
        return ("the redirection target %q is only known at run time"):format(r.target)
      end
      local hit = M.match(r.target, cwd) or glob_hits(r.target)
      if hit then return ("it redirects output into %s (protected: %s)"):format(r.target, hit) end
    end
  end
  for _, a in ipairs(cmd.assigns) do
    local hit = mentions(a)
    if hit then return ("it assigns a protected path (%s) to a variable"):format(hit) end
  end
  local argv = cmd.argv
  local i = 1
  -- Skip wrappers (`sudo`, `env X=1`, `timeout 5`) to the real command.
  while argv[i] and wrappers[(argv[i]:match("[^/]*$"))] do
    i = i + 1
    while argv[i] and (argv[i]:match("^%-") or argv[i]:find("=") or argv[i]:match("^%d+[smhd]?$")) do
      i = i + 1
    end
  end
  local name = argv[i] and argv[i]:match("[^/]*$") or nil
  if not name then return nil end
  local args = { table.unpack(argv, i + 1) }
  if shells[name] then
    for j, a in ipairs(args) do
      if a:match("^%-%a*c") and args[j + 1] then return M.bash_violation(args[j + 1], cwd, depth + 1) end
    end
  end
  if name == "eval" then return M.bash_violation(table.concat(args, " "), cwd, depth + 1) end
  if M.readers[name] then return nil end
  for _, a in ipairs(args) do
    if M.writers[name] and is_dynamic(a) then
      return ("`%s` is given %q, which is only known at run time"):format(name, a)
    end
    local value = a:match("^%-%-?[%w-]+=(.*)$") or a:match("^%a+=(.*)$") or a
    local is_flag = value == a and a:match("^%-") ~= nil
    -- Resolving a word costs file lookups: do it for writers and `cd`, and for
    -- words that look like paths (a `/`, `.`, `~` or glob).
    local pathlike = M.writers[name] or name == "cd" or name == "pushd" or value:find("[/.~*?%[]")
    local hit = (not is_flag and pathlike and (M.match(value, cwd) or glob_hits(value))) or mentions(a)
    if hit then return ("`%s` would touch %s (protected: %s)"):format(name, a, hit) end
    if (name == "rm" or name == "mv" or name == "rmdir") and not a:match("^%-") and holds_project(a, cwd) then
      return ("`%s %s` would take the whole project with it"):format(name, a)
    end
  end
  return nil
end

--- Why this tool call is refused, or nil. `tool` is `{name = ..., input = {...}}`.
function M.violation(tool, cwd)
  local field = M.file_tools[tool.name]
  if field then
    local path = tool.input[field]
    local hit = M.match(path, cwd)
    if hit then return ("%s is protected (%s): %s may not change it"):format(path, hit, tool.name) end
    if tool.name == "MultiEdit" and type(tool.input.edits) == "table" then
      for _, e in ipairs(tool.input.edits) do
        hit = M.match(e.file_path, cwd)
        if hit then return ("%s is protected (%s)"):format(e.file_path, hit) end
      end
    end
    return nil
  end
  if tool.name == "Bash" and type(tool.input.command) == "string" then
    local why = M.bash_violation(tool.input.command, cwd)
    if why then return "Bash command refused: " .. why end
  end
  return nil
end

return M
