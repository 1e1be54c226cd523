-- Claim due jobs: each is leased to the caller by moving its due time to the lease end.
-- A worker that dies leaves the job to come due again when its lease ends (at-least-once).
-- A job whose message is held (or whose account is held) moves to the held set instead.
-- KEYS[1]  due zset (job id -> due time)
-- KEYS[2]  held zset (job id -> time held)
-- KEYS[3]  held accounts set
-- KEYS[4]  this node's leased jobs (set), for taking them back at once after a crash
-- ARGV[1]  now (seconds)
-- ARGV[2]  lease end (seconds)
-- ARGV[3]  max jobs to claim
-- ARGV[4]  lease token prefix: "<node>:<process>:<random>" (each job adds ":<n>")
-- ARGV[5]  job key prefix
-- ARGV[6]  message key prefix
-- Returns  a flat list: job id, its hash as field/value pairs, then its message's hash, per
--          job (so a delivery needs no other read of the queue).
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for i, id in ipairs(ids) do
  local key = ARGV[5] .. id
  local mid = redis.call('HGET', key, 'message_id')
  if not mid then
    redis.call('ZREM', KEYS[1], id)
  else
    local msg = ARGV[6] .. mid
    local held = redis.call('HGET', msg, 'held_at')
    if not held then
      local account = redis.call('HGET', msg, 'account')
      if account and redis.call('SISMEMBER', KEYS[3], account) == 1 then
        redis.call('HSET', msg, 'held_at', ARGV[1])
        held = ARGV[1]
      end
    end
    if held then
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], ARGV[1], id)
      redis.call('HDEL', key, 'token')
    else
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      redis.call('HSET', key, 'token', ARGV[4] .. ':' .. i)
      redis.call('SADD', KEYS[4], id)
      table.insert(out, id)
      table.insert(out, redis.call('HGETALL', key))
      table.insert(out, redis.call('HGETALL', msg))
    end
  end
end
return out
