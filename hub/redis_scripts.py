"""The Redis keys of a hub cluster, and the Lua scripts that change them: each check-and-write is one
atomic step.

Keys (prefix `p` = [cluster] key_prefix; the braces are a Redis Cluster hash tag keeping the keys in
one slot, which the Lua scripts need):

- `{p}:leader`    the collector lease: the owner's replica id, `SET NX PX`, extended by its owner only.
- `{p}:seq`       the highest seq ever published (raised by every replica to its own highest on connect).
- `{p}:epoch`     the stream epoch; created by the first leader that finds none (a new or emptied Redis).
- `{p}:snapshots` a stream capped at `stream_maxlen` entries and `stream_max_bytes` bytes of `data`,
  fields `seq`, `replica` (the collector), `epoch`, `size` (bytes of `data`) and `data` (the snapshot
  JSON, sent to clients byte for byte), and since format 2 `format` and `index` (where the pieces lie in
  `data`, `hub.stream_format`).
- `{p}:snapshots:bytes` the bytes of `data` the stream holds, kept by `PUBLISH` (re-estimated when missing).
- `{p}:snapshots:ids` a sorted set of the stream ids `PUBLISH` wrote (scored by their seq), for
  the stream's entries and the last `RECORD_SLACK` trimmed ones; written by `PUBLISH` only. An entry whose
  id is in it was written by that script, in the step that checked the lease was its `replica`'s, so
  its fields (`seq`, `replica`, `epoch`, `data`) are the collector's: stream entries never change, and
  Redis never hands out an id twice in one stream. Replicas accept no other entry (`hub.stream_check`).
- `{p}:state:<scope>` a hash: one JSON state per name (e.g. scope `health`: one per check), see `hub.state`.
- `{p}:ledger:<key>` one notification ledger entry (`SET NX EX`): the transition `key` was announced.
"""


def redis_keys(prefix: str) -> tuple[str, str, str, str]:
    """The lease, seq, epoch and stream keys for `[cluster] key_prefix` = `prefix`."""
    return f"{{{prefix}}}:leader", f"{{{prefix}}}:seq", f"{{{prefix}}}:epoch", f"{{{prefix}}}:snapshots"


def stream_bytes_key(prefix: str) -> str:
    """The key counting the bytes of `data` in the snapshot stream."""
    return f"{{{prefix}}}:snapshots:bytes"


def published_key(prefix: str) -> str:
    """The sorted set of the stream ids `PUBLISH` wrote (the proof a replica checks)."""
    return f"{{{prefix}}}:snapshots:ids"


def publish_keys(prefix: str) -> list[str]:
    """KEYS of the `PUBLISH` script: lease, seq, stream, epoch, stream bytes, published ids."""
    lease, seq, epoch, stream = redis_keys(prefix)
    return [lease, seq, stream, epoch, stream_bytes_key(prefix), published_key(prefix)]


#: Ids of trimmed entries `PUBLISH` keeps recorded beyond the stream's own, so that a replica reading an
#: entry just before a publish trims it still finds it recorded.
RECORD_SLACK = 16


def state_key(prefix: str, scope: str) -> str:
    """The hash holding the states of `scope` (e.g. "health")."""
    return f"{{{prefix}}}:state:{scope}"


def ledger_key(prefix: str, key: str) -> str:
    """The notification ledger entry for transition `key`."""
    return f"{{{prefix}}}:ledger:{key}"


