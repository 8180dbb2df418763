-- The session -> authenticate pair with fresh keys, timed in Lua. Run with one connection per
-- thread (-t = -c), so request() and response() belong to one connection and the pair's
-- latency is exact. args: gateway key, BetLink key, operator id, number of players.
sample_kinds = { "session", "auth", "pair" }
local gateway_key, betlink_key, operator_id, users
local stage, started, pair_started
local launch_token, betlink_user_id

function init(args)
    seed_random()
    gateway_key, betlink_key, operator_id, users = args[1], args[2], args[3], tonumber(args[4])
end

function request()
    started = now_us()
    if launch_token == nil then
        stage = "session"
        pair_started = started
        local headers = { ["Authorization"] = "Bearer " .. gateway_key, ["X-User-Id"] = "player-" .. math.random(1, users) }
        return wrk.format("POST", "/betlink/session", headers)
    end
    stage = "auth"
    local body = '{"requestId":"' .. uuid4() .. '","userId":"' .. betlink_user_id ..
        '","operatorId":"' .. operator_id .. '","launchToken":"' .. launch_token ..
        '","authRequestedTimestamp":"' .. string.format("%d", os.time() * 1000) .. '"}'
    local headers = {
        ["X-API-Key"] = betlink_key, ["X-Idempotency-Key"] = uuid4(), ["Content-Type"] = "application/json",
    }
    return wrk.format("POST", "/betlink/authenticate", headers, body)
end

function response(status, headers, body)
    local finished = now_us()
    record(stage, finished - started)
    count(stage, status)
    if stage == "session" then
        if status == 201 then
            launch_token = body:match('"launchToken"%s*:%s*"([^"]+)"')
            betlink_user_id = body:match('"userId"%s*:%s*"([^"]+)"')
        end
    else
        if status == 200 then
            record("pair", finished - pair_started)
        end
        launch_token = nil
    end
end
