-- Admit messages of a shaping scope from one egress IP, for the whole fleet, in one step:
-- not while the scope has this IP suspended (a reaction to a provider's reply); not past
-- the connection limits (a connection is a lease that ends by itself, so a dead process
-- frees its own); and at the next free times of every paced rate (GCRA with no burst: one
-- message every period/count, so no window of one period holds more than count messages).
-- A caller may reserve a short run of consecutive send times at once (at most ARGV[8] ms
-- of them), which it then hands out locally: one call for many messages at high rates.
-- Every key shares the scope's hash tag (one Redis Cluster slot).
-- KEYS[1]  connections of the scope (zset token -> lease end, ms)
-- KEYS[2]  connections of the scope from this IP (zset)
-- KEYS[3]  suspension of this IP for the scope (string: until, ms)
-- KEYS[4]  slower rate of this IP for the scope (string: interval ms), set by a reaction
-- KEYS[5]  theoretical arrival time of the slower rate
-- KEYS[6..] theoretical arrival time of each rate (string, ms)
-- ARGV[1]  now (ms)
-- ARGV[2]  token of a connection to take ('': none)
-- ARGV[3]  connection lease (ms)
-- ARGV[4]  max connections of the scope (0: none)
-- ARGV[5]  max connections of the scope per IP (0: none)
-- ARGV[6]  longest wait the caller accepts for its first send time (ms)
-- ARGV[7]  send times wanted (0: none, only the checks and the connection)
-- ARGV[8]  span of send times one call may reserve (ms)
-- ARGV[9..] interval of each rate (ms), in the order of KEYS[6..]
-- Returns {0, at, step, n}: admitted; n send times reserved: at, at+step, ... (ms), or
--                            n = 0 and step = 0 when no rate applies; the connection is held;
--         {1, until}: the IP is suspended for the scope until `until`;
--         {2, 0}: the connection limits are reached (try again soon);
--         {3, at}: the first free time is too far (`at`): nothing reserved.
local now = tonumber(ARGV[1])
local suspended_until = tonumber(redis.call('GET', KEYS[3]) or '0')
if suspended_until > now then
  return {1, suspended_until}
end
local token = ARGV[2]
local max_total, max_ip = tonumber(ARGV[4]), tonumber(ARGV[5])
if token ~= '' then
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
end
local intervals, tats = {}, {}
local slow = tonumber(redis.call('GET', KEYS[4]) or '0')
if slow > 0 then
  table.insert(intervals, slow)
  table.insert(tats, KEYS[5])
end
for i = 9, #ARGV do
  table.insert(intervals, tonumber(ARGV[i]))
  table.insert(tats, KEYS[i - 3])
end
local at, step, n = now, 0, 0
local wanted = tonumber(ARGV[7])
if #intervals > 0 and wanted > 0 then
  for i, key in ipairs(tats) do
    local tat = tonumber(redis.call('GET', key) or '0')
    if tat > at then
      at = tat
    end
    if intervals[i] > step then
      step = intervals[i]
    end
  end
  if at - now > tonumber(ARGV[6]) then
    return {3, at}
  end
  n = math.max(1, math.min(wanted, math.floor(tonumber(ARGV[8]) / step)))
  local last = at + (n - 1) * step
  for i, key in ipairs(tats) do
    local next_free = last + intervals[i]
    redis.call('SET', key, next_free, 'PX', math.max(1, next_free - now) + 1000)
  end
end
if token ~= '' then
  local lease_end = now + tonumber(ARGV[3])
  if max_total > 0 then
    redis.call('ZADD', KEYS[1], lease_end, token)
    redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
  end
  if max_ip > 0 then
    redis.call('ZADD', KEYS[2], lease_end, token)
    redis.call('PEXPIRE', KEYS[2], tonumber(ARGV[3]))
  end
end
return {0, at, step, n}
