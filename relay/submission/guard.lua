-- Failure streak of one AUTH subject (a login or a client address), read or updated atomically.
-- KEYS[1]  streak hash: n (failures in the streak), last (time of the last failure)
-- KEYS[2]  known addresses zset of a login (address -> last success); unused for an address
-- ARGV[1]  "get" | "try" | "undo" | "fail" | "ok"
-- ARGV[2]  now (seconds)
-- ARGV[3]  forget a streak this long after its last failure (seconds)
-- ARGV[4]  client address (get: looked up in KEYS[2]; ok: added to KEYS[2])
-- ARGV[5]  how long a login remembers an address it succeeded from (seconds; 0: not at all)
-- ARGV[6]  how many addresses a login remembers at most
-- ARGV[7]  try: failures at which the subject is locked (0: never); undo: the `last` that
--          the try wrote (ARGV[2] of that call)
-- ARGV[8]  try: lockout (seconds); undo: `last` as it was before the try
-- Returns  {n, last, seen, admitted, before}: n and last after this call; seen (get only):
--          when the login last succeeded from ARGV[4], "0" when never or longer than ARGV[5]
--          ago; admitted (try only): 1 when counted, 0 when refused (locked: nothing
--          written); before: `last` as it was before this call (what "undo" restores).
--
-- "try" counts a failure before the password is checked, and refuses instead when the
-- subject is locked, in one step: N concurrent guesses get N different counts, so no more
-- than the threshold of them ever pass. "undo" takes one such count back (the check
-- succeeded, or never happened), restoring `last` when no failure came after it.
local now = tonumber(ARGV[2])
local forget = tonumber(ARGV[3])
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
local last = redis.call('HGET', KEYS[1], 'last') or '0'
if n > 0 and now - tonumber(last) >= forget then
  n = 0
end
local mode = ARGV[1]
if mode == 'get' then
  local known = '0'
  if ARGV[4] ~= '' and tonumber(ARGV[5]) > 0 then
    local seen = redis.call('ZSCORE', KEYS[2], ARGV[4])
    if seen and now - tonumber(seen) < tonumber(ARGV[5]) then
      known = seen
    end
  end
  return {n, last, known, 0, last}
elseif mode == 'try' then
  local limit = tonumber(ARGV[7])
  if limit > 0 and n >= limit and now < tonumber(last) + tonumber(ARGV[8]) then
    return {n, last, '0', 0, last}
  end
  if n == 0 then
    last = '0'  -- a forgotten streak: nothing to restore
  end
  n = n + 1
  redis.call('HSET', KEYS[1], 'n', n, 'last', ARGV[2])
  redis.call('EXPIRE', KEYS[1], math.ceil(forget))
  return {n, ARGV[2], '0', 1, last}
elseif mode == 'undo' then
  if n <= 1 then
    redis.call('DEL', KEYS[1])
    return {0, '0', '0', 0, last}
  end
  local before = last
  n = n - 1
  redis.call('HSET', KEYS[1], 'n', n)
  if last == ARGV[7] and tonumber(ARGV[8]) > 0 then
    last = ARGV[8]
    redis.call('HSET', KEYS[1], 'last', last)
  end
  return {n, last, '0', 0, before}
elseif mode == 'fail' then
  local before = last
  n = n + 1
  redis.call('HSET', KEYS[1], 'n', n, 'last', ARGV[2])
  redis.call('EXPIRE', KEYS[1], math.ceil(forget))
  return {n, ARGV[2], '0', 0, before}
else
  redis.call('DEL', KEYS[1])
  local ttl = tonumber(ARGV[5])
  if ARGV[4] ~= '' and ttl > 0 then
    redis.call('ZADD', KEYS[2], now, ARGV[4])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[6]) - 1)
    redis.call('EXPIRE', KEYS[2], math.ceil(ttl))
  end
  return {0, '0', ARGV[2], 0, last}
end
