-- Strategy `single`: the seed's control loop.
--
-- Send the task. If tool calls were refused, send one follow-up that says which and
-- why, and asks the session to finish without them (permissions are never
-- widened), then return. The parent decides what comes next with `cms continue`
-- (or the `continue_task` MCP tool).
--
-- A strategy is a function of the task; see `cms.Task` in `cms lua-types`.

---@param task cms.Task
return function(task)
  local r = task:send(task.prompt)
  if #r.permission_denials > 0 and not task:ended() then
    local refused = {}
    for _, d in ipairs(task:refusals()) do
      refused[#refused + 1] = ("- %s: %s"):format(d.tool, d.reason)
    end
    if #refused == 0 then
      for _, d in ipairs(r.permission_denials) do refused[#refused + 1] = "- " .. d.tool_name end
    end
    r = task:send(
      "These tool calls were refused before they ran:\n" .. table.concat(refused, "\n")
        .. "\n\nFinish the task without them, or explain exactly what you need. "
        .. "Do not look for another way around a refusal.",
      "retry")
  end
  return r
end
