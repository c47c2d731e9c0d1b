-- wrk -s mixed.lua URL -- MODE: a rotation of request kinds on kept-alive
-- connections (the leak scenario).
--
-- MODE "single": one request per write, in turn: GET /, a POST with a short
-- Content-Length body, a POST with a 16 KiB body, a chunked POST, and a GET
-- of a path the app answers with 404.
-- MODE "pair": two pipelined requests per write (a GET with a chunked POST,
-- then a Content-Length POST with the 404). wrk expects as many answers per
-- write as its first write held, so both modes keep that number fixed.
--
-- done() prints "status CODE COUNT" lines: 404s are expected here, so wrk's
-- own "Non-2xx" count cannot tell a failure from the 404 kind.

local host = "bench"
local function post(path, body)
   return "POST " .. path .. " HTTP/1.1\r\nHost: " .. host ..
      "\r\nContent-Type: application/octet-stream\r\nContent-Length: " .. #body ..
      "\r\n\r\n" .. body
end

local get = "GET / HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
local missing = "GET /missing HTTP/1.1\r\nHost: " .. host .. "\r\n\r\n"
local small = post("/upload", string.rep("s", 100))
local large = post("/upload", string.rep("L", 16384))
local chunked = "POST /upload HTTP/1.1\r\nHost: " .. host ..
   "\r\nTransfer-Encoding: chunked\r\n\r\n" ..
   "10\r\n" .. string.rep("c", 16) .. "\r\n" ..
   "200\r\n" .. string.rep("C", 512) .. "\r\n0\r\n\r\n"

local kinds = {}
local turn = 0
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   if args[1] == "pair" then
      kinds = {get .. chunked, small .. missing}
   else
      kinds = {get, small, large, chunked, missing}
   end
end

function request()
   turn = turn % #kinds + 1
   return kinds[turn]
end

statuses = {}

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local total = {}
   for _, thread in ipairs(threads) do
      for code, n in pairs(thread:get("statuses")) do
         total[code] = (total[code] or 0) + n
      end
   end
   for code, n in pairs(total) do
      io.write(string.format("status %d %d\n", code, n))
   end
end
