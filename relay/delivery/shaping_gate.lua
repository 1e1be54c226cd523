-- Admit one message of a shaping rule from one egress IP, for the whole fleet, in one step:
-- not while the rule has this IP suspended (a reaction to a provider's reply); not past the
-- rule's connection limits (sessions held as leases that expire, so a dead process frees
-- its own); and at the next free time of every paced rate (GCRA with no burst: one message
-- every period/count, so no window of one period ever holds more than count messages).
-- The caller sleeps until the time returned: waiting callers queue in arrival order.
-- Every key shares the rule's hash tag (one Redis Cluster slot).
-- KEYS[1]  connections of the rule (zset token -> lease end, ms)
-- KEYS[2]  connections of the rule from this IP (zset)
-- KEYS[3]  suspension of this IP for the rule (string: until, ms)
-- KEYS[4]  slower rate of this IP for the rule (string: interval ms), set by a reaction
-- KEYS[5]  theoretical arrival time of the slower rate
-- KEYS[6..] theoretical arrival time of each rate (string, ms)
-- ARGV[1]  now (ms)
-- ARGV[2]  token of this session
-- ARGV[3]  connection lease (ms)
-- ARGV[4]  max connections of the rule (0: none)
-- ARGV[5]  max connections of the rule per IP (0: none)
-- ARGV[6]  longest wait the caller accepts (ms)
-- ARGV[7..] interval of each rate (ms), in the order of KEYS[6..]
-- Returns {0, at}: admitted, send at `at` (ms; the connection slots are held);
--         {1, until}: the IP is suspended for the rule until `until`;
--         {2, 0}: the connection limits are reached (try again soon);
--         {3, at}: the next free time is too far (`at`): nothing reserved.
local now = tonumber(ARGV[1])
local suspended_until = tonumber(redis.call('GET', KEYS[3]) or '0')
if suspended_until > now then
  return {1, suspended_until}
end
local max_total, max_ip = tonumber(ARGV[4]), tonumber(ARGV[5])
if max_total > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  if redis.call('ZCARD', KEYS[1]) >= max_total then
    return {2, 0}
  end
end
if max_ip > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= max_ip then
    return {2, 0}
  end
end
local intervals, tats = {}, {}
local slow = tonumber(redis.call('GET', KEYS[4]) or '0')
if slow > 0 then
  table.insert(intervals, slow)
  table.insert(tats, KEYS[5])
end
for i = 7, #ARGV do
  table.insert(intervals, tonumber(ARGV[i]))
  table.insert(tats, KEYS[i - 1])
end
local at = now
for i, key in ipairs(tats) do
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat > at then
    at = tat
  end
end
if at - now > tonumber(ARGV[6]) then
  return {3, at}
end
for i, key in ipairs(tats) do
  local next_free = at + intervals[i]
  redis.call('SET', key, next_free, 'PX', math.max(1, next_free - now) + 1000)
end
local lease_end = now + tonumber(ARGV[3])
if max_total > 0 then
  redis.call('ZADD', KEYS[1], lease_end, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
end
if max_ip > 0 then
  redis.call('ZADD', KEYS[2], lease_end, ARGV[2])
  redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return {0, at}
