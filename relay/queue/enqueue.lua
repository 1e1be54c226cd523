-- Queue one message whose body is durable in the spool already: its hash, one job per
-- destination domain (due now) and the indexes, whole or not at all (a script runs whole).
-- KEYS[1]  message hash
-- KEYS[2]  due zset
-- KEYS[3]  messages zset (message id -> created)
-- KEYS[4]  the account's message ids (set)
-- KEYS[5…] one job hash per domain
-- ARGV[1]  now
-- ARGV[2]  message id
-- ARGV[3]  n: the message's fields, then n name/value pairs
-- then, per job in the order of its key: its id, m: its fields, m name/value pairs
-- Returns  the number of jobs.
local now = ARGV[1]
local i = 4
local n = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], unpack(ARGV, i, i + 2 * n - 1))
i = i + 2 * n
for k = 5, #KEYS do
  local job_id = ARGV[i]
  local m = tonumber(ARGV[i + 1])
  i = i + 2
  redis.call('HSET', KEYS[k], unpack(ARGV, i, i + 2 * m - 1))
  i = i + 2 * m
  redis.call('ZADD', KEYS[2], now, job_id)
end
redis.call('ZADD', KEYS[3], now, ARGV[2])
redis.call('SADD', KEYS[4], ARGV[2])
return #KEYS - 4
