-- End one attempt of a job: either the job is done (all its recipients delivered or failed
-- for good) or it is rescheduled with the recipients still pending.
-- KEYS[1]  due zset
-- KEYS[2]  job hash
-- KEYS[3]  message hash
-- KEYS[4]  messages zset (message id -> created)
-- ARGV[1]  lease token the caller holds
-- ARGV[2]  'done' or 'retry'
-- ARGV[3]  job id
-- ARGV[4]  message id
-- ARGV[5]  retry: next due time
-- ARGV[6]  retry: pending recipients (JSON)
-- ARGV[7]  retry: last error text
-- Returns  1, or 0 when the lease was lost (another worker owns the job now).
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then
  return 0
end
if ARGV[2] == 'done' then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[3])
  if redis.call('HINCRBY', KEYS[3], 'jobs_left', -1) <= 0 then
    redis.call('DEL', KEYS[3])
    redis.call('ZREM', KEYS[4], ARGV[4])
  end
else
  redis.call('HSET', KEYS[2], 'recipients', ARGV[6], 'last_error', ARGV[7], 'due_at', ARGV[5])
  redis.call('HINCRBY', KEYS[2], 'attempts', 1)
  redis.call('HDEL', KEYS[2], 'token')
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[3])
end
return 1
