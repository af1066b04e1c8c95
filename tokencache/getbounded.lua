-- Returns the string value of KEYS[1] only if it is at most ARGV[1] bytes
-- long: STRLEN first, so that an oversized value is never sent. Returns
-- nil when there is no value, its length (an integer) when it is over the
-- bound, else the value.
local n = redis.call("STRLEN", KEYS[1])
if n > tonumber(ARGV[1]) then
	return n
end
return redis.call("GET", KEYS[1])
