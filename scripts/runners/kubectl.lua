--- The kubectl runner: a session's `claude` in a running pod.
---
--- hosts.lua:
---   k8s = { runner = "kubectl", address = "my-pod", namespace = "agents",
---           context = "prod" }
---
--- cms runs
---   kubectl exec -i POD [-n NS] [--context CTX] -- setsid -w sh -c 'SCRIPT'
--- stream-json travels on kubectl's stdin/stdout. SCRIPT prints `cms-remote-pgid $$`
--- (setsid made the shell a session leader; `exec` keeps its pid for claude), goes
--- to the folder (`work_dir_map` maps it: the pod does not see this machine's
--- disk) and execs claude with the host's `env` only.
---
--- Ending the tree (kill, timeout, forced stop): TERM to the group, then KILL to
--- what is left of the session, in the pod:
---   kubectl exec POD [-n NS] [--context CTX] -- sh -c 'kill -TERM -- -PGID; sleep 1; pkill -KILL -s PGID'
--- (the image needs `setsid` and `pkill`). A pod whose client is gone: claude gets
--- EOF on stdin and ends.

---@param s any
---@return string
local function quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

---@param req cms.RunRequest
---@return cms.Launch
return function(req)
  local host = req.config
  local pod = host.address or req.host
  local where = { pod }
  if host.namespace then
    where[#where + 1] = "-n"; where[#where + 1] = host.namespace
  end
  if host.context then
    where[#where + 1] = "--context"; where[#where + 1] = host.context
  end

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

  local argv = { "kubectl", "exec", "-i" }
  for _, a in ipairs(where) do argv[#argv + 1] = a end
  for _, a in ipairs({ "--", "setsid", "-w", "sh", "-c", script }) do argv[#argv + 1] = a end

  local kill = { "kubectl", "exec" }
  for _, a in ipairs(where) do kill[#kill + 1] = a end
  for _, a in ipairs({ "--", "sh", "-c",
    "kill -TERM -- -{pgid} 2>/dev/null; sleep 1; pkill -KILL -s {pgid}; true" }) do
    kill[#kill + 1] = a
  end
  return { argv = argv, kill = kill }
end
