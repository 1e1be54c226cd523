-- Extend the leases of the jobs a worker is still attempting (its heartbeat), so a lease can
-- be short: a worker that dies stops renewing and its jobs come due soon after.
-- KEYS[1]  due zset
-- ARGV[1]  new lease end
-- ARGV[2]  job key prefix
-- ARGV[3..] job id, lease token, job id, lease token, ...
-- Returns  the number of leases extended (a job whose token changed is another's now).
local count = 0
for i = 3, #ARGV, 2 do
  if redis.call('HGET', ARGV[2] .. ARGV[i], 'token') == ARGV[i + 1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[1], ARGV[i])
    count = count + 1
  end
end
return count
