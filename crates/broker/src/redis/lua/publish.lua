-- Durable publish, atomically on the room's shard: dedupe, next seq, history append, publish.
-- KEYS: 1 meta, 2 log, 3 room channel, 4 dedupe key (all with the room's hash tag)
-- ARGV: 1 new epoch (used if the room has none), 2 message body (JSON without seq and ts),
--       3 history size, 4 history ttl ms, 5 meta ttl s, 6 dedupe ttl s (0: no tempId),
--       7 message id
-- Returns {duplicate (0/1), "seq:ts:id", epoch}
if ARGV[6] ~= '0' then
  local first = redis.call('GET', KEYS[4])
  if first then
    return {1, first, ''}
  end
end
local epoch = room_epoch(KEYS[1], KEYS[2], ARGV[1], ARGV[5])
-- The seq is stored only once the entry is in the stream: a failed XADD (scripts do not roll
-- back) uses up nothing.
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq')) + 1
local ts = now_ms()
local envelope = 'D' .. f(seq) .. f(epoch) .. f(ts) .. f(ARGV[2])
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0', 't', ts, 'm', envelope)
redis.call('HSET', KEYS[1], 'seq', seq)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SPUBLISH', KEYS[3], envelope)
local place = seq .. ':' .. ts .. ':' .. ARGV[7]
if ARGV[6] ~= '0' then
  redis.call('SET', KEYS[4], place, 'EX', ARGV[6])
end
return {0, place, epoch}
