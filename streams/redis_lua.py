"""The Lua script that applies one batch on Redis, generated for the user row's width.

Arguments: ``KEYS[1]`` the offsets hash, ``KEYS[2]`` the progress hash
(``towerline.core.stream_progress``); ``ARGV``: half-life (ms), the number P of partitions,
the commit time (ms), P quadruples (field, expected applied, new applied, the batch's newest
event time or -1), the users blob, the pins blob, the user and the pin state fields, the
user row's U Feast fields (``_ts`` first), the pin row's 6 Feast fields.

The worker's state lives in the Feast row's own hash, under a field of its namespace: one
key and one command per user (HSET) and two per pin (HGET, HSET) instead of a key of its
own beside each row (a command from Lua costs Redis 1-3 µs, most of a batch's time there).

A blob is a run of records ``<I4 count> <count x I4 lengths> <strings>``:
users ``(Feast key, state, U Feast values)``, pins ``(Feast key, 5 doubles: delta counts,
delta ref_ms, the Feast ``_ts`` and ``last_event_ts_ms`` values of ref_ms)``: the batch's
pins are usually the newest, so the row's time fields come encoded from the worker and
Redis encodes them itself only for a pin whose stored time is newer (varints in Lua cost
Redis, the one process every worker shares, ~2 µs a pin).
The script is unrolled for its record widths: Redis's Lua spends ~10 µs a record building
tables for a generic parser, ~1 µs here.

Order: compare-and-set every partition (read only), walk both blobs to check their
framing (read only), then write; offsets and progress last. A partition's stored newest
event time only moves forward (late events do not move it back). Nothing is written unless everything checks, so the
script is all-or-nothing without Redis having rollbacks.
"""

_PRELUDE = r"""
local sub, unpack, call = string.sub, struct.unpack, redis.call
local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
local function ts_proto(ms)  -- google.protobuf.Timestamp: seconds = 1, nanos = 2
  local s, nanos, out = math.floor(ms / 1000), (ms % 1000) * 1000000, ''
  if s ~= 0 then out = '\8' .. varint(s) end
  if nanos ~= 0 then out = out .. '\16' .. varint(nanos) end
  return out
end
local function dbl(v) return '\41' .. struct.pack('<d', v) end  -- Value.double_val
local offsets_key, progress_key = KEYS[1], KEYS[2]
local half_life, nparts, commit_ms = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
for i = 0, nparts - 1 do
  local current = call('HGET', offsets_key, ARGV[4 + 4 * i]) or '-1'
  if current ~= ARGV[5 + 4 * i] then return {0, ARGV[4 + 4 * i], current} end
end
local at = 4 + 4 * nparts
local users, pins, user_field, pin_field = ARGV[at], ARGV[at + 1], ARGV[at + 2], ARGV[at + 3]
local uf, pf = {}, {}
for i = 1, @U@ do uf[i] = ARGV[at + 3 + i] end
for i = 1, 6 do pf[i] = ARGV[at + 3 + @U@ + i] end
if #pf ~= 6 then return redis.error_reply('malformed batch: fields') end
"""

_CHECK = r"""
local pos = 1
while pos <= #@BLOB@ do
  local c, @LENS@, p = unpack('@FMT@', @BLOB@, pos)
  if c ~= @K@ @EXTRA@ then return redis.error_reply('malformed @BLOB@ record') end
  pos = p + @SUM@
end
if pos ~= #@BLOB@ + 1 then return redis.error_reply('truncated @BLOB@ blob') end
"""

_USERS = r"""
pos = 1
while pos <= #users do
  local c, @LENS@, p = unpack('@FMT@', users, pos)
@SUBS@
  call('HSET', s1, user_field, s2, @PAIRS@)
  pos = p
end
"""

