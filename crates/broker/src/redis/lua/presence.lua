-- Cluster-wide presence of a room. KEYS: 1 entries (zset: "<connection> <user>" scored by
-- expiry, ms), 2 counts (hash: user -> live connections), 3 members (hash: user -> member
-- JSON), 4 room channel, 5 the room's meta (its seq and epoch, kept alive while served). The first connection of a user publishes its join envelope (built by
-- the node); the last one to go (left, or expired because its node died) publishes a leave.
local function drop(entry)
  if redis.call('ZREM', KEYS[1], entry) == 0 then
    return
  end
  local space = string.find(entry, ' ', 1, true)
  local user = string.sub(entry, space + 1)
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    redis.call('HDEL', KEYS[3], user)
    redis.call('SPUBLISH', KEYS[4], 'L' .. f(user))
  end
end

local function sweep(now)
  local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 1000)
  for _, entry in ipairs(expired) do
    drop(entry)
  end
end

-- Adds an entry, or refreshes its expiry.
local function add(entry, user, member, join_envelope, expiry)
  if redis.call('ZADD', KEYS[1], expiry, entry) == 1 then
    if redis.call('HINCRBY', KEYS[2], user, 1) == 1 then
      redis.call('HSET', KEYS[3], user, member)
      redis.call('SPUBLISH', KEYS[4], join_envelope)
    end
  end
end

local function keep(key_ttl_ms)
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], key_ttl_ms)
  end
end

-- ARGV: 1 op (join | leave | members | heartbeat), 2 entry ttl ms, 3 key ttl ms, 4 meta ttl s,
-- then join: entry, user, member, join envelope; leave: entry;
-- heartbeat: (entry, user, member, join envelope) repeated.
local op = ARGV[1]
local now = now_ms()
local expiry = now + tonumber(ARGV[2])
if op == 'join' then
  add(ARGV[5], ARGV[6], ARGV[7], ARGV[8], expiry)
  keep(ARGV[3])
elseif op == 'leave' then
  drop(ARGV[5])
elseif op == 'heartbeat' then
  for i = 5, #ARGV, 4 do
    add(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], expiry)
  end
  keep(ARGV[3])
  -- A room served by a node keeps its seq and epoch, messages or not.
  redis.call('EXPIRE', KEYS[5], ARGV[4])
end
sweep(now)
if op == 'join' or op == 'members' then
  return redis.call('HVALS', KEYS[3])
end
return {}
