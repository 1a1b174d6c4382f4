-- Shared by every Switchyard script (prepended when the script is built).
-- Fields of an envelope are length-prefixed: see envelope.rs.
local function f(s)
  s = tostring(s)
  return #s .. ':' .. s
end

-- Milliseconds from the Redis clock: one clock for every node.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A room's history: meta (hash: epoch, seq) and history (stream, ids "<seq>-0"). A room without meta has
-- lost its history (new room, expired, or Redis restarted empty): it starts a new epoch.
local function room_epoch(meta, log, new_epoch, meta_ttl_s)
  local epoch = redis.call('HGET', meta, 'epoch')
  if not epoch then
    epoch = new_epoch
    redis.call('HSET', meta, 'epoch', epoch, 'seq', 0)
    redis.call('DEL', log)
  end
  redis.call('EXPIRE', meta, meta_ttl_s)
  return epoch
end
