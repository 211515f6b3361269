-- Strategy `review`: a worker does the task, then a read-only reviewer session
-- checks the work. Requested changes go back to the worker, up to
-- `max_attempts` review rounds (default 2).
--
-- The reviewer runs with the `review` preset, so it can read the working tree but
-- not change it. It answers APPROVED, or lists what must change.

local ASK = [[You are reviewing work another agent did in this directory.

The task was:
%s

The agent reported:
%s

Check the files. If the task is done correctly, answer with the single word APPROVED.
Otherwise list precisely what must change.]]

---@param task cms.Task
return function(task)
  local rounds = task.options.max_attempts or 2
  local r = task:send(task.prompt)
  for _ = 1, rounds do
    if task:ended() or r.is_error then return r end
    local verdict = task:review(ASK:format(task.prompt, r.text))
    if verdict.is_error then return r, "needs_input" end
    if verdict.text:find("APPROVED", 1, true) then return r end
    r = task:send("A reviewer asked for changes:\n\n" .. verdict.text, "correction")
  end
  return r, "needs_input"
end
