--- The docker runner: a session's `claude` in a container.
---
--- hosts.lua:
---   box = { runner = "docker", address = "my-container" }     -- docker exec -i into it
---   img = { runner = "docker", image = "me/claude:latest" }   -- docker run -i --rm of it
---   pod = { runner = "docker", program = "podman", address = "c" }  -- the same with podman
---
--- With `address` (a running container's name), cms runs
---   docker exec -i CONTAINER setsid -w sh -c 'SCRIPT'
--- With `image`, it runs a container of its own, named `cms-SESSION`, with the
--- session's folder mounted at the same place (or where `work_dir_map` says):
---   docker run -i --rm --name cms-SESSION -v LOCAL:DIR -w DIR IMAGE setsid -w sh -c 'SCRIPT'
--- stream-json travels on docker's stdin/stdout. SCRIPT prints `cms-remote-pgid $$`
--- (setsid made the shell a session leader, and `exec` keeps its pid for claude),
--- goes to the folder and execs claude with the host's `env` only.
---
--- Ending the tree (kill, timeout, forced stop): with `exec`, TERM to the group in
--- the container, then KILL to what is left of the session
---   docker exec CONTAINER sh -c 'kill -TERM -- -PGID; sleep 1; pkill -KILL -s PGID'
--- (the container needs `pkill`, from procps); with `image`, `docker rm -f cms-SESSION`
--- ends the whole container. Unlike ssh there is no watcher for a dead client: a
--- `docker exec` whose client is gone gets EOF on stdin, and claude ends with it.
---
---@param s any
---@return string
local function quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

---@param req cms.RunRequest
---@return cms.Launch
return function(req)
  local host = req.config
  -- docker, or a program with its command line (podman).
  local PROGRAM = host.program or "docker"
  local exec = { "exec", "env" }
  local names = {}
  for k in pairs(req.env) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    exec[#exec + 1] = quote(k .. "=" .. req.env[k])
  end
  exec[#exec + 1] = quote(req.claude)
  for _, a in ipairs(req.argv) do
    exec[#exec + 1] = quote(a)
  end
  local script = table.concat({
    'echo "cms-remote-pgid $$" >&2',
    'cd ' .. quote(req.dir) .. ' || { echo ' .. quote("cms: no folder " .. req.dir .. " on " .. req.host)
      .. ' >&2; exit 97; }',
    table.concat(exec, " "),
  }, "\n")
  local inner = { "setsid", "-w", "sh", "-c", script }
  local ending = "kill -TERM -- -{pgid} 2>/dev/null; sleep 1; pkill -KILL -s {pgid}; true"

  local argv, kill
  if host.image then
    local name = "cms-" .. req.session
    argv = { PROGRAM, "run", "-i", "--rm", "--name", name,
             "-v", req.local_dir .. ":" .. req.dir, "-w", req.dir, host.image }
    kill = { PROGRAM, "rm", "-f", name }
  else
    local container = host.address or req.host
    argv = { PROGRAM, "exec", "-i", container }
    kill = { PROGRAM, "exec", container, "sh", "-c", ending }
  end
  for _, a in ipairs(inner) do argv[#argv + 1] = a end
  return { argv = argv, kill = kill }
end
