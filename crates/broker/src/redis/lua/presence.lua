-- Cluster-wide presence of a room. KEYS: 1 entries (zset: "<connection> <user>" scored by
-- expiry, ms), 2 counts (hash: user -> live connections), 3 members (hash: user -> member
-- JSON), 4 room channel, 5 the room's meta (its seq and epoch, kept alive while served),
-- 6 the presence version. The first connection of a user publishes its join envelope (built by
-- the node); the last one to go (left, or expired because its node died) publishes a leave.
--
-- Every change gets a version, larger than any before it in the room: the Redis clock in
-- microseconds, or the last version + 1 if that is larger, so it keeps growing when the
-- version key is lost. A `join` returns the version, and the members current at it when asked.

local function version_text(v)
  return string.format('%.0f', v)
end

local function current_version()
  return tonumber(redis.call('GET', KEYS[6]) or '0')
end

local function next_version()
  local t = redis.call('TIME')
  local v = math.max(tonumber(t[1]) * 1000000 + tonumber(t[2]), current_version() + 1)
  redis.call('SET', KEYS[6], version_text(v), 'PX', ARGV[3])
  return version_text(v)
end

local function drop(entry)
  if redis.call('ZREM', KEYS[1], entry) == 0 then
    return
  end
  local space = string.find(entry, ' ', 1, true)
  local user = string.sub(entry, space + 1)
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
    redis.call('HDEL', KEYS[3], user)
    redis.call('SPUBLISH', KEYS[4], 'L' .. f(next_version()) .. f(user))
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
      redis.call('SPUBLISH', KEYS[4], 'J' .. f(next_version()) .. join_envelope)
    end
  end
end

local function keep(key_ttl_ms)
  for _, i in ipairs({1, 2, 3, 6}) do
    redis.call('PEXPIRE', KEYS[i], key_ttl_ms)
  end
end

-- ARGV: 1 op (join | leave | members | heartbeat), 2 entry ttl ms, 3 key ttl ms, 4 meta ttl s,
-- then join: entry, user, member, join envelope, members wanted ('1' or '0'); leave: entry;
-- heartbeat: (entry, user, member, join envelope) repeated.
local op = ARGV[1]
local now = now_ms()
local expiry = now + tonumber(ARGV[2])
local before = current_version()
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
if op == 'join' then
  local version = current_version()
  if version == before then
    -- Nothing published: a mark tells the joining node when every change up to the version
    -- has reached it (pub/sub keeps the order of one channel).
    redis.call('SPUBLISH', KEYS[4], 'B' .. f(version_text(version)))
  end
  if ARGV[9] == '0' then
    -- The node follows the room's members itself.
    return {version_text(version)}
  end
  local reply = redis.call('HVALS', KEYS[3])
  table.insert(reply, 1, version_text(version))
  return reply
end
if op == 'members' then
  return redis.call('HVALS', KEYS[3])
end
return {}
