--- The ssh runner: a session's `claude` on another machine, over the OpenSSH client.
---
--- cms runs `ssh -T HOST 'COMMAND'` locally (under its supervisor, like a local
--- claude); stream-json travels on ssh's stdin/stdout unchanged. The remote COMMAND:
---
--- 1. prints `cms-remote-pgid $$` on stderr. sshd runs each session's command in a
---    new session (setsid), so the remote shell leads its own session and process
---    group, and `exec` below keeps that pid for claude: `$$` is the group to end.
---    (`setsid claude` would fork, since the shell already leads a group, and the
---    pid printed would not be claude's.)
--- 2. starts a watcher that ends the whole remote session (`pkill -s`: claude and
---    the process groups its tools make) once the sshd process serving this
---    connection is gone: the local cms or its host killed with -9, the network
---    dropped. Its output goes nowhere, so it never holds the connection open.
--- 3. goes to the mapped folder and `exec`s claude with an explicit environment:
---    only the host's `env` (and the session's guard) cross, as `env K=V` on the
---    remote command line. SendEnv would need AcceptEnv in the server's
---    sshd_config; the command line works with any server, and the values are in
---    no process list once `exec` has replaced the shell (claude's environment is
---    readable by its own user only). Keep real secrets on the host itself.
---
--- `kill` is what cms runs locally when it kills, times out or force-stops the
--- session: TERM to the remote group, then KILL to what is left of the session.
---
--- Copy this file to ~/.config/cms/runners/ssh.lua to change it; a runner for
--- docker or kubectl is the same shape with another `argv`.

---@param s any
---@return string
local function quote(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

---@param req cms.RunRequest
---@return cms.Launch
return function(req)
  local host = req.config
  local address = host.address or req.host

  local ssh = { "ssh", "-T", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
                "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3" }
  for _, opt in ipairs(host.ssh_options or {}) do
    ssh[#ssh + 1] = opt
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

  local remote = table.concat({
    'echo "cms-remote-pgid $$" >&2',
    'p=$PPID',
    '(while ps -p "$p" >/dev/null 2>&1; do sleep 1; done; pkill -KILL -s $$) </dev/null >/dev/null 2>&1 &',
    'cd ' .. quote(req.dir) .. ' || { echo ' .. quote("cms: no folder " .. req.dir .. " on " .. req.host)
      .. ' >&2; exit 97; }',
    table.concat(exec, " "),
  }, "\n")

  local argv = { table.unpack(ssh) }
  argv[#argv + 1] = address
  argv[#argv + 1] = remote

  local kill = { table.unpack(ssh) }
  kill[#kill + 1] = address
  kill[#kill + 1] = "kill -TERM -- -{pgid} 2>/dev/null; sleep 1; pkill -KILL -s {pgid}; true"

  return { argv = argv, kill = kill }
end