# KEYS: lease, seq, stream, epoch, stream bytes, published ids (`publish_keys`).
# ARGV: owner, lease ms, seq, data, maxlen, epoch, max bytes[, format, index] (hub.stream_format; without
# them the entry has format 1's fields only, as a hub before formats wrote them).
# Returns {1, id} published, {0, ""} lease not ours, {-1, current seq} seq not newer,
# {-2, ""} the epoch changed (Redis was emptied and another leader started a new one).
# After adding, trims the oldest entries while the stream holds more than maxlen entries or more than
# max bytes of data, never the newest. An entry without `size` (an older hub) counts as its data's
# length; a missing (or unreadable) byte counter is re-estimated from the newest entries (trimming
# what is beyond the bounds while at it), so the counter never goes negative or stays wrong.
# A stream that can take no more entries (another writer's XADD with the last possible id) is started
# afresh. Records the new id in the published ids, and keeps only as many of them as the stream holds entries,
# plus RECORD_SLACK, the newest: an id's score is its seq, which only grows from one publish to the next
# (the stream ids would not do: another writer's XADD with an explicit id decides the ids that follow).
PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, ''} end
if redis.call('GET', KEYS[4]) ~= ARGV[6] then return {-2, ''} end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) <= cur then return {-1, tostring(cur)} end
redis.call('SET', KEYS[2], ARGV[3])
local size = string.len(ARGV[4])
local maxlen, maxbytes = tonumber(ARGV[5]), tonumber(ARGV[7])
local function entry_size(fields)
  local data = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'size' and tonumber(fields[i + 1]) then return tonumber(fields[i + 1]) end
    if fields[i] == 'data' then data = string.len(fields[i + 1]) end
  end
  return data
end
local stored = tonumber(redis.call('GET', KEYS[5]) or '')
local fields = {'seq', ARGV[3], 'replica', ARGV[1], 'epoch', ARGV[6], 'size', size, 'data', ARGV[4]}
if ARGV[8] then
  for _, v in ipairs({'format', ARGV[8], 'index', ARGV[9]}) do fields[#fields + 1] = v end
end
local id = redis.pcall('XADD', KEYS[3], '*', unpack(fields))
if type(id) == 'table' and id.err then
  if not string.find(id.err, 'exhausted', 1, true) then return redis.error_reply(id.err) end
  -- Another writer added an entry with the last possible id, after which no entry fits: start the
  -- stream afresh (replicas find their cursor above its newest entry and read it back, hub.catchup).
  redis.call('DEL', KEYS[3], KEYS[6])
  stored = 0
  id = redis.call('XADD', KEYS[3], '*', unpack(fields))
end
redis.call('ZADD', KEYS[6], ARGV[3], id)
local total = 0
if stored then
  total = stored + size
else
  local count, upto, kept, done = 0, '+', nil, false
  while not done do
    local page = redis.call('XREVRANGE', KEYS[3], upto, '-', 'COUNT', 8)
    done = #page == 0
    for _, e in ipairs(page) do
      local s = entry_size(e[2])
      if count >= 1 and (count + 1 > maxlen or total + s > maxbytes) then
        redis.call('XTRIM', KEYS[3], 'MINID', kept)
        done = true
        break
      end
      total, count, kept, upto = total + s, count + 1, e[1], '(' .. e[1]
    end
  end
end
local n = redis.call('XLEN', KEYS[3])
while n > 1 and (n > maxlen or total > maxbytes) do
  local oldest = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)[1]
  total = total - entry_size(oldest[2])
  redis.call('XDEL', KEYS[3], oldest[1])
  n = n - 1
end
if n <= 1 or total < 0 then total = size end
redis.call('SET', KEYS[5], total)
redis.call('ZREMRANGEBYRANK', KEYS[6], 0, -(n + RECORD_SLACK + 1))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, id}
""".replace("RECORD_SLACK", str(RECORD_SLACK))
# KEYS: seq, published ids. ARGV: stream ids. Returns the stored seq ("" when there is none), then for
# each id 1 when PUBLISH recorded it, else 0: what a replica needs to judge a page of entries, in one step.
CHECK = """
local out = {redis.call('GET', KEYS[1]) or ''}
for i = 1, #ARGV do out[#out + 1] = redis.call('ZSCORE', KEYS[2], ARGV[i]) and 1 or 0 end
return out
"""
# KEYS: stream. Returns the id of its newest entry, or "" when it has none; never the entry (it may be large).
TOP = """
local newest = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)[1]
if newest then return newest[1] end
return ''
"""
# KEYS: lease. ARGV: owner, lease ms. Extends the lease only for its owner.
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS: lease. ARGV: owner. Deletes the lease only for its owner (graceful shutdown).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: seq. ARGV: seq. Raises the stored seq to at least ARGV[1]; returns the stored value.
FLOOR = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local want = tonumber(ARGV[1])
if want > cur then redis.call('SET', KEYS[1], ARGV[1]); return want end
return cur
"""
