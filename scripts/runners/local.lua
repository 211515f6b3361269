--- The local runner: the host's `claude` on this machine, in the session's folder.
--- For a "host" that is this machine with another claude or environment
--- (`hosts.lua`: `{ runner = "local", claude = "/opt/claude-next/bin/claude" }`).
--- Sessions that name no host do not come here: cms runs them itself.

---@param req cms.RunRequest
---@return cms.Launch
return function(req)
  local argv = { req.claude }
  for _, a in ipairs(req.argv) do
    argv[#argv + 1] = a
  end
  local env = {}
  for k, v in pairs(req.local_env) do env[k] = v end
  for k, v in pairs(req.env) do env[k] = v end
  return { argv = argv, env = env }
end
