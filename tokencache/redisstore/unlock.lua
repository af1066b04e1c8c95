-- Releases the lock KEYS[1] only if it still holds the owner token ARGV[1]:
-- a holder whose lock expired (and was taken by someone else) must not
-- delete the next holder's lock. Returns 1 if released, 0 otherwise;
-- a value of another type (pcall: WRONGTYPE) is not the owner's.
if redis.pcall("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
