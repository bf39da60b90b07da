local incident = redis.call('HGET', KEYS[4], 'incident') or ''
local existed = redis.call('EXISTS', KEYS[1], KEYS[2])
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[4], '*', 'incident', incident, 'record', ARGV[5])
redis.call('XADD', KEYS[6], 'MAXLEN', '~', ARGV[4], '*', 'e', ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return existed
