-- Claim due jobs: each is leased to the caller by moving its due time to the lease end.
-- A worker that dies leaves the job to come due again when its lease ends (at-least-once).
-- KEYS[1]  due zset (job id -> due time)
-- ARGV[1]  now (seconds)
-- ARGV[2]  lease end (seconds)
-- ARGV[3]  max jobs to claim
-- ARGV[4]  lease token
-- ARGV[5]  job key prefix
-- Returns  a flat list: job id, then its hash as field/value pairs, per job (count first).
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i, id in ipairs(ids) do
  local key = ARGV[5] .. id
  if redis.call('EXISTS', key) == 1 then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    redis.call('HSET', key, 'token', ARGV[4] .. ':' .. i)
    local fields = redis.call('HGETALL', key)
    table.insert(out, id)
    table.insert(out, fields)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
