-- Extends the lock KEYS[1] to ARGV[2] milliseconds only if it still holds
-- the owner token ARGV[1]: a holder whose lock expired (and was taken by
-- someone else) must not extend the next holder's lock. Returns 1 if
-- extended, 0 otherwise.
if redis.pcall("GET", KEYS[1]) == ARGV[1] then
	return redis.call("PEXPIRE", KEYS[1], ARGV[2])
end
return 0
