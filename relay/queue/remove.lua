-- Operator actions on one message: 'retry' (every waiting job due now) or 'delete'.
-- KEYS[1]  due zset
-- KEYS[2]  held zset
-- KEYS[3]  message hash
-- KEYS[4]  messages zset
-- ARGV[1]  'retry' or 'delete'
-- ARGV[2]  now
-- ARGV[3]  job key prefix
-- ARGV[4]  account index key prefix
-- ARGV[5]  message id
-- ARGV[6..] job ids of the message
-- Returns  'no-message', 'held' (retry of a held message), else the number of jobs touched.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'no-message'
end
local count = 0
if ARGV[1] == 'retry' then
  if redis.call('HEXISTS', KEYS[3], 'held_at') == 1 then
    return 'held'
  end
  for i = 6, #ARGV do
    local id = ARGV[i]
    -- A leased job is being attempted right now; leave it to its worker.
    if redis.call('HEXISTS', ARGV[3] .. id, 'token') == 0 and redis.call('ZSCORE', KEYS[1], id) then
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      count = count + 1
    end
  end
  return count
end
for i = 6, #ARGV do
  local id = ARGV[i]
  count = count + redis.call('DEL', ARGV[3] .. id)
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local account = redis.call('HGET', KEYS[3], 'account')
if account then
  redis.call('SREM', ARGV[4] .. account, ARGV[5])
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[5])
return count
