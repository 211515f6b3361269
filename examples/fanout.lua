-- Fan-out: three sessions review the same code from different angles at once,
-- then a fourth session merges their findings into one summary.
--
--   cms script examples/fanout.lua [target] [run-id]
--
-- `target` is what to review (default: the current directory). Sessions are named
-- `fanout-<angle>-<run-id>` so you can inspect them afterwards with `cms list`,
-- `cms history fanout-security-<run-id>` or `cms output ...`.

local target = cms.args[1] or "the code in the current directory"
local run_id = cms.args[2] or os.date("%Y%m%d-%H%M%S") .. "-" .. math.random(1000, 9999)

local angles = { "security", "performance", "readability" }

-- One function per angle; cms.parallel runs them concurrently and returns their
-- results in the same order.
local jobs = {}
for i, angle in ipairs(angles) do
  jobs[i] = function()
    local s = cms.spawn{
      name = ("fanout-%s-%s"):format(angle, run_id),
      prompt = ("Review %s for %s problems. List the three most important, one line each."):format(target, angle),
      permission_mode = "plan", -- reviewers read, they do not edit
      stop = true,              -- free the process once the answer is in
    }
    return { angle = angle, text = s.response.text, cost = s.response.cost_usd }
  end
end
local reviews = cms.parallel(jobs)

local parts, cost = {}, 0
for _, r in ipairs(reviews) do
  parts[#parts + 1] = ("## %s\n%s"):format(r.angle, r.text)
  cost = cost + r.cost
end

local summary = cms.spawn{
  name = "fanout-summary-" .. run_id,
  prompt = "Merge these three reviews into one prioritised list of at most five items:\n\n"
    .. table.concat(parts, "\n\n"),
  stop = true,
}
cost = cost + summary.response.cost_usd

print(summary.response.text)
cms.log(("fan-out done: %d reviews and a summary for $%.4f"):format(#reviews, cost))

return { reviews = reviews, summary = summary.response.text, cost = cost }
