-- End one attempt of a job, and queue the notice it calls for, in one step: either the job is
-- done (every recipient delivered or failed for good) or it is rescheduled with the
-- recipients still pending. With a stale lease nothing happens (the new holder decides).
-- KEYS[1]  due zset
-- KEYS[2]  job hash
-- KEYS[3]  message hash
-- KEYS[4]  messages zset (message id -> created)
-- KEYS[5]  held zset
-- KEYS[6]  notice: message hash (unused without a notice)
-- KEYS[7]  notice: job hash
-- KEYS[8]  the node's leased jobs (set)
-- ARGV[1]  lease token the caller holds
-- ARGV[2]  'done', 'retry', or 'postpone' (a retry that was no attempt: the destination's
--          shaping made the job wait; attempts and last error stay as they were)
-- ARGV[3]  job id
-- ARGV[4]  message id
-- ARGV[5]  retry: next due time
-- ARGV[6]  retry: pending recipients (JSON)
-- ARGV[7]  retry: last error fields (JSON object of strings: error_code, error_status,
--          error_text, error_ip, error_mx)
-- ARGV[8]  now
-- ARGV[9]  account index key prefix
-- ARGV[10] notice: '' (none), or how it relates to the message's one delay notice:
--          'plain' (no delay part), 'delay' (only a delay part: dropped if one was sent),
--          'with-delay' (failure or success parts and a delay part: always sent)
-- ARGV[11] notice: message id
-- ARGV[12] notice: job id
-- ARGV[13] notice: message fields (JSON object of strings); its body is already spooled
-- ARGV[14] notice: job fields (JSON object of strings)
-- Returns  {result, ended}: result 'done', 'notice-queued' (the notice was queued too) or
--          'lease-lost' (nothing changed); ended 'ended' when the message left the queue (its
--          spooled body can go), else 'kept'.
if redis.call('HGET', KEYS[2], 'token') ~= ARGV[1] then
  return {'lease-lost', 'kept'}
end
local ended = 'kept'
redis.call('SREM', KEYS[8], ARGV[3])
local result = 'done'
local notice = ARGV[10]
if notice ~= '' then
  if notice ~= 'plain' then
    local first = redis.call('HSETNX', KEYS[3], 'delay_notified', '1')
    if first == 0 and notice == 'delay' then
      notice = ''
    end
  end
  if notice ~= '' then
    local fields = cjson.decode(ARGV[13])
    for name, value in pairs(fields) do
      redis.call('HSET', KEYS[6], name, value)
    end
    for name, value in pairs(cjson.decode(ARGV[14])) do
      redis.call('HSET', KEYS[7], name, value)
    end
    redis.call('ZADD', KEYS[1], ARGV[8], ARGV[12])
    redis.call('ZADD', KEYS[4], ARGV[8], ARGV[11])
    redis.call('SADD', ARGV[9] .. fields['account'], ARGV[11])
    result = 'notice-queued'
  end
end
if ARGV[2] == 'done' then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[1], ARGV[3])
  redis.call('ZREM', KEYS[5], ARGV[3])
  if redis.call('HINCRBY', KEYS[3], 'jobs_left', -1) <= 0 then
    local account = redis.call('HGET', KEYS[3], 'account')
    redis.call('DEL', KEYS[3])
    redis.call('ZREM', KEYS[4], ARGV[4])
    ended = 'ended'
    if account then
      redis.call('SREM', ARGV[9] .. account, ARGV[4])
    end
  end
else
  if ARGV[2] == 'postpone' then
    redis.call('HSET', KEYS[2], 'due_at', ARGV[5])
  else
    redis.call('HSET', KEYS[2], 'recipients', ARGV[6], 'due_at', ARGV[5])
    redis.call('HDEL', KEYS[2], 'last_error', 'error_code', 'error_status', 'error_text', 'error_ip', 'error_mx')
    for name, value in pairs(cjson.decode(ARGV[7])) do
      redis.call('HSET', KEYS[2], name, value)
    end
    redis.call('HINCRBY', KEYS[2], 'attempts', 1)
  end
  redis.call('HDEL', KEYS[2], 'token')
  if redis.call('HEXISTS', KEYS[3], 'held_at') == 1 then
    redis.call('ZREM', KEYS[1], ARGV[3])
    redis.call('ZADD', KEYS[5], ARGV[8], ARGV[3])
  else
    redis.call('ZADD', KEYS[1], ARGV[5], ARGV[3])
  end
end
return {result, ended}
