-- Append events of one message to its account's stream, with ids from the relay's clock.
-- KEYS[1] the account's stream (ev:{LOGIN})
-- KEYS[2] the message's event list (evm:{LOGIN}:MESSAGE_ID)
-- ARGV[1] now, milliseconds; ARGV[2] retention, milliseconds; ARGV[3..] the events (JSON
-- objects), in order
-- Returns the events' ids: `ms-seq`, never below the stream's last id (a clock stepping back
-- reuses the last millisecond with a higher sequence).
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local ms, seq = now, 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      local lms, lseq = string.match(info[i + 1], '^(%d+)-(%d+)$')
      lms, lseq = tonumber(lms), tonumber(lseq)
      if lms >= now then
        ms, seq = lms, lseq + 1
      end
    end
  end
end
local oldest = string.format('%d', now - retention)
local ids = {}
for n = 3, #ARGV do
  local id = string.format('%d-%d', ms, seq)
  seq = seq + 1
  redis.call('XADD', KEYS[1], 'MINID', oldest, id, 'e', ARGV[n])
  redis.call('RPUSH', KEYS[2], '{"id":"' .. id .. '",' .. string.sub(ARGV[n], 2))
  ids[#ids + 1] = id
end
redis.call('PEXPIRE', KEYS[1], retention)
redis.call('PEXPIRE', KEYS[2], retention)
return ids
