"""The Lua scripts behind every state change (each runs atomically on the server).

Every script touches the keys of ONE queue only, all under the queue's hash tag
``{<prefix>:<queue>}``, so each runs on one Redis Cluster slot. Per-job keys are built
inside the script from the job-key prefix passed in ARGV[1] (``{p:q}:j:``); they share
the tag, so they live on the same slot as the declared keys.

Times are the server's clock (``TIME``), in milliseconds. Job hash fields::

    d   msgpack blob of the immutable fields (see backend._pack)
    st  q(ueued) | r(unning) | f(ailed, kept as a dead letter)
    p   priority            o   order (ms): eta or created_at, sorts the ready set
    e   eta (ms)            k   idempotency key           t   result ttl (ms)
    a   attempt (fencing)   f   failures                  le  lease expiries
    lu  lease until (ms)    w   worker                    sa  started at (ms)
    c   "1" when a cancel was requested while running

The ready set's score is ``-priority`` and its member ``%012x(order) .. id``, so ZPOPMIN
gives the highest priority first, then the earliest order, then id order (ids are
time-ordered).
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function member(o, id) return string.format('%012x', tonumber(o)) .. id end
"""

#: KEYS ready sched keys; ARGV jp, new-job channel, then per job:
#: id, blob, priority, order, eta ('' = none), key ('' = none), ttl ('' = default).
ENQUEUE = _PRELUDE + """
local jp = ARGV[1]
local wake = redis.call('ZCARD', KEYS[1]) == 0
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
local first_eta = first[2] and tonumber(first[2]) or nil
local publish = false
local out = {}
for i = 3, #ARGV, 7 do
  local id, blob, prio, order, eta, key, ttl =
    ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6]
  local jk = jp .. id
  local holder = nil
  if key ~= '' then
    local other = redis.call('HGET', KEYS[3], key)
    if other then
      local st = redis.call('HGET', jp .. other, 'st')
      if st == 'q' or st == 'r' then holder = other end
    end
  end
  if holder then
    out[#out + 1] = holder
  elseif redis.call('EXISTS', jk) == 1 then
    out[#out + 1] = id  -- the same job sent again after a lost reply
  else
    redis.call('HSET', jk, 'd', blob, 'st', 'q', 'p', prio, 'o', order)
    if key ~= '' then
      redis.call('HSET', jk, 'k', key)
      redis.call('HSET', KEYS[3], key, id)
    end
    if ttl ~= '' then redis.call('HSET', jk, 't', ttl) end
    if eta ~= '' then
      redis.call('HSET', jk, 'e', eta)
    end
    if eta ~= '' and tonumber(eta) > now then
      redis.call('ZADD', KEYS[2], eta, id)
      if first_eta == nil or tonumber(eta) < first_eta then
        first_eta = tonumber(eta)
        publish = true
      end
    else
      redis.call('ZADD', KEYS[1], -tonumber(prio), member(order, id))
      if wake then publish = true end
    end
    out[#out + 1] = id
  end
end
if publish then redis.call('PUBLISH', ARGV[2], '1') end
return out
"""

