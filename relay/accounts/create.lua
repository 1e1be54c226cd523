-- Create an account hash unless the login exists already.
-- KEYS[1]  account hash (acct:{LOGIN})
-- ARGV     field, value, field, value, ...
-- Returns  1 when created, 0 when the account existed.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
