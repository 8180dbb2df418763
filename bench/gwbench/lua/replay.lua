-- POST /betlink/authenticate repeating requests already answered: every one is a replay.
-- args: BetLink key, a file of "idempotency-key<TAB>json body" lines.
local pool = {}
local next_index = 0

function init(args)
    seed_random()
    for _, line in ipairs(read_lines(args[2])) do
        local key, body = line:match("^([^\t]+)\t(.+)$")
        local headers = {
            ["X-API-Key"] = args[1], ["X-Idempotency-Key"] = key, ["Content-Type"] = "application/json",
        }
        pool[#pool + 1] = wrk.format("POST", "/betlink/authenticate", headers, body)
    end
    next_index = math.random(0, #pool - 1)
end

function request()
    next_index = next_index % #pool + 1
    return pool[next_index]
end
