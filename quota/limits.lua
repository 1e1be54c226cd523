-- The limits of one credential, atomically, in one round trip per call. quota/reference.py is
-- the same logic in Python; a property test keeps the two in step.
--
-- ARGV[1] = 'reserve': check every limit for one recipient and, if all allow it, reserve it
--   (the rolling 24 h quota = sum of the active plans, the per-minute rate, the per-recipient
--   rate). ARGV[1] = 'release': give back what a transaction reserved and did not use (RSET,
--   QUIT, timeout, failed DATA); units whose bucket has left the window are gone anyway.
--   Committing a transaction is deleting its reservation hash: the units stay counted.
--
-- KEYS[1]  day window hash    (1-minute buckets; fields: bucket index -> count, t, o)
-- KEYS[2]  minute window hash (1-second buckets; same layout)
-- KEYS[3]  plans hash         (plan id -> JSON {daily, per_minute?, starts?, expires?})
-- KEYS[4]  state hash         (suspended -> reason, permanent -> 1)
-- KEYS[5]  reservation hash of the transaction ("day:second:recipient key" -> units)
-- KEYS[6]  per-recipient counter of the current minute (reserve only)
-- KEYS[7]  optional, reserve: a hash of recipients the credential may not send to (the
--          relay's suppression list); ARGV[7] the recipient's field in it
-- ARGV[2]  now (ms)
-- reserve: ARGV[3] units, ARGV[4] default per-minute limit of one plan,
--          ARGV[5] per-recipient limit per minute, ARGV[6] reservation lifetime (ms)
-- Returns (reserve)  {0, used, daily}             allowed and reserved
--                    {1, retry_at_ms, daily}      over the 24 h quota
--                    {2, retry_at_ms, per_minute} over the per-minute rate
--                    {3, retry_at_ms, limit}      over the per-recipient rate
--                    {4}                          no active plan (expired)
--                    {5, reason, permanent}       suspended
--                    {6, entry}                   the recipient is blocked (KEYS[7])
--         (release)  units of the 24 h quota given back

local DAY_WIDTH, DAY_SPAN = 60000, 1441   -- a unit counts until its minute ends, 24 h later
local MIN_WIDTH, MIN_SPAN = 1000, 61
local now = tonumber(ARGV[2])
local day = math.floor(now / DAY_WIDTH)
local sec = math.floor(now / MIN_WIDTH)

local function slide(key, cur, span)
  -- returns the total left in the window and whether the window exists
  local head = redis.call('HMGET', key, 'o', 't')
  local o = tonumber(head[1])
  if not o then return 0, false end
  local limit = cur - span          -- buckets at or below this index have left the window
  local total = tonumber(head[2] or '0')
  if o > limit then return total, true end
  if limit - o >= span - 1 then     -- idle for a whole window: everything left
    redis.call('DEL', key)
    return 0, false
  end
  for i = o, limit do
    local c = redis.call('HGET', key, i)
    if c then
      total = total - tonumber(c)
      redis.call('HDEL', key, i)
    end
  end
  redis.call('HSET', key, 'o', limit + 1, 't', total)
  return total, true
end

local function frees_at(key, cur, span, width, need)
  local o = tonumber(redis.call('HGET', key, 'o')) or cur
  local freed = 0
  for i = o, cur do
    local c = redis.call('HGET', key, i)
    if c then
      freed = freed + tonumber(c)
      if freed >= need then return (i + span) * width end
    end
  end
  return -1
end

local function add(key, cur, span, n, exists)
  if not exists then
    redis.call('HSET', key, 'o', cur - span + 1)
  end
  redis.call('HINCRBY', key, cur, n)
  redis.call('HINCRBY', key, 't', n)
end

local function give_back(key, bucket, n)
  local left = redis.call('HGET', key, bucket)
  if not left then return 0 end
  n = math.min(n, tonumber(left))
  if tonumber(left) - n <= 0 then
    redis.call('HDEL', key, bucket)
  else
    redis.call('HINCRBY', key, bucket, -n)
  end
  redis.call('HINCRBY', key, 't', -n)
  return n
end

local function release()
  slide(KEYS[1], day, DAY_SPAN)
  slide(KEYS[2], sec, MIN_SPAN)
  local fields = redis.call('HGETALL', KEYS[5])
  local returned = 0
  for i = 1, #fields, 2 do
    -- field: "<day bucket>:<second bucket>:<per-recipient counter key>"
    local d, s, r = string.match(fields[i], '^(%d+):(%d+):(.+)$')
    local n = tonumber(fields[i + 1])
    returned = returned + give_back(KEYS[1], d, n)
    give_back(KEYS[2], s, n)
    if redis.call('EXISTS', r) == 1 and redis.call('DECRBY', r, n) <= 0 then
      redis.call('DEL', r)
    end
  end
  redis.call('DEL', KEYS[5])
  return returned
end

local function reserve(units)
  if KEYS[7] then
    local entry = redis.call('HGET', KEYS[7], ARGV[7])
    if entry then
      return {6, entry}
    end
  end
  local state = redis.call('HMGET', KEYS[4], 'suspended', 'permanent')
  if state[1] then
    return {5, state[1], state[2] and 1 or 0}
  end

  local daily, per_minute, active = 0, 0, false
  local plans = redis.call('HVALS', KEYS[3])
  for _, text in ipairs(plans) do
    local plan = cjson.decode(text)
    if (plan.starts == nil or plan.starts * 1000 <= now)
       and (plan.expires == nil or now < plan.expires * 1000) then
      active = true
      daily = daily + plan.daily
      per_minute = per_minute + (plan.per_minute or tonumber(ARGV[4]))
    end
  end
  if not active then return {4} end

  local used, day_exists = slide(KEYS[1], day, DAY_SPAN)
  if used + units > daily then
    return {1, frees_at(KEYS[1], day, DAY_SPAN, DAY_WIDTH, used + units - daily), daily}
  end
  local recent, min_exists = slide(KEYS[2], sec, MIN_SPAN)
  if recent + units > per_minute then
    return {2, frees_at(KEYS[2], sec, MIN_SPAN, MIN_WIDTH, recent + units - per_minute),
            per_minute}
  end
  local to_rcpt = tonumber(redis.call('GET', KEYS[6]) or '0')
  if to_rcpt + units > tonumber(ARGV[5]) then
    return {3, (day + 1) * DAY_WIDTH, tonumber(ARGV[5])}
  end

  add(KEYS[1], day, DAY_SPAN, units, day_exists)
  add(KEYS[2], sec, MIN_SPAN, units, min_exists)
  redis.call('INCRBY', KEYS[6], units)
  redis.call('PEXPIRE', KEYS[6], 2 * DAY_WIDTH)
  redis.call('HINCRBY', KEYS[5], day .. ':' .. sec .. ':' .. KEYS[6], units)
  redis.call('PEXPIRE', KEYS[5], tonumber(ARGV[6]))
  return {0, used + units, daily}
end

if ARGV[1] == 'release' then
  return release()
end
return reserve(tonumber(ARGV[3]))
