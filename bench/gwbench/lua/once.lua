-- Requests prepared by the bench (gwbench/scenarios.py), as pool.lua's, but each sent at most
-- once: a wallet callback's transactionId (or a debit's Idempotency-Key) must be new, else the
-- run measures replays. Each wrk thread takes every n-th line; an answer counts as a unit only
-- when it is a 200 whose body contains the expected text. A thread that runs out of lines starts
-- over, and every answer from then on counts as unexpected: the bench prepared too few.
-- args: the file, the text of a good answer, the thread count (wrk_command adds it).
local pool, i, spent = {}, 0, false

function setup(thread) -- common.lua's bookkeeping, and this thread's share
    table.insert(threads, thread)
    thread:set("part", #threads - 1)
end

function init(args)
    expect = args[2]
    local parts, k = tonumber(args[3]), 0
    for line in io.lines(args[1]) do
        if k % parts == part then
            local fields = {}
            for field in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = field end
            local headers = {}
            for f = 4, #fields do
                local name, value = fields[f]:match("^([^:]+):%s*(.*)$")
                headers[name] = value
            end
            local body = fields[3] ~= "" and fields[3] or nil
            pool[#pool + 1] = wrk.format(fields[1], fields[2], headers, body)
        end
        k = k + 1
    end
end

function request()
    i = i + 1
    if i > #pool then i, spent = 1, true end
    return pool[i]
end

function response(status, headers, body)
    if not spent and status == 200 and body and body:find(expect, 1, true) then
        units = units + 1
    else
        bad = bad + 1
    end
end
