-- Pipeline: each stage is a fresh session whose prompt is built from the previous
-- stage's answer (outline -> draft -> edit). Every stage can use another model.
--
--   cms script examples/pipeline.lua [topic] [run-id]

local topic = cms.args[1] or "how cms keeps track of what each Claude session costs"
local run_id = cms.args[2] or os.date("%Y%m%d-%H%M%S") .. "-" .. math.random(1000, 9999)

local stages = {
  { name = "outline", model = "haiku",
    prompt = function(_) return "Write a five-point outline for a short article about " .. topic .. "." end },
  { name = "draft", model = "sonnet",
    prompt = function(prev) return "Write a 300-word article from this outline:\n\n" .. prev end },
  { name = "edit", model = "sonnet",
    prompt = function(prev) return "Edit this article for clarity; keep its length:\n\n" .. prev end },
}

local text, cost, trail = nil, 0, {}
for _, stage in ipairs(stages) do
  local s = cms.spawn{
    name = ("pipeline-%s-%s"):format(stage.name, run_id),
    model = stage.model,
    prompt = stage.prompt(text),
    stop = true,
  }
  local r = s.response
  if r.is_error then
    error(("stage %s failed: %s"):format(stage.name, r.error or r.text))
  end
  text, cost = r.text, cost + r.cost_usd
  trail[#trail + 1] = { stage = stage.name, session = s.name, cost = r.cost_usd, chars = #r.text }
  cms.log(("stage %-7s done in %d ms, $%.4f"):format(stage.name, r.duration_ms, r.cost_usd))
end

print(text)
return { result = text, stages = trail, cost = cost }
