-- POST /betlink/session for a random player. args: gateway key, number of players.
local pool = {}
local next_index = 0

function init(args)
    seed_random()
    local key, users = args[1], tonumber(args[2])
    for i = 1, 4000 do
        local headers = { ["Authorization"] = "Bearer " .. key, ["X-User-Id"] = "player-" .. math.random(1, users) }
        pool[i] = wrk.format("POST", "/betlink/session", headers)
    end
end

function request()
    next_index = next_index % #pool + 1
    return pool[next_index]
end
