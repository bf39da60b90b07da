local out = {}
local index = {}
local n = (#KEYS - 3) / 4
for j = 0, n - 1 do
  local kb, kf, meta, ko = KEYS[4 + 4*j], KEYS[5 + 4*j], KEYS[6 + 4*j], KEYS[7 + 4*j]
  local a = 4 + 14*j
  local id, ttl, count, mode, expires, ip = ARGV[a+1], ARGV[a+2], ARGV[a+3], ARGV[a+4], ARGV[a+5], ARGV[a+6]
  local cur = redis.call('HMGET', meta, 'request', 'incident')
  if cur[1] == id then
    out[#out+1] = 1; out[#out+1] = cur[2] or ''
  elseif mode == 'r' and redis.call('EXISTS', kf) == 0 then
    out[#out+1] = 2; out[#out+1] = ''
  elseif mode == 's' and redis.call('EXISTS', kb) == 1 then
    out[#out+1] = 1; out[#out+1] = cur[2] or ''
  else
    local incident = cur[2]
    local eid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'incident', incident or '', 'record', ARGV[a+7])
    if not incident then incident = eid end
    redis.call('SET', kb, '1', 'PX', ttl)
    if mode ~= 'm' then
      redis.call('SET', kf, count, 'PX', ttl)
    end
    index[#index+1] = expires; index[#index+1] = ip
    redis.call('HSET', meta, 'request', id, 'incident', incident, 'rule', ARGV[a+8], 'severity', ARGV[a+9], 'count', count,
      'first_seen', ARGV[a+10], 'last_seen', ARGV[a+11], 'expires_at', ARGV[a+12], 'reason', ARGV[a+13])
    redis.call('PEXPIRE', meta, ttl)
    if mode == 'b' or mode == 's' then
      redis.call('SET', ko, ARGV[a+14], 'PX', ARGV[4])
    end
    local ev = '{"op":"block","ip":"' .. ip .. '","expires_ms":' .. expires .. ',"at_ms":' .. ARGV[2] .. '}'
    redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', 'e', ev)
    redis.call('PUBLISH', ARGV[1], ev)
    out[#out+1] = 0; out[#out+1] = incident
  end
end
if #index > 0 then
  redis.call('ZADD', KEYS[1], unpack(index))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[2])
return out