_PINS = r"""
pos = 1
while pos <= #pins do
  local c, l1, l2, l3, l4, p = unpack('<I4I4I4I4I4', pins, pos)
  local fk = sub(pins, p, p + l1 - 1); p = p + l1
  local d0, d1, d2, d3, dref = unpack('<ddddd', pins, p); p = p + 40
  local dts = sub(pins, p, p + l3 - 1); p = p + l3
  local dint = sub(pins, p, p + l4 - 1); p = p + l4
  local v0, v1, v2, v3, ref = 0, 0, 0, 0, dref
  local cur = call('HGET', fk, pin_field)
  if cur then v0, v1, v2, v3, ref = unpack('<ddddd', cur) end
  local t = math.max(ref, dref)
  local fa, fb = 2 ^ ((ref - t) / half_life), 2 ^ ((dref - t) / half_life)
  v0, v1, v2, v3 = v0 * fa + d0 * fb, v1 * fa + d1 * fb, v2 * fa + d2 * fb, v3 * fa + d3 * fb
  if t ~= dref then dts, dint = ts_proto(t), '\32' .. varint(t) end  -- \32: Value.int64_val
  call('HSET', fk, pin_field, struct.pack('<ddddd', v0, v1, v2, v3, t), pf[1], dts,
       pf[2], dbl(v0), pf[3], dbl(v1), pf[4], dbl(v2), pf[5], dbl(v3), pf[6], dint)
  pos = p
end
for i = 0, nparts - 1 do
  local field, newest = ARGV[4 + 4 * i], ARGV[7 + 4 * i]
  call('HSET', offsets_key, field, ARGV[6 + 4 * i])
  local stored = call('HGET', progress_key, field)
  if stored then  -- "<newest>:<commit>"; compare as numbers, keep the stored string
    local old = string.match(stored, '^(-?%d+):')
    if old and tonumber(old) > tonumber(newest) then newest = old end
  end
  call('HSET', progress_key, field, newest .. ':' .. commit_ms)
end
return 1
"""


def _fill(template: str, **subs: object) -> str:
    for name, value in subs.items():
        template = template.replace(f"@{name}@", str(value))
    return template


def _check(blob: str, k: int, extra: str = "") -> str:
    lens = ", ".join(f"l{i}" for i in range(1, k + 1))
    total = " + ".join(f"l{i}" for i in range(1, k + 1))
    fmt = "<" + "I4" * (k + 1)
    return _fill(_CHECK, BLOB=blob, LENS=lens, FMT=fmt, K=k, SUM=total, EXTRA=extra)


def apply_script(user_values: int) -> str:
    """The script for user rows of ``user_values`` Feast values (``_ts`` included)."""
    k = 2 + user_values
    lens = ", ".join(f"l{i}" for i in range(1, k + 1))
    subs = "\n".join(
        f"  local s{i} = sub(users, p, p + l{i} - 1); p = p + l{i}" for i in range(1, k + 1)
    )
    pairs = ", ".join(f"uf[{j}], s{2 + j}" for j in range(1, user_values + 1))
    users = _fill(_USERS, LENS=lens, FMT="<" + "I4" * (k + 1), SUBS=subs, PAIRS=pairs)
    return "".join(
        (
            _fill(_PRELUDE, U=user_values),
            _check("users", k),
            _check("pins", 4, "or l2 ~= 40"),
            users,
            _PINS,
        )
    )


# Sequences of many users in one reply: ARGV[1] the Feast key's bytes before the id,
# ARGV[2] those after it (the project), ARGV[3] the state field, ARGV[4] the ids as
# little-endian int64s (the key's own id encoding, so Lua only concatenates).
# Returns <I4 index><I4 length><state> for the users that have one. One bulk string
# instead of a reply per user: parsing thousands of nil replies costs the worker more.
LOAD_SCRIPT = r"""
local out, pack, call, sub = {}, struct.pack, redis.call, string.sub
local head, tail, field, ids = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
for i = 0, #ids / 8 - 1 do
  local v = call('HGET', head .. sub(ids, 8 * i + 1, 8 * i + 8) .. tail, field)
  if v then out[#out + 1] = pack('<I4I4', i, #v) .. v end
end
return table.concat(out)
"""
