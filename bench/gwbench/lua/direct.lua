-- BidPaw's open-session called directly, signed as the service signs it.
-- args: a file of "path-and-query<TAB>sign" lines, one per player.
local pool = {}
local next_index = 0

function init(args)
    seed_random()
    for _, line in ipairs(read_lines(args[1])) do
        local path, sign = line:match("^([^\t]+)\t(.+)$")
        local headers = { ["sign"] = sign, ["content-type"] = "application/json; charset=UTF-8" }
        pool[#pool + 1] = wrk.format("GET", path, headers)
    end
    next_index = math.random(0, #pool - 1)
end

function request()
    next_index = next_index % #pool + 1
    return pool[next_index]
end
