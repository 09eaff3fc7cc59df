-- wrk script for bench/gateway.sh: every request carries one credential, taken round-robin from a
-- file (one per line), so the server under test sees many different keys, not one hot key.
--
--   wrk -s bench/gateway.lua URL -- FILE [HEADER] [PREFIX]
--   wrk -s bench/gateway.lua http://127.0.0.1:8080/v1/items -- keys.txt x-api-key
--   wrk -s bench/gateway.lua http://127.0.0.1:8080/v1/items -- tokens.txt Authorization "Bearer "
--
-- Every scenario uses this script, so the load generator does the same work in each.

local threads = 0

function setup(thread)
  thread:set("offset", threads)
  threads = threads + 1
end

local values, n, i, header = {}, 0, 0, "x-api-key"

function init(args)
  local path = args[1] or error("usage: wrk -s gateway.lua URL -- FILE [HEADER] [PREFIX]")
  header = args[2] or header
  local prefix = args[3] or ""
  for line in io.lines(path) do
    if line ~= "" then
      n = n + 1
      values[n] = prefix .. line
    end
  end
  assert(n > 0, "no credentials in " .. path)
  -- Threads start at different places in the list.
  i = ((offset or 0) * 7919) % n
end

function request()
  i = i % n + 1
  return wrk.format(nil, nil, { [header] = values[i] })
end
