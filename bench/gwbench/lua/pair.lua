-- POST /betlink/session, then POST /betlink/authenticate with the launch token it issued, a
-- fresh requestId and a fresh X-Idempotency-Key; a unit is the pair, timed here. Run with one
-- connection per thread (-t = -c), so request() and response() follow one connection.
-- args: gateway key, BetLink key, operator id, number of players.
local gateway_key, betlink_key, operator_id, players
local token, user_id, started

function init(args)
    random_seed()
    gateway_key, betlink_key, operator_id, players = args[1], args[2], args[3], tonumber(args[4])
end

function request()
    if token == nil then
        started = now_us()
        local headers = { ["Authorization"] = "Bearer " .. gateway_key, ["X-User-Id"] = "player-" .. math.random(1, players) }
        return wrk.format("POST", "/betlink/session", headers)
    end
    local body = string.format(
        '{"requestId":"%s","userId":"%s","operatorId":"%s","launchToken":"%s","authRequestedTimestamp":"%d"}',
        uuid4(), user_id, operator_id, token, os.time() * 1000)
    local headers = { ["X-API-Key"] = betlink_key, ["X-Idempotency-Key"] = uuid4(), ["Content-Type"] = "application/json" }
    return wrk.format("POST", "/betlink/authenticate", headers, body)
end

function response(status, headers, body)
    if token == nil then
        if status == 201 then
            token = body:match('"launchToken"%s*:%s*"([^"]+)"')
            user_id = body:match('"userId"%s*:%s*"([^"]+)"')
        else
            bad = bad + 1
        end
        return
    end
    token = nil
    if status == 200 then
        units = units + 1
        samples[#samples + 1] = now_us() - started
    else
        bad = bad + 1
    end
end
