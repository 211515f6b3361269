--- Placement: where a spawn that names no host (`--on`) runs. cms calls this
--- function at each such spawn with what it knows now and starts the session where
--- it says: a host name of `hosts.lua`, or nil for this machine. An error here
--- refuses the spawn (the message names this file and line). Copy it to
--- ~/.config/cms/placement.lua to change the rule.
---
--- `req`:
---   session  the new session's name
---   spec     its options (model, work_dir, labels, ...; `on` is nil)
---   ["local"] { live, queued, max_live }   this machine (max_live: M.host of safety.lua)
---   hosts    { NAME = { live, queued, max_live, labels, runner, address } } from hosts.lua
---
--- The default: this machine until its `max_live`; then the least loaded host
--- (live + queued, below its own `max_live`) whose labels include every label the
--- spec asks for; ties go to the first name. No such host: this machine, where the
--- spawn waits in line like any other.

---@param need string[]
---@param have string[]
---@return boolean
local function has_labels(need, have)
  local set = {}
  for _, l in ipairs(have or {}) do set[l] = true end
  for _, l in ipairs(need or {}) do
    if not set[l] then return false end
  end
  return true
end

return function(req)
  local here = req["local"]
  local need = req.spec.labels or {}
  if #need == 0 and (here.max_live == nil or here.live + here.queued < here.max_live) then
    return nil
  end
  local names = {}
  for name in pairs(req.hosts) do names[#names + 1] = name end
  table.sort(names)
  local best, best_load
  for _, name in ipairs(names) do
    local h = req.hosts[name]
    local load = h.live + h.queued
    local room = h.max_live == nil or load < h.max_live
    if room and has_labels(need, h.labels) and (best_load == nil or load < best_load) then
      best, best_load = name, load
    end
  end
  return best
end
