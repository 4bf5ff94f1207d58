"""The Redis keys of a hub cluster, and the Lua scripts that change them: each check-and-write is one
atomic step.

Keys (prefix `p` = [cluster] key_prefix; the braces are a Redis Cluster hash tag keeping the keys in
one slot, which the Lua scripts need):

- `{p}:leader`    the collector lease: the owner's replica id, `SET NX PX`, extended by its owner only.
- `{p}:seq`       the highest seq ever published (raised by every replica to its own highest on connect).
- `{p}:epoch`     the stream epoch; created by the first leader that finds none (a new or emptied Redis).
- `{p}:snapshots` a stream capped at `stream_maxlen` entries, fields `seq`, `replica` (the collector)
  and `data` (the snapshot JSON, sent to clients byte for byte).
"""


def redis_keys(prefix: str) -> tuple[str, str, str, str]:
    """The lease, seq, epoch and stream keys for `[cluster] key_prefix` = `prefix`."""
    return f"{{{prefix}}}:leader", f"{{{prefix}}}:seq", f"{{{prefix}}}:epoch", f"{{{prefix}}}:snapshots"


# KEYS: lease, seq, stream, epoch. ARGV: owner, lease ms, seq, data, maxlen, epoch.
# Returns {1, id} published, {0, ""} lease not ours, {-1, current seq} seq not newer,
# {-2, ""} the epoch changed (Redis was emptied and another leader started a new one).
PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, ''} end
if redis.call('GET', KEYS[4]) ~= ARGV[6] then return {-2, ''} end
local cur = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[3]) <= cur then return {-1, tostring(cur)} end
redis.call('SET', KEYS[2], ARGV[3])
local id = redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[5], '*', 'seq', ARGV[3], 'replica', ARGV[1], 'data', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, id}
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
