-- Requests prepared by the bench (gwbench/scenarios.py), one per line, sent in turn from a
-- random start: METHOD <TAB> PATH <TAB> BODY <TAB> Name: value <TAB> ... (BODY may be empty).
-- args: the file.
local pool, i = {}, 0

function init(args)
    for line in io.lines(args[1]) do
        local fields = {}
        for field in (line .. "\t"):gmatch("([^\t]*)\t") do fields[#fields + 1] = field end
        local headers = {}
        for k = 4, #fields do
            local name, value = fields[k]:match("^([^:]+):%s*(.*)$")
            headers[name] = value
        end
        local body = fields[3] ~= "" and fields[3] or nil
        pool[#pool + 1] = wrk.format(fields[1], fields[2], headers, body)
    end
    random_seed()
    i = math.random(0, #pool - 1)
end

function request()
    i = i % #pool + 1
    return pool[i]
end