#: KEYS ready sched run; ARGV jp, limit, lease (ms), worker.
#: Returns {now, next eta or -1, then per job: id, attempt, blob, failures, expiries, eta}.
CLAIM = _PRELUDE + """
local jp, limit, lease, worker = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'WITHSCORES', 'LIMIT', 0, 500)
if #due > 0 then
  local ids = {}
  for i = 1, #due, 2 do
    local id, eta = due[i], due[i + 1]
    ids[#ids + 1] = id
    local prio = redis.call('HGET', jp .. id, 'p')
    if prio then
      redis.call('HSET', jp .. id, 'o', eta)
      redis.call('ZADD', KEYS[1], -tonumber(prio), member(eta, id))
    end
  end
  redis.call('ZREM', KEYS[2], unpack(ids))
end
local until_ = now + lease
local out = {now, -1}
local taken = 0
local function take(id, expired)
  local jk = jp .. id
  local v = redis.call('HMGET', jk, 'd', 'f', 'le', 'e')
  if not v[1] then return end
  local le = tonumber(v[3] or '0')
  if expired then
    le = le + 1
    redis.call('HSET', jk, 'le', le)
  end
  local a = redis.call('HINCRBY', jk, 'a', 1)
  redis.call('HSET', jk, 'st', 'r', 'lu', until_, 'w', worker, 'sa', now)
  redis.call('ZADD', KEYS[3], until_, id)
  out[#out + 1] = id
  out[#out + 1] = a
  out[#out + 1] = v[1]
  out[#out + 1] = v[2] or 0
  out[#out + 1] = le
  out[#out + 1] = v[4] or ''
  taken = taken + 1
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do take(id, true) end
if taken < limit then
  local popped = redis.call('ZPOPMIN', KEYS[1], limit - taken)
  for i = 1, #popped, 2 do take(string.sub(popped[i], 13), false) end
end
local nxt = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if nxt[2] then out[2] = tonumber(nxt[2]) - now end
return out
"""

#: KEYS run; ARGV jp, lease (ms), then pairs id, attempt. Returns 0 lost, 1 ok, 2 cancel.
EXTEND = _PRELUDE + """
local jp, until_ = ARGV[1], now + tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local id, attempt = ARGV[i], ARGV[i + 1]
  local v = redis.call('HMGET', jp .. id, 'st', 'a', 'c')
  if v[1] ~= 'r' or v[2] ~= attempt then
    out[#out + 1] = 0
  else
    redis.call('HSET', jp .. id, 'lu', until_)
    redis.call('ZADD', KEYS[1], until_, id)
    out[#out + 1] = v[3] == '1' and 2 or 1
  end
end
return out
"""

#: KEYS ready sched run keys dead results; ARGV jp, rp, done-channel prefix, new-job
#: channel, then per item: id, attempt, outcome (s|f|r|l), data, failures, ttl (ms).
#: ``data`` is the result for s/f and the retry delay (ms) for r. Returns 1/0 (fenced).
FINISH = _PRELUDE + """
local jp, rp, done, newch = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local wake = false
local out = {}
for i = 5, #ARGV, 6 do
  local id, attempt, outcome, data, failures, ttl =
    ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], tonumber(ARGV[i+5])
  local jk = jp .. id
  local v = redis.call('HMGET', jk, 'st', 'a', 'k', 'o', 'p')
  if v[1] ~= 'r' or v[2] ~= attempt then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    redis.call('ZREM', KEYS[3], id)
    if outcome == 's' or outcome == 'f' then
      if v[3] and redis.call('HGET', KEYS[4], v[3]) == id then
        redis.call('HDEL', KEYS[4], v[3])
      end
      redis.call('SET', rp .. id, data, 'PX', ttl)
      redis.call('ZADD', KEYS[6], now + ttl, id)
      if outcome == 's' then
        redis.call('DEL', jk)
      else
        redis.call('HSET', jk, 'st', 'f', 'f', failures)
        redis.call('HDEL', jk, 'lu', 'c')
        redis.call('PEXPIRE', jk, ttl)
        redis.call('ZADD', KEYS[5], now + ttl, id)
      end
      redis.call('PUBLISH', done .. id, data)
    else
      redis.call('HSET', jk, 'st', 'q', 'f', failures)
      redis.call('HDEL', jk, 'lu', 'w', 'c')
      local delay = outcome == 'r' and tonumber(data) or 0
      if delay > 0 then
        redis.call('HSET', jk, 'e', now + delay)
        redis.call('ZADD', KEYS[2], now + delay, id)
        wake = true
      else
        local o = v[4]
        if outcome == 'r' then
          o = now
          redis.call('HSET', jk, 'o', o, 'e', now)
        end
        if redis.call('ZCARD', KEYS[1]) == 0 then wake = true end
        redis.call('ZADD', KEYS[1], -tonumber(v[5]), member(o, id))
      end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
if wake then redis.call('PUBLISH', newch, '1') end
return out
"""

