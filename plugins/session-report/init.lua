-- session-report: a tool plugin. Adds the MCP tool `session_report`: every session
-- with its state, cost and turns, the totals, and the most expensive ones.
--
-- Each tool is { name, description, input_schema, handler }. The handler gets the
-- call's arguments as a table and returns a value (sent back as JSON); it can use
-- the whole `cms` module (cms.list, cms.get, cms.delegate, ...). An error it raises
-- becomes a tool error; the server goes on.

local function report(args)
  local state_filter = args.state
  local rows, total_cost, total_turns = {}, 0, 0
  for _, s in ipairs(cms.list()) do
    if not state_filter or s.state == state_filter then
      rows[#rows + 1] = { name = s.name, state = s.state, cost = s.total_cost_usd, turns = s.total_turns, model = s.model }
      total_cost = total_cost + s.total_cost_usd
      total_turns = total_turns + s.total_turns
    end
  end
  table.sort(rows, function(a, b) return a.cost > b.cost end)
  local top = {}
  for i = 1, math.min(args.top or 3, #rows) do top[i] = rows[i].name end
  return {
    sessions = rows,
    count = #rows,
    total_cost = total_cost,
    total_turns = total_turns,
    most_expensive = top,
  }
end

return {
  name = "session-report",
  version = "1.0.0",
  description = "A cost and state report of every session",
  tools = {
    {
      name = "session_report",
      description = "Every cms session with its state, cost and turns, the totals, and the most expensive sessions.",
      input_schema = {
        type = "object",
        properties = {
          state = { type = "string", description = "Only sessions in this state (idle, stopped, ...)" },
          top = { type = "integer", minimum = 0, description = "How many of the most expensive to name (default 3)" },
        },
        additionalProperties = false,
      },
      handler = report,
    },
  },
}
