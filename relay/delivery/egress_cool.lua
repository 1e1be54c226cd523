-- Count a failure of one egress IP towards one destination domain; start a cool-down on a
-- block, or when the failures reach the threshold.
-- KEYS[1]  cool-downs of the domain (hash: ip -> until)
-- KEYS[2]  failures of the domain (hash: ip -> count)
-- KEYS[3]  index of every cool-down (zset: "ip domain" -> until)
-- ARGV[1]  'block' or 'failure'
-- ARGV[2]  ip
-- ARGV[3]  index member ("ip domain")
-- ARGV[4]  now
-- ARGV[5]  end of a cool-down starting now
-- ARGV[6]  failures that start a cool-down
-- ARGV[7]  cool-down length in milliseconds (key expiry)
-- Returns  the end of the cool-down started, or false.
if ARGV[1] == 'failure' then
  local count = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
  if count < tonumber(ARGV[6]) then
    return false
  end
end
redis.call('HDEL', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[2], ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
return ARGV[5]
