-- Strategy `correction_loop`: send the task, run the check, and send the check's
-- output back as a correction until it passes or the attempts run out.
--
--   cms delegate --strategy correction_loop --check "cargo test" --max-attempts 4 ...
--   cms.delegate{ ..., strategy = "correction_loop", check = function(r) return ok, why end }
--
-- The check is a shell command (run in the working directory; exit 0 passes) or, from
-- Lua, a function of the last response. Every attempt is listed in the result's `checks`.
-- If it never passes the task ends as `check_failed` (a failure: `cms delegate` exits 1;
-- `cms continue` sends a correction and runs the check again). cms gives that status
-- to any strategy whose last check did not pass.

---@param task cms.Task
return function(task)
  local attempts = task.options.max_attempts or 3
  local r = task:send(task.prompt)
  for attempt = 1, attempts do
    if task:ended() or r.is_error then return r end
    local ok, output = task:check(r)
    if ok then return r end
    if attempt == attempts then break end
    r = task:send(("The check failed (attempt %d of %d):\n\n%s\n\nFix the problem, then say what you changed.")
      :format(attempt, attempts, output), "correction")
  end
  return r, "check_failed"
end
