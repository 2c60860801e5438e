"""The Lua scripts behind every state change (each runs atomically on the server).

Every script touches the keys of ONE queue only, all under the queue's hash tag
``{<prefix>:<queue>}``, so each runs on one Redis Cluster slot. KEYS[1] is the queue's
ready set (it routes the call to the right Cluster node); the other key names are built
in the script from the tag prefix in ARGV[1] (``{p:q}:``). They share the tag, so they
live on the same slot. Bulk arguments travel as one msgpack string (``cmsgpack`` in the
script): one argument to encode instead of seven per job.

Times are the server's clock (``TIME``), in milliseconds. Job hash fields::

    d   msgpack blob of the immutable fields (see _records._pack)
    st  q(ueued) | r(unning) | f(ailed, kept as a dead letter); absent = queued
    p   priority (absent = 0)
    o   order (ms): eta or created_at, sorts the ready set; every job has it

A new job gets only ``d`` and ``o`` (plus ``p``/``e``/``k``/``t`` when set): the blob
makes the hash a real hash table rather than a listpack, so every field is an
allocation, and enqueue is the hot path.
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
local P = ARGV[1]
local jp, rp = P .. 'j:', P .. 'r:'
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: ARGV tag prefix, new-job channel, then (id, blob, order) for each job: plain jobs (no
#: eta, priority 0, no idempotency key, default result ttl), the common case, as flat
#: arguments (Redis parses them; no msgpack to decode). Writes what ENQUEUE writes for
#: such jobs; a job that exists already (the same job sent again after a lost reply) is
#: left as it is. Returns how many were new.
ENQUEUE_PLAIN = """
local jp, READY = ARGV[1] .. 'j:', KEYS[1]
local ready = {}
for i = 3, #ARGV, 3 do
  local id, order = ARGV[i], ARGV[i + 2]
  local jk = jp .. id
  if redis.call('EXISTS', jk) == 0 then
    redis.call('HSET', jk, 'd', ARGV[i + 1], 'o', order)
    ready[#ready + 1] = 0
    ready[#ready + 1] = string.format('%012x', tonumber(order)) .. id
  end
end
if #ready > 0 then
  if redis.call('ZCARD', READY) == 0 then redis.call('PUBLISH', ARGV[2], '1') end
  redis.call('ZADD', READY, unpack(ready))
end
return #ready / 2
"""

#: ARGV tag prefix, new-job channel, msgpack list of jobs, each
#: [id, blob, order, priority, eta (0 = none), key ('' = none), ttl (0 = default)]
#: (the last four may be left out: a plain job is [id, blob, order]).
#: Returns the idempotency-key hits only, flat: {position (1-based), live holder's id, ...};
#: every other job's id is its own.
ENQUEUE = """
local P = ARGV[1]
local jp, READY = P .. 'j:', P .. 'ready'
local now, first_eta = nil, nil
local publish = false
local hits, ready = {}, {}
local function plain(id, blob, order)  -- a job of three fields: the usual, short way
  local jk = jp .. id
  if redis.call('EXISTS', jk) == 0 then  -- else the same job, sent again
    redis.call('HSET', jk, 'd', blob, 'o', order)
    ready[#ready + 1] = 0
    ready[#ready + 1] = string.format('%012x', order) .. id
  end
end
local function full(n, id, blob, order, prio, eta, key, ttl)
  local jk = jp .. id
  local holder = nil
  if key ~= '' then
    local other = redis.call('HGET', P .. 'keys', key)
    if other then
      local v = redis.call('HMGET', jp .. other, 'o', 'st')
      if v[1] and v[2] ~= 'f' then holder = other end
    end
  end
  if holder then
    if holder ~= id then
      hits[#hits + 1] = n
      hits[#hits + 1] = holder
    end
    return
  end
  if redis.call('EXISTS', jk) == 1 then return end  -- the same job, sent again
  local fields = {'d', blob, 'o', order}
  if prio ~= 0 then
    fields[#fields + 1] = 'p'
    fields[#fields + 1] = prio
  end
  if key ~= '' then
    fields[#fields + 1] = 'k'
    fields[#fields + 1] = key
    redis.call('HSET', P .. 'keys', key, id)
  end
  if ttl > 0 then
    fields[#fields + 1] = 't'
    fields[#fields + 1] = ttl
  end
  if eta > 0 then
    fields[#fields + 1] = 'e'
    fields[#fields + 1] = eta
    if now == nil then
      local t = redis.call('TIME')
      now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    end
  end
  redis.call('HSET', jk, unpack(fields))
  if eta > 0 and eta > now then
    if first_eta == nil then
      local first = redis.call('ZRANGE', P .. 'sched', 0, 0, 'WITHSCORES')
      first_eta = first[2] and tonumber(first[2]) or math.huge
    end
    redis.call('ZADD', P .. 'sched', eta, id)
    if eta < first_eta then
      first_eta = eta
      publish = true
    end
  else
    ready[#ready + 1] = -prio
    ready[#ready + 1] = string.format('%012x', order) .. id
  end
end
for n, j in ipairs(cmsgpack.unpack(ARGV[3])) do
  if j[4] == nil then
    plain(j[1], j[2], j[3])
  else
    full(n, j[1], j[2], j[3], j[4], j[5], j[6], j[7])
  end
end
if #ready > 0 then
  if redis.call('ZCARD', READY) == 0 then publish = true end
  redis.call('ZADD', READY, unpack(ready))
end
if publish then redis.call('PUBLISH', ARGV[2], '1') end
return hits
"""

#: ARGV tag prefix, limit, lease (ms), worker.
#: Returns {now, next eta - now or -1, then per job: id, attempt, blob, failures,
#: expiries, eta}.
CLAIM = _PRELUDE + """
local READY, SCHED, RUN = P .. 'ready', P .. 'sched', P .. 'run'
local limit, lease, worker = tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local due = redis.call('ZRANGEBYSCORE', SCHED, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 500)
if #due > 0 then
  local ids = {}
  for i = 1, #due, 2 do
    local id, eta = due[i], due[i + 1]
    ids[#ids + 1] = id
    local v = redis.call('HMGET', jp .. id, 'o', 'p')
    if v[1] then
      redis.call('HSET', jp .. id, 'o', eta)
      redis.call('ZADD', READY, -tonumber(v[2] or '0'), string.format('%012x', eta) .. id)
    end
  end
  redis.call('ZREM', SCHED, unpack(ids))
end
local until_ = now + lease
local out = {now, -1}
local run = {}
local function take(id, expired)
  local jk = jp .. id
  local v = redis.call('HMGET', jk, 'd', 'a', 'f', 'le', 'e')
  if not v[1] then
    redis.call('ZREM', RUN, id)
    return
  end
  local a = tonumber(v[2] or '0') + 1
  local le = tonumber(v[4] or '0')
  if expired then
    le = le + 1
    redis.call('HSET', jk, 'st', 'r', 'a', a, 'le', le, 'lu', until_, 'w', worker, 'sa', now)
  else
    redis.call('HSET', jk, 'st', 'r', 'a', a, 'lu', until_, 'w', worker, 'sa', now)
  end
  run[#run + 1] = until_
  run[#run + 1] = id
  out[#out + 1] = id
  out[#out + 1] = a
  out[#out + 1] = v[1]
  out[#out + 1] = v[3] or 0
  out[#out + 1] = le
  out[#out + 1] = v[5] or ''
end
local expired = redis.call('ZRANGEBYSCORE', RUN, '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(expired) do take(id, true) end
local taken = #run / 2
if taken < limit then
  local popped = redis.call('ZPOPMIN', READY, limit - taken)
  for i = 1, #popped, 2 do take(string.sub(popped[i], 13), false) end
end
if #run > 0 then redis.call('ZADD', RUN, unpack(run)) end
if #due > 0 or redis.call('ZCARD', SCHED) > 0 then
  local nxt = redis.call('ZRANGE', SCHED, 0, 0, 'WITHSCORES')
  if nxt[2] then out[2] = tonumber(nxt[2]) - now end
end
return out
"""

#: ARGV tag prefix, lease (ms), msgpack list of [id, attempt].
#: Returns per job 0 (lost: finished or taken over), 1 (ok) or 2 (cancel requested).
EXTEND = _PRELUDE + """
local RUN = P .. 'run'
local until_ = now + tonumber(ARGV[2])
local out = {}
for _, j in ipairs(cmsgpack.unpack(ARGV[3])) do
  local id = j[1]
  local v = redis.call('HMGET', jp .. id, 'st', 'a', 'c')
  if v[1] ~= 'r' or tonumber(v[2]) ~= j[2] then
    out[#out + 1] = 0
  else
    redis.call('HSET', jp .. id, 'lu', until_)
    redis.call('ZADD', RUN, until_, id)
    out[#out + 1] = v[3] == '1' and 2 or 1
  end
end
return out
"""

#: ARGV tag prefix, done-channel prefix, new-job channel, msgpack list of
#: [id, attempt, outcome (s|f|r|l), data, failures, ttl ms]; ``data`` is the result for
#: s/f and the retry delay (ms) for r. Returns per item 1, or 0 when fenced.
FINISH = _PRELUDE + """
local READY, SCHED, RUN, RES = P .. 'ready', P .. 'sched', P .. 'run', P .. 'res'
local done, newch = ARGV[2], ARGV[3]
local wake = false
local out, ended, results = {}, {}, {}
for _, j in ipairs(cmsgpack.unpack(ARGV[4])) do
  local id, attempt, outcome, data, failures, ttl = j[1], j[2], j[3], j[4], j[5], j[6]
  local jk = jp .. id
  local v = redis.call('HMGET', jk, 'st', 'a', 'k', 'o', 'p')
  if v[1] ~= 'r' or tonumber(v[2]) ~= attempt then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    ended[#ended + 1] = id
    if outcome == 's' or outcome == 'f' then
      if v[3] and redis.call('HGET', P .. 'keys', v[3]) == id then
        redis.call('HDEL', P .. 'keys', v[3])
      end
      redis.call('SET', rp .. id, data, 'PX', ttl)
      results[#results + 1] = now + ttl
      results[#results + 1] = id
      if outcome == 's' then
        redis.call('DEL', jk)
      else
        redis.call('HSET', jk, 'st', 'f', 'f', failures)
        redis.call('HDEL', jk, 'lu', 'c')
        redis.call('PEXPIRE', jk, ttl)
        redis.call('ZADD', P .. 'dead', now + ttl, id)
      end
      redis.call('PUBLISH', done .. id, data)
    else
      redis.call('HSET', jk, 'st', 'q', 'f', failures)
      redis.call('HDEL', jk, 'lu', 'w', 'c')
      local delay = outcome == 'r' and data or 0
      if delay > 0 then
        redis.call('HSET', jk, 'e', now + delay)
        redis.call('ZADD', SCHED, now + delay, id)
        wake = true
      else
        local o = v[4]
        if outcome == 'r' then
          o = now
          redis.call('HSET', jk, 'o', o, 'e', now)
        end
        if redis.call('ZCARD', READY) == 0 then wake = true end
        redis.call('ZADD', READY, -tonumber(v[5] or '0'), string.format('%012x', o) .. id)
      end
    end
  end
end
if #ended > 0 then redis.call('ZREM', RUN, unpack(ended)) end
if #results > 0 then
  redis.call('ZADD', RES, unpack(results))
  redis.call('ZREMRANGEBYSCORE', RES, '-inf', now)
end
if wake then redis.call('PUBLISH', newch, '1') end
return out
"""

#: ARGV tag prefix, done-channel prefix, id, result, default ttl (ms).
CANCEL = _PRELUDE + """
local id = ARGV[3]
local function member(o, i) return string.format('%012x', tonumber(o)) .. i end
local jk = jp .. id
local v = redis.call('HMGET', jk, 'st', 'o', 'k', 't')
if not v[2] then
  if redis.call('EXISTS', rp .. id) == 1 then return 'finished' end
  return 'not_found'
end
if v[1] == 'r' then
  redis.call('HSET', jk, 'c', '1')
  return 'requested'
end
if v[1] == 'f' then return 'finished' end
redis.call('ZREM', P .. 'ready', member(v[2], id))
redis.call('ZREM', P .. 'sched', id)
local keys = P .. 'keys'
if v[3] and redis.call('HGET', keys, v[3]) == id then redis.call('HDEL', keys, v[3]) end
redis.call('DEL', jk)
local ttl = tonumber(v[4] or ARGV[5])
redis.call('SET', rp .. id, ARGV[4], 'PX', ttl)
redis.call('ZADD', P .. 'res', now + ttl, id)
redis.call('PUBLISH', ARGV[2] .. id, ARGV[4])
return 'cancelled'
"""

#: ARGV tag prefix. Returns {queued, scheduled, running, failed}.
STATS = _PRELUDE + """
local READY, SCHED, RUN, DEAD = P .. 'ready', P .. 'sched', P .. 'run', P .. 'dead'
redis.call('ZREMRANGEBYSCORE', DEAD, '-inf', now)
return {
  redis.call('ZCARD', READY) + redis.call('ZCOUNT', SCHED, '-inf', now),
  redis.call('ZCOUNT', SCHED, '(' .. now, '+inf'),
  redis.call('ZCARD', RUN),
  redis.call('ZCARD', DEAD),
}
"""

#: ARGV tag prefix, batch. Deletes up to ``batch`` entries of each set with their job
#: and result keys. Returns {jobs deleted, 1 when the queue is empty}.
PURGE = _PRELUDE + """
local batch = tonumber(ARGV[2])
local n, left = 0, 0
local sets = {P .. 'ready', P .. 'sched', P .. 'run', P .. 'dead', P .. 'res'}
for k = 1, 5 do
  local members = redis.call('ZRANGE', sets[k], 0, batch - 1)
  if #members > 0 then
    for _, m in ipairs(members) do
      local id = m
      if k == 1 then id = string.sub(m, 13) end
      redis.call('DEL', jp .. id, rp .. id)
      if k < 5 then n = n + 1 end
    end
    redis.call('ZREM', sets[k], unpack(members))
  end
  left = left + redis.call('ZCARD', sets[k])
end
if left == 0 then redis.call('DEL', P .. 'keys', P .. 'ticks') end
return {n, left == 0 and 1 or 0}
"""

#: ARGV tag prefix, limit. Returns flat {id, fields (flat HGETALL), ...}.
DEAD = _PRELUDE + """
local DEAD = P .. 'dead'
redis.call('ZREMRANGEBYSCORE', DEAD, '-inf', now)
local ids = redis.call('ZRANGE', DEAD, 0, tonumber(ARGV[2]) - 1)
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HGETALL', jp .. id)
  if #h > 0 then
    out[#out + 1] = id
    out[#out + 1] = h
  end
end
return out
"""

#: ARGV tag prefix, id, new-job channel. Returns 1, or 0 if ``id`` is no dead letter.
REQUEUE = _PRELUDE + """
local id = ARGV[2]
local KEYS_ = P .. 'keys'
local jk = jp .. id
if redis.call('ZREM', P .. 'dead', id) == 0 or redis.call('HGET', jk, 'st') ~= 'f' then
  return 0
end
redis.call('PERSIST', jk)
redis.call('DEL', rp .. id)
redis.call('ZREM', P .. 'res', id)
redis.call('HSET', jk, 'st', 'q', 'f', 0, 'le', 0)
redis.call('HDEL', jk, 'e', 'c', 'lu', 'w')
local v = redis.call('HMGET', jk, 'p', 'o', 'k')
if v[3] and not redis.call('HGET', KEYS_, v[3]) then redis.call('HSET', KEYS_, v[3], id) end
redis.call('ZADD', P .. 'ready', -tonumber(v[1] or '0'),
  string.format('%012x', tonumber(v[2])) .. id)
redis.call('PUBLISH', ARGV[3], '1')
return 1
"""