#: KEYS ready sched keys results; ARGV jp, rp, done prefix, id, result, default ttl (ms).
CANCEL = _PRELUDE + """
local jp, rp, id = ARGV[1], ARGV[2], ARGV[4]
local jk = jp .. id
local v = redis.call('HMGET', jk, 'st', 'o', 'k', 't')
if not v[1] then
  if redis.call('EXISTS', rp .. id) == 1 then return 'finished' end
  return 'not_found'
end
if v[1] == 'r' then
  redis.call('HSET', jk, 'c', '1')
  return 'requested'
end
if v[1] == 'f' then return 'finished' end
redis.call('ZREM', KEYS[1], member(v[2], id))
redis.call('ZREM', KEYS[2], id)
if v[3] and redis.call('HGET', KEYS[3], v[3]) == id then redis.call('HDEL', KEYS[3], v[3]) end
redis.call('DEL', jk)
local ttl = tonumber(v[4] or ARGV[6])
redis.call('SET', rp .. id, ARGV[5], 'PX', ttl)
redis.call('ZADD', KEYS[4], now + ttl, id)
redis.call('PUBLISH', ARGV[3] .. id, ARGV[5])
return 'cancelled'
"""

#: KEYS ready sched run dead. Returns {queued, scheduled, running, failed}.
STATS = _PRELUDE + """
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
return {
  redis.call('ZCARD', KEYS[1]) + redis.call('ZCOUNT', KEYS[2], '-inf', now),
  redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf'),
  redis.call('ZCARD', KEYS[3]),
  redis.call('ZCARD', KEYS[4]),
}
"""

#: KEYS ready sched run dead results keys; ARGV jp, rp, batch. Deletes up to ``batch``
#: entries of each set with their job and result keys. Returns {jobs deleted, 1 if done}.
PURGE = """
local jp, rp, batch = ARGV[1], ARGV[2], tonumber(ARGV[3])
local n, left = 0, 0
for k = 1, 5 do
  local members = redis.call('ZRANGE', KEYS[k], 0, batch - 1)
  if #members > 0 then
    for _, m in ipairs(members) do
      local id = m
      if k == 1 then id = string.sub(m, 13) end
      redis.call('DEL', jp .. id, rp .. id)
      if k < 5 then n = n + 1 end
    end
    redis.call('ZREM', KEYS[k], unpack(members))
  end
  left = left + redis.call('ZCARD', KEYS[k])
end
if left == 0 then redis.call('DEL', KEYS[6]) end
return {n, left == 0 and 1 or 0}
"""

#: KEYS dead; ARGV jp, limit. Returns flat {id, fields (flat HGETALL), ...}.
DEAD = _PRELUDE + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local ids = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[2]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HGETALL', ARGV[1] .. id)
  if #h > 0 then
    out[#out + 1] = id
    out[#out + 1] = h
  end
end
return out
"""

#: KEYS ready dead keys results; ARGV jp, rp, id, new-job channel. Returns 1 or 0.
REQUEUE = _PRELUDE + """
local jp, rp, id = ARGV[1], ARGV[2], ARGV[3]
local jk = jp .. id
if redis.call('ZREM', KEYS[2], id) == 0 or redis.call('HGET', jk, 'st') ~= 'f' then
  return 0
end
redis.call('PERSIST', jk)
redis.call('DEL', rp .. id)
redis.call('ZREM', KEYS[4], id)
redis.call('HSET', jk, 'st', 'q', 'f', 0, 'le', 0)
redis.call('HDEL', jk, 'e', 'c', 'lu', 'w')
local v = redis.call('HMGET', jk, 'p', 'o', 'k')
if v[3] and not redis.call('HGET', KEYS[3], v[3]) then redis.call('HSET', KEYS[3], v[3], id) end
redis.call('ZADD', KEYS[1], -tonumber(v[1]), member(v[2], id))
redis.call('PUBLISH', ARGV[4], '1')
return 1
"""
