-- Coroutines: every incoming call, send and event runs in its own coroutine;
-- a remote call, a sleep or a wait suspends only that coroutine.
--
-- The host calls M.dispatch for everything that happens to the node; the
-- kinds and their ids come from the host (core.kinds, host/lua/dispatch.rs).
local core = require "luahost.core"
local log = require "log"

local M = {}

local K = core.kinds
local CALL, SEND, REPLY, TIMER, ONLINE, OFFLINE, EVAL, RELOAD, LOST, STOP =
    K.CALL, K.SEND, K.REPLY, K.TIMER, K.ONLINE, K.OFFLINE, K.EVAL, K.RELOAD, K.LOST, K.STOP
local CLIENT_CALL, CLIENT_SEND, CLIENT = K.CLIENT_CALL, K.CLIENT_SEND, K.CLIENT

local create, resume_raw, yield, running, status =
    coroutine.create, coroutine.resume, coroutine.yield, coroutine.running, coroutine.status
local traceback = debug.traceback
local core_request, core_reply, core_timer = core.request, core.reply, core.timer

local calls = {}                                    -- call id -> coroutine waiting for its reply
local timers = {}                                   -- timer id -> coroutine waiting for it (sleep, wakeup)
local on_timer = {}                                 -- timer id -> function (timer.after/every)
local timeouts = setmetatable({}, { __mode = "k" }) -- coroutine -> call timeout override
local sleepers = setmetatable({}, { __mode = "k" }) -- coroutine -> true while in M.wait

local event = require "event"
local rpcdef, methods, entity_get -- set in M.init (they require rpcco themselves)

local active = 0          -- handlers of incoming calls and sends still running
local stop_handlers = {}  -- base.onStop

-- Coroutine pool: a finished handler's coroutine waits here for the next
-- job instead of being collected (creating one per message costs more than
-- the whole dispatch).
local POOL_MAX = 1024
local pool, npool = {}, 0

local function idle()
    if npool >= POOL_MAX then return nil end
    npool = npool + 1
    pool[npool] = running()
    return yield()
end

local function loop(f, ...)
    if f == nil then return end
    f(...)
    return loop(idle())
end

--- A coroutine that will run f(...) when resumed with (f, ...).
local function take()
    while npool > 0 do
        local co = pool[npool]
        pool[npool] = nil
        npool = npool - 1
        -- a pooled coroutine is suspended in idle(); anything else (user code
        -- resumed it) is not reused
        if status(co) == "suspended" then return co end
    end
    return create(loop)
end

local function resume(co, ...)
    local ok, err = resume_raw(co, ...)
    if not ok then
        log.ERROR("coroutine failed: %s", traceback(co, tostring(err)))
    end
    return ok
end
M.resume = resume

--- Runs fn(...) in a new coroutine now, until it finishes or first suspends.
--- Returns the coroutine (never reused for other work, so it is safe to keep
--- for rpcco.wakeup).
function M.fork(fn, ...)
    local co = create(fn)
    resume(co, ...)
    return co
end

local function need_co(what)
    local co, main = running()
    if main then
        error(what .. " must run inside a coroutine: handlers already do; elsewhere use rpcco.fork", 3)
    end
    return co
end

