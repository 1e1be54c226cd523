-- One suspension change of one account (open, lift, deny), whole or not at all: the record
-- and its index, the quota state that refuses the account's RCPTs, the account's audit entry,
-- and the task of follow-ups that live in other slots (the global indexes, the queue's hold
-- or release, the copy in the global audit stream, the notices), which the caller runs next
-- and `SuspensionService.replay` finishes after a crash. Every key is in the account's slot
-- (hash tag {LOGIN}); the caller decided on what it read, so the script first checks that the
-- account's suspensions are still what it read (two concurrent changes: one wins, the other
-- decides again).
-- KEYS[1]  index zset          susp:{L}:index (ID -> created)
-- KEYS[2]  record hash         susp:{L}:ID
-- KEYS[3]  quota state hash    quota:{L}:state
-- KEYS[4]  audit stream        audit:{L}
-- KEYS[5]  outbox list         susp:{L}:outbox
-- ARGV[1]  what the caller read: 'ID=STATUS,ID=STATUS,…' in index order (STATUS as stored)
-- ARGV[2]  record key prefix   susp:{L}:
-- ARGV[3]  suspension id
-- ARGV[4]  created at (index score)
-- ARGV[5]  record fields (JSON object of strings)
-- ARGV[6]  quota: 'suspend', 'deny' (permanent), 'lift' (clear) or '' (leave alone)
-- ARGV[7]  quota: the reason shown to the account
-- ARGV[8]  audit entry fields (JSON object of strings)
-- ARGV[9]  follow-up task (JSON), pushed as 'AUDIT-ID TASK'
-- Returns  'changed' (nothing written) or the id of the audit entry written.
local seen = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  seen[#seen + 1] = id .. '=' .. (redis.call('HGET', ARGV[2] .. id, 'status') or '')
end
if table.concat(seen, ',') ~= ARGV[1] then
  return 'changed'
end
for name, value in pairs(cjson.decode(ARGV[5])) do
  redis.call('HSET', KEYS[2], name, value)
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
if ARGV[6] == 'suspend' or ARGV[6] == 'deny' then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], 'suspended', ARGV[7])
  if ARGV[6] == 'deny' then
    redis.call('HSET', KEYS[3], 'permanent', '1')
  end
elseif ARGV[6] == 'lift' then
  redis.call('DEL', KEYS[3])
end
local entry = {}
for name, value in pairs(cjson.decode(ARGV[8])) do
  entry[#entry + 1] = name
  entry[#entry + 1] = value
end
local audit_id = redis.call('XADD', KEYS[4], '*', unpack(entry))
redis.call('RPUSH', KEYS[5], audit_id .. ' ' .. ARGV[9])
return audit_id
