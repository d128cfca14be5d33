-- bench/wrk_post.lua - wrk's POST of one event per request, expected revision
-- any, one stream per wrk thread ("<prefix>-<thread>", the prefix from the
-- script's first argument). No request() function, so wrk builds each
-- thread's request once, as for the no-op GET: the same client cost on both
-- sides. Used by bench/run_wire.sh and bench/wire_cost.sh.
local nthreads = 0
function setup(thread)
    thread:set("tid", nthreads)
    nthreads = nthreads + 1
end
function init(args)
    wrk.method = "POST"
    wrk.path = "/streams/" .. (args[1] or "w") .. "-" .. tid
    wrk.headers["Content-Type"] = "application/json"
    wrk.body = '[{"type":"BenchEvent","data":{"customer":"c-0001","total":4200,"currency":"EUR",' ..
        '"items":[{"sku":"sku-1","qty":1},{"sku":"sku-2","qty":2}],"note":"' ..
        string.rep("x", 64) .. '"}}]'
end
