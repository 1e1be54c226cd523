-- Hold or release one message: held jobs are neither attempted nor expired.
-- KEYS[1]  due zset
-- KEYS[2]  held zset
-- KEYS[3]  message hash
-- ARGV[1]  'hold' or 'release'
-- ARGV[2]  now
-- ARGV[3]  job key prefix
-- ARGV[4..] job ids of the message
-- Returns  'no-message', 'unchanged' (already held / not held) or 'changed'.
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 'no-message'
end
local held_at = redis.call('HGET', KEYS[3], 'held_at')
if ARGV[1] == 'hold' then
  if held_at then
    return 'unchanged'
  end
  redis.call('HSET', KEYS[3], 'held_at', ARGV[2])
  for i = 4, #ARGV do
    local id = ARGV[i]
    local score = redis.call('ZSCORE', KEYS[1], id)
    local leased = redis.call('HEXISTS', ARGV[3] .. id, 'token') == 1
    -- A leased job stays with its worker; finish.lua parks it here when the attempt ends.
    if score and not (leased and tonumber(score) > tonumber(ARGV[2])) then
      redis.call('ZREM', KEYS[1], id)
      redis.call('HDEL', ARGV[3] .. id, 'token')
      redis.call('ZADD', KEYS[2], ARGV[2], id)
    end
  end
  return 'changed'
end
if not held_at then
  return 'unchanged'
end
redis.call('HINCRBYFLOAT', KEYS[3], 'held_for', tonumber(ARGV[2]) - tonumber(held_at))
redis.call('HDEL', KEYS[3], 'held_at')
for i = 4, #ARGV do
  local id = ARGV[i]
  if redis.call('ZSCORE', KEYS[2], id) then
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZADD', KEYS[1], ARGV[2], id)
  end
end
return 'changed'