--- The kinds of error a remote call or send raises; the text of each
--- starts with "<kind>:" ("busy": the peer's send queue is full).
M.KINDS = core.error_kinds -- from the host (rpc::error::KINDS)
local KINDS = M.KINDS

local function kind_of(s)
    for i = 1, #KINDS do
        local k = KINDS[i]
        if s:sub(1, #k + 1) == k .. ":" then return k end
    end
    return nil
end

--- Raises err from the function that called raise: an error of a kind (the
--- host says which: kind is given) as it is, its text starting with the
--- kind; any other error (a wrong argument, say) at the line level levels
--- above that function.
function M.raise(err, level, kind)
    if kind then error(err, 0) end
    error(err, level + 1)
end
local raise = M.raise

local function check(ok, ...)
    if ok then return ... end
    error((...), 0) -- timeout / node down / remote error, as the host wrote it
end

--- Sends method mid to entity eid on server sid. The host decides from the
--- schema whether it is a call: then the current coroutine waits for the
--- reply (or a timeout, or the loss of the peer) and it is returned; a
--- one-way send returns nothing. Used by rpcstub.
function M.request(sid, eid, mid, ...)
    local co, main = running()
    local wait = false -- outside a coroutine nothing can wait for a reply
    if not main then wait = timeouts[co] end -- nil: the cluster's call_timeout
    local id, err, kind = core_request(sid, eid, mid, wait, ...)
    if not id then raise(err, 2, kind) end
    if id == 0 then return end
    calls[id] = co
    return check(yield())
end
M.call = M.request

-- How many coroutines have a timeout of their own (rpcco.timeout): while
-- none has, a stub need not look its coroutine up (rpcstub reads it).
local own = { n = 0 }
M.own_timeouts = own

--- How long coroutine co may wait for a reply: nil for the cluster's
--- call_timeout, or the seconds rpcco.timeout set. (Outside a coroutine
--- nothing can wait: pass false instead.) For stubs that call core.request
--- themselves (rpcstub), with rpcco.await after.
function M.timeout_of(co)
    return timeouts[co]
end

--- The rest of rpcco.request for a stub that called core.request itself:
--- raises its error, or (a call: id > 0) waits for the reply in co.
function M.await(co, id, err, kind)
    -- (a tail call from the stub: level 2 is the stub's caller)
    if not id then raise(err, 2, kind) end
    calls[id] = co
    return check(yield())
end

--- Runs fn(...) with remote calls made by this coroutine timing out after
--- secs seconds instead of the cluster default.
function M.timeout(secs, fn, ...)
    local co = need_co("rpcco.timeout")
    local old = timeouts[co]
    timeouts[co] = secs
    if old == nil then own.n = own.n + 1 end
    local res = table.pack(pcall(fn, ...))
    timeouts[co] = old
    if old == nil then own.n = own.n - 1 end
    if not res[1] then error(res[2], 0) end
    return table.unpack(res, 2, res.n)
end

--- Suspends the current coroutine for secs seconds.
function M.sleep(secs)
    local co = need_co("rpcco.sleep")
    timers[core_timer(secs)] = co
    yield()
end

local early = setmetatable({}, { __mode = "k" }) -- coroutine -> woken before it waited

--- Suspends the current coroutine until rpcco.wakeup(co) is called (returns
--- at once if that already happened since its last wait).
function M.wait()
    local co = need_co("rpcco.wait")
    if early[co] then
        early[co] = nil
        return
    end
    sleepers[co] = true
    yield()
end

--- Resumes a coroutine suspended in rpcco.wait (later, not inside this
--- call). A coroutine not waiting yet returns from its next wait at once.
--- Returns true if it was waiting.
function M.wakeup(co)
    if not sleepers[co] then
        early[co] = true
        return false
    end
    sleepers[co] = nil
    timers[core_timer(0)] = co
    return true
end

--- Registers fn to run (in a new coroutine) when timer id fires.
function M.on_timer(id, fn)
    on_timer[id] = fn
end

--- Forgets the callback of timer id and stops the timer in the host.
function M.cancel_timer(id)
    on_timer[id] = nil
    core.cancel_timer(id)
end

--- The kind of an error raised by a remote call or send: "timeout", "node
--- down", "no such node", "remote error", "busy", or nil for any other
--- error. err is the text as raised, or as re-raised with error(e) (which
--- puts the re-raiser's "file:line: " before it, once per re-raise).
function M.errkind(err)
    if err == nil then return nil end
    local s = tostring(err)
    while true do
        local k = kind_of(s)
        if k then return k end
        -- drop one leading "chunk:line: " (only a position: a kind further
        -- on, inside a message, is not this error's kind)
        local rest = s:match('^%[string ".-"%]:%d+: (.*)$') or s:match("^[^%s:][^\n:]*:%d+: (.*)$")
        if rest == nil then return nil end
        s = rest
    end
end

local function target_of(m, eid)
    if eid == 0 then
        return rpcdef.impl(m.iface)
    end
    return entity_get(eid)
end

local function finish_call(conn, session, mid, m, ok, ...)
    active = active - 1
    if ok then
        local sent, err = core_reply(conn, session, mid, true, ...)
        if not sent then log.ERROR("reply of %s failed: %s", m.full, err) end
    else
        local err = tostring((...))
        core.error_limited("handler", string.format("%s failed: %s", m.full, err))
        core_reply(conn, session, mid, false, m.full .. ": " .. err)
    end
end

local function run_call(conn, session, eid, mid, ...)
    local m = methods[mid]
    local target = target_of(m, eid)
    local fn = target and target[m.name]
    if type(fn) ~= "function" then
        local err = string.format("%s: no handler on entity %d", m.full, eid)
        core.error_limited("nohandler", err)
        core_reply(conn, session, mid, false, err)
        return
    end
    active = active + 1
    return finish_call(conn, session, mid, m, xpcall(fn, traceback, target, ...))
end

local function run_send(eid, mid, ...)
    local m = methods[mid]
    local target = target_of(m, eid)
    local fn = target and target[m.name]
    if type(fn) ~= "function" then
        core.error_limited("nohandler", string.format("send %s to entity %d dropped: no handler", m.full, eid))
        return
    end
    active = active + 1
    local ok, err = xpcall(fn, traceback, target, ...)
    active = active - 1
    if not ok then core.error_limited("handler", string.format("%s failed: %s", m.full, tostring(err))) end
end

--- The metatable of an error a handler raises for its client to see
--- (gate.fail); any other error reaches a client as "internal error".
M.ClientFail = { __tostring = function(e) return "client: " .. e.client_text end }
local ClientFail = M.ClientFail

-- The entity a client's request is for, if the client is still bound to it.
local function client_target(csess, eid)
    local target = entity_get(eid)
    local c = target and target.client
    if c == nil or c.session ~= csess then return nil end
    return target
end

local function finish_client_call(conn, session, mid, m, ok, ...)
    active = active - 1
    if ok then
        local sent, err = core_reply(conn, session, mid, true, ...)
        if not sent then
            log.ERROR("reply of %s to a client failed: %s", m.full, err)
            core_reply(conn, session, mid, false, m.full .. ": bad results")
        end
        return
    end
    local err = ...
    if getmetatable(err) == ClientFail then
        core_reply(conn, session, mid, false, "client: " .. err.client_text)
    else
        core.error_limited("handler", string.format("%s (called by a client) failed: %s", m.full, tostring(err)))
        core_reply(conn, session, mid, false, m.full .. ": " .. tostring(err))
    end
end

local function client_traceback(err)
    if getmetatable(err) == ClientFail then return err end
    return traceback(tostring(err), 2)
end

-- a client's call, relayed by its Gate (csess: its session there)
local function run_client_call(conn, session, csess, eid, mid, ...)
    local m = methods[mid]
    local target = client_target(csess, eid)
    local fn = target and target[m.name]
    if type(fn) ~= "function" then
        core_reply(conn, session, mid, false, "client: this session is not bound to a player here")
        return
    end
    active = active + 1
    return finish_client_call(conn, session, mid, m, xpcall(fn, client_traceback, target, ...))
end

local function run_client_send(csess, eid, mid, ...)
    local m = methods[mid]
    local target = client_target(csess, eid)
    local fn = target and target[m.name]
    if type(fn) ~= "function" then return end
    active = active + 1
    local ok, err = xpcall(fn, client_traceback, target, ...)
    active = active - 1
    if not ok and getmetatable(err) ~= ClientFail then
        core.error_limited("handler", string.format("%s (sent by a client) failed: %s", m.full, tostring(err)))
    end
end

local function run_client_event(...)
    require("gate").event(...)
end

--- Registers fn to run when the node stops gracefully (base.onStop).
function M.on_stop(fn)
    assert(type(fn) == "function", "onStop needs a function")
    stop_handlers[#stop_handlers + 1] = fn
end

local final_handlers = {}

--- Registers fn to run on a graceful stop after every onStop handler (the
--- flush of persistent entities: what the handlers changed is written too).
function M.on_stop_last(fn)
    assert(type(fn) == "function", "on_stop_last needs a function")
    final_handlers[#final_handlers + 1] = fn
end

-- A graceful stop: the host refuses new calls and sends from now on; wait
-- (up to grace seconds) for the handlers still running, then run the onStop
-- handlers in order, in this coroutine.
local function run_stop(grace)
    local t0 = core.now()
    while active > 0 and core.now() - t0 < grace do M.sleep(0.01) end
    if active > 0 then
        log.WARN("%d handlers still running after stop_grace (%.1f s); onStop runs now", active, grace)
    end
    core.stop_phase(1)
    for _, list in ipairs({ stop_handlers, final_handlers }) do
        for _, fn in ipairs(list) do
            local ok, err = xpcall(fn, traceback)
            if not ok then log.ERROR("onStop handler failed: %s", err) end
        end
    end
    core.stop_phase(2)
end

local function publish(ev, ...)
    event.EventMng:publish(ev, ...)
end

local function run_eval(token, code)
    local fn, err = load(code, "=eval")
    if not fn then
        core.eval_done(token, false, err)
        return
    end
    local res = table.pack(xpcall(fn, traceback))
    if res[1] then
        local parts = {}
        for i = 2, res.n do parts[#parts + 1] = tostring(res[i]) end
        core.eval_done(token, true, table.concat(parts, "\t"))
    else
        core.eval_done(token, false, tostring(res[2]))
    end
end

--- The host's single entry point into Lua.
function M.dispatch(kind, a, b, ...)
    if kind == CALL then
        resume(take(), run_call, a, b, ...)
    elseif kind == REPLY then
        local co = calls[a]
        if co then
            calls[a] = nil
            resume(co, b, ...)
        end
    elseif kind == SEND then
        resume(take(), run_send, ...)
    elseif kind == CLIENT_CALL then
        resume(take(), run_client_call, a, b, ...)
    elseif kind == CLIENT_SEND then
        resume(take(), run_client_send, a, b, ...)
    elseif kind == CLIENT then
        resume(take(), run_client_event, a, b, ...)
    elseif kind == TIMER then
        local co = timers[a]
        if co then
            timers[a] = nil
            resume(co, true)
        else
            local fn = on_timer[a]
            if fn then
                on_timer[a] = nil
                resume(take(), fn)
            end
        end
    elseif kind == ONLINE then
        resume(take(), publish, event.Event.Server.Online, a, b, ...)
    elseif kind == OFFLINE then
        resume(take(), publish, event.Event.Server.Offline, a, b, ...)
    elseif kind == LOST then
        -- (sid, type, name, {[method] = count}, cause)
        resume(take(), publish, event.Event.Server.SendsLost, a, b, ...)
    elseif kind == EVAL then
        resume(take(), run_eval, a, b)
    elseif kind == STOP then
        resume(take(), run_stop, a)
    elseif kind == RELOAD then
        -- between messages, on this node's thread; a is a list of changed
        -- files, or nil to reload every module whose file changed
        local done = require("hotfix").reload(a)
        if done ~= "nothing to reload" then core.reloaded(done ~= nil) end
    end
end

--- Installs the dispatcher (base.init calls it).
function M.init()
    rpcdef = require "rpcdef"
    methods = rpcdef.methods -- refilled in place by rpcdef.init, never replaced
    entity_get = (require "entity").Entity.get
    core.set_dispatch(M.dispatch)
end

--- Number of coroutines waiting for a reply or timer (for tests and stats).
function M.waiting_count()
    local n = 0
    for _, waiting in ipairs({ calls, timers }) do
        for _, co in pairs(waiting) do
            if status(co) == "suspended" then n = n + 1 end
        end
    end
    return n
end

return M
