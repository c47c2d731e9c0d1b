-- wrk -s tally.lua: counts the answers of each worker process.
--
-- wrk counts requests, not who served them: every answer of the bench apps
-- names its worker in X-Worker-Pid, and each wrk thread counts them in its own
-- Lua state. done() runs after the threads stopped, adds their counts up and
-- prints one "tally PID COUNT" line per worker ("tally none N" for answers
-- without the header), after wrk's own summary.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

tally = {}

function response(status, headers, body)
   local pid = headers["X-Worker-Pid"] or headers["x-worker-pid"] or "none"
   tally[pid] = (tally[pid] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for pid, n in pairs(thread:get("tally")) do
         total[pid] = (total[pid] or 0) + n
      end
   end
   for pid, n in pairs(total) do
      io.write(string.format("tally %s %d\n", pid, n))
   end
end
