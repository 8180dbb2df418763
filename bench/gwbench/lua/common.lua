-- Prepended to every scenario's script. Each wrk thread runs its own Lua state; done() runs in
-- the main state and reads the threads' globals with thread:get() (flat values and arrays only).
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

local urandom = io.open("/dev/urandom", "rb")

function random_seed()
    local a, b, c, d = urandom:read(4):byte(1, 4)
    math.randomseed(((a * 256 + b) * 256 + c) * 256 + d)
end

-- A version-4 UUID from the kernel's randomness: unique across threads and runs.
function uuid4()
    local b = { urandom:read(16):byte(1, 16) }
    b[7] = bit.bor(bit.band(b[7], 0x0f), 0x40)
    b[9] = bit.bor(bit.band(b[9], 0x3f), 0x80)
    return string.format("%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", unpack(b))
end

-- A script that times its own units (the pair) counts them here, per thread.
units, bad, samples = 0, 0, {} -- units done, unexpected answers, unit latencies (µs)

local threads = {}

function setup(thread)
    table.insert(threads, thread)
end

function done(summary, latency, requests)
    local n, unexpected, all = 0, 0, {}
    for _, thread in ipairs(threads) do
        n = n + thread:get("units")
        unexpected = unexpected + thread:get("bad")
        for _, v in ipairs(thread:get("samples")) do all[#all + 1] = v end
    end
    local function p(q) return latency:percentile(q) end
    if #all > 0 then
        table.sort(all)
        p = function(q) return all[math.max(1, math.ceil(q / 100 * #all))] end
    end
    local e = summary.errors
    io.write(string.format(
        'GWBENCH {"seconds":%.6f,"requests":%d,"socket_errors":%d,"status_errors":%d,' ..
        '"units":%d,"unexpected":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
        summary.duration / 1e6, summary.requests, e.connect + e.read + e.write + e.timeout, e.status,
        n, unexpected, p(50), p(99), #all > 0 and all[#all] or latency.max))
end
