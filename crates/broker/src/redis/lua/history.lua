-- A room's position and the durable messages after a seq, read atomically.
-- KEYS: 1 meta, 2 log
-- ARGV: 1 new epoch (used if the room has none), 2 since seq (-1: none), 3 limit,
--       4 history ttl ms, 5 meta ttl s
-- Returns {epoch, seq, first seq returned (0: none), envelope...}; entries older than the
-- history ttl are left out.
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[1], ARGV[5])
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local out = {epoch, seq, 0}
local since = tonumber(ARGV[2])
if since >= 0 and since < seq then
  local cutoff = now_ms() - tonumber(ARGV[4])
  local entries = redis.call('XRANGE', KEYS[2], (since + 1) .. '-0', '+', 'COUNT', ARGV[3])
  for _, entry in ipairs(entries) do
    local fields = entry[2]
    if tonumber(fields[2]) >= cutoff then
      if out[3] == 0 then
        out[3] = tonumber(string.match(entry[1], '^(%d+)'))
      end
      out[#out + 1] = fields[4]
    end
  end
end
return out
