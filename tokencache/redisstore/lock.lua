-- Takes the lock KEYS[1] for the owner token ARGV[1] for ARGV[2]
-- milliseconds if nobody holds it, or if what holds it has no expiry,
-- expires later than ARGV[3] milliseconds from now (more than any replica
-- of the same LockTTL sets) or is not a string: only a Redis writer's
-- is so. Returns 1 if taken, 0 otherwise.
if redis.call("SET", KEYS[1], ARGV[1], "NX", "PX", ARGV[2]) then
	return 1
end
local left = redis.call("PTTL", KEYS[1])
if left == -1 or left > tonumber(ARGV[3]) or redis.call("TYPE", KEYS[1]).ok ~= "string" then
	redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
	return 1
end
return 0
