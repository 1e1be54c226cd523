-- Copy an account's audit entry into the global stream once, however often it is replayed
-- (a crash between the copy and the end of its follow-up task replays the copy).
-- `{audit}:copied` hashes like `audit` (the tag is the whole name): one slot.
-- KEYS[1]  global audit stream   audit
-- KEYS[2]  copies made (zset)    {audit}:copied   'LOGIN/ENTRY-ID' -> when copied
-- ARGV[1]  'LOGIN/ENTRY-ID'
-- ARGV[2]  now
-- ARGV[3]  forget copies made before this (a task is replayed within days, not weeks)
-- ARGV[4]  entry fields (JSON object of strings)
-- Returns  'copied' or 'already'
if redis.call('ZADD', KEYS[2], 'NX', ARGV[2], ARGV[1]) == 0 then
  return 'already'
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. ARGV[3])
local entry = {}
for name, value in pairs(cjson.decode(ARGV[4])) do
  entry[#entry + 1] = name
  entry[#entry + 1] = value
end
redis.call('XADD', KEYS[1], '*', unpack(entry))
return 'copied'
