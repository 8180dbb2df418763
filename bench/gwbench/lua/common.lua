-- gwbench: shared by every scenario (the bench prepends it to the scenario's script).
-- Each wrk thread runs its own Lua state; done() runs in the main state and collects the
-- threads' counters and Lua-timed samples with thread:get().
local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } gwbench_timespec;
int clock_gettime(int clock_id, gwbench_timespec *tp);
]]
local ts = ffi.new("gwbench_timespec")

function now_us()
    ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
    return tonumber(ts.tv_sec) * 1000000 + math.floor(tonumber(ts.tv_nsec) / 1000)
end

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("thread_index", #threads)
end

-- Latencies timed in Lua go to one flat global array per kind, "samples_<kind>", for the kinds
-- a scenario lists in `sample_kinds` (wrk 4.1's thread:get() crashes on nested tables).
sample_kinds = {}
statuses = {} -- "kind:status" -> count

function record(kind, micros)
    local name = "samples_" .. kind
    local list = _G[name]
    if list == nil then
        list = {}
        _G[name] = list
    end
    list[#list + 1] = micros
end

function count(kind, status)
    local key = kind .. ":" .. status
    statuses[key] = (statuses[key] or 0) + 1
end

local urandom = io.open("/dev/urandom", "rb")

function seed_random()
    local a, b, c, d, e, f = urandom:read(6):byte(1, 6)
    math.randomseed(((((a * 256 + b) * 256 + c) * 256 + d) * 256 + e) * 256 + f)
end

-- A version-4 UUID from the kernel's randomness: unique across threads and runs.
function uuid4()
    local b = { urandom:read(16):byte(1, 16) }
    b[7] = bit.bor(bit.band(b[7], 0x0f), 0x40)
    b[9] = bit.bor(bit.band(b[9], 0x3f), 0x80)
    return string.format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", unpack(b))
end

function read_lines(path)
    local lines = {}
    for line in io.lines(path) do
        if line ~= "" then lines[#lines + 1] = line end
    end
    return lines
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'GWBENCH {"duration_us":%d,"requests":%d,"bytes":%d,' ..
        '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
        '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
        summary.duration, summary.requests, summary.bytes,
        e.connect, e.read, e.write, e.status, e.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
    for _, thread in ipairs(threads) do
        for key, n in pairs(thread:get("statuses") or {}) do
            io.write("GWBENCH_STATUS " .. key .. " " .. n .. "\n")
        end
        for _, kind in ipairs(sample_kinds) do
            local list = thread:get("samples_" .. kind)
            if list ~= nil and #list > 0 then
                io.write("GWBENCH_SAMPLES " .. kind .. " " .. table.concat(list, ",") .. "\n")
            end
        end
    end
end
