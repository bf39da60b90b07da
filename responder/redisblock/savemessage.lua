if redis.call('HGET', KEYS[1], 'incident') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'slack_channel', ARGV[2], 'slack_ts', ARGV[3])
return 1
