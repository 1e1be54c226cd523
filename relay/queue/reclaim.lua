-- Take back, at once, the jobs leased by processes of this node that are gone (a restart
-- after a crash): they are due now instead of when their leases would have ended.
-- KEYS[1]  due zset
-- KEYS[2]  the node's leased jobs (set)
-- ARGV[1]  now
-- ARGV[2]  job key prefix
-- ARGV[3]  token prefix of the dead processes ("<node>:" for all, "<node>:<pid>:" for one)
-- Returns  the number of jobs made due.
local count = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[2] .. id
  local token = redis.call('HGET', key, 'token')
  if not token then
    redis.call('SREM', KEYS[2], id)
  elseif string.sub(token, 1, #ARGV[3]) == ARGV[3] then
    redis.call('HDEL', key, 'token')
    if redis.call('ZSCORE', KEYS[1], id) then
      redis.call('ZADD', KEYS[1], ARGV[1], id)
    end
    redis.call('SREM', KEYS[2], id)
    count = count + 1
  end
end
return count
