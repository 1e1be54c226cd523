-- Append one event to an account's stream, with an id from the relay's clock.
-- KEYS[1] the account's stream (ev:{LOGIN})
-- KEYS[2] the message's event list (evm:{LOGIN}:MESSAGE_ID)
-- ARGV[1] now, milliseconds; ARGV[2] retention, milliseconds; ARGV[3] the event (JSON)
-- Returns the event's id: `ms-seq`, never below the stream's last id (a clock stepping back
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
local id = string.format('%d-%d', ms, seq)
local oldest = string.format('%d', now - retention)
local stored = '{"id":"' .. id .. '",' .. string.sub(ARGV[3], 2)
redis.call('XADD', KEYS[1], 'MINID', oldest, id, 'e', ARGV[3])
redis.call('PEXPIRE', KEYS[1], retention)
redis.call('RPUSH', KEYS[2], stored)
redis.call('PEXPIRE', KEYS[2], retention)
return id
