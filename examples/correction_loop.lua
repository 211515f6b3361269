-- Correction loop: send a task, check the answer in Lua, and send a correction
-- that says exactly what is wrong, until the check passes or attempts run out.
--
--   cms script examples/correction_loop.lua [task] [required-pattern] [max-attempts]
--
-- Without a pattern the check below parses the answer; with one, the answer must
-- match that Lua pattern. Replace `check` with whatever your task needs: run a
-- parser, compare with a reference, look for a file the session should have made.

local task = cms.args[1] or "Name three prime numbers greater than 100, on one line, separated by commas."
local pattern = cms.args[2]
local max_attempts = tonumber(cms.args[3]) or 3

local function is_prime(n)
  if n < 2 or n % 1 ~= 0 then return false end
  for d = 2, math.floor(math.sqrt(n)) do
    if n % d == 0 then return false end
  end
  return true
end

--- Returns true, or false and what is wrong (that text goes back to the session).
local function check(text)
  if pattern then
    if text:find(pattern) then return true end
    return false, ("the answer must match %q"):format(pattern)
  end
  local primes = {}
  for n in text:gmatch("%d+") do
    n = tonumber(n)
    if n <= 100 then return false, n .. " is not greater than 100" end
    if not is_prime(n) then return false, n .. " is not prime" end
    primes[#primes + 1] = n
  end
  if #primes < 3 then return false, ("only %d primes were given"):format(#primes) end
  return true
end

local s = cms.spawn{ name = "correct-" .. os.date("%Y%m%d-%H%M%S") .. "-" .. math.random(1000, 9999), prompt = task }
local r = s.response
local attempts, ok, problem = 1, check(r.text)
while not ok and attempts < max_attempts do
  cms.log(("attempt %d failed: %s"):format(attempts, problem))
  r = s:send(("That is not right: %s. Please answer again. The task was: %s"):format(problem, task))
  attempts = attempts + 1
  ok, problem = check(r.text)
end
s:stop()

local cost = 0
for _, i in ipairs(s:history()) do cost = cost + i.cost_usd end

if ok then
  print(r.text)
else
  cms.log("warn", ("giving up after %d attempts: %s"):format(attempts, problem))
end
return { passed = ok, attempts = attempts, answer = r.text, problem = problem, cost = cost, session = s.name }
