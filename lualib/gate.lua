-- Game clients (docs/protocol.md), as Lua sees them.
--
-- On every node:
--   gate.token(account, ttl)        a login token a Gate accepts
--   gate.onLogin(fn)                backend: fn(client, old_entity) -> entity | nil, reason
--   entity:setClient(client)        the entity owns the client: entity.client.<push>(...)
--   entity:giveClientTo(mailbox)    hand the client to another entity (any node)
--   gate.fail(text)                 raise from a client-called handler: the client sees text
-- On a Gate node:
--   gate.backendType                server type clients are bound to ("Hall")
--   gate.onVerify(fn)               fn(account, addr, token?) -> true | false, reason
--   gate.onBackendLost(fn)          fn(session, account, sid) -> "rebind" | "close"
--   gate.onWebLogin(fn)             fn(account, password, addr) -> true | false, reason
--
-- The Gate and its backends talk through the built-in static interface
-- ClientCtl (rpcdef adds it to every schema): bind, adopt, lost (to the
-- backend), kick, give (to the Gate).
local core = require "luahost.core"
local rpcdef = require "rpcdef"
local rpcstub = require "rpcstub"
local rpcco = require "rpcco"
local log = require "log"

local M = {}

M.backendType = "Hall"

local hooks = {}
local clients = {} -- backend: account -> the client bound here
local replaced = {} -- Gate: account -> the session a login in progress replaced

--- A login token for account, valid ttl seconds (default 3600). Works on
--- every node of the cluster (it is signed with a key from the cluster
--- secret) and is checked by Gates without a round trip.
function M.token(account, ttl)
    if type(account) ~= "string" then error("gate.token: account must be a string", 2) end
    local t, err = core.gate_token(account, ttl or 3600)
    if not t then error(err, 2) end
    return t
end

--- Raises an error whose text the calling client sees (any other error in
--- a handler a client called reaches it as "internal error").
function M.fail(text)
    error(setmetatable({ client_text = tostring(text) }, rpcco.ClientFail), 2)
end

--- Gate: its counters and what it holds now (see docs/architecture.md,
--- "Game clients"): accepted, verified, refused, resumed, replaced, faults,
--- busy, sessions, conns, queued (bytes not yet written to clients). nil on
--- a node that is not a Gate.
function M.stats()
    return core.gate_stats()
end

--- Backend: fn(client, old_entity) is called when a client is bound to this
--- node; it returns the entity that owns the client (which gets
--- entity.client), or nil and a reason to refuse the login. old_entity is
--- the entity of the account's previous session on this node, if any (a
--- quick reconnect or a second device): returning it keeps the player.
function M.onLogin(fn)
    assert(type(fn) == "function", "gate.onLogin needs a function")
    hooks.login = fn
end

--- Gate: fn(account, addr, token) decides whether a client may log in
--- (return false, reason to refuse). With `verify = "token"` (the default)
--- the token was checked already and is not passed; with `verify = "lua"`
--- in the Gate's cluster entry this hook alone decides, given the token the
--- client sent (a custom login: it runs in a coroutine and may call a
--- backend to check it).
function M.onVerify(fn)
    assert(type(fn) == "function", "gate.onVerify needs a function")
    hooks.verify = fn
end

--- Gate: fn(session, account, sid) decides what happens to a client whose
--- server went offline: "rebind" (default: bound again through the router,
--- the entity being created anew there) or "close".
function M.onBackendLost(fn)
    assert(type(fn) == "function", "gate.onBackendLost needs a function")
    hooks.backend_lost = fn
end

--- Gate: fn(account, password, addr) decides a browser's login on the web
--- listener (POST /luahost/login; gate.http in the cluster file): true,
--- and the browser gets a login token for account (valid one hour); false,
--- reason to refuse. It runs in a coroutine and may call other nodes
--- (within call_timeout). Never log the password.
function M.onWebLogin(fn)
    assert(type(fn) == "function", "gate.onWebLogin needs a function")
    hooks.web_login = fn
end

local function ctl(sid)
    return rpcstub.mailbox(rpcdef.rpcStaticServer.ClientCtl, sid, 0)
end

-- Client mailboxes ---------------------------------------------------------

local Client = {}

local function client_method(c, m)
    return function(...)
        if m.removed then error(m.full .. " is no longer in the schema", 2) end
        local ok, err, kind = core.push(c.gate, c.session, m.id, ...)
        if not ok then rpcco.raise(err, 2, kind) end
    end
end

Client.__index = function(c, name)
    local cls = rawget(c, "class")
    local iface = cls and rpcdef.clientIface(cls)
    local m = iface and iface[name]
    if m == nil then
        error(string.format("no client method '%s' for %s", tostring(name), tostring(cls)), 2)
    end
    local f = client_method(c, m)
    rawset(c, name, f)
    return f
end

local function new_client(account, session, gatesid, stamp)
    return setmetatable({ account = account, session = session, gate = gatesid, stamp = stamp }, Client)
end

--- Pushes client method `name` to every client of accounts (a list) on
--- every Gate, in one message per Gate. class is the entity class whose
--- Client section declares the method.
function M.broadcast(class, name, accounts, ...)
    local m = rpcdef.clientIface(class)[name]
    if m == nil then error(string.format("no client method '%s' for %s", tostring(name), tostring(class)), 2) end
    local router = require "router"
    for _, sid in ipairs(router.list(rpcdef.ServerType.Gate)) do
        local ok, err, kind = core.push(sid, accounts, m.id, ...)
        if not ok then rpcco.raise(err, 2, kind) end
    end
end

-- Entity methods (the base class of every entity gets them)

local Entity = (require "entity").Entity

--- The entity owns client: client calls reach it, entity.client.<m>(...)
--- pushes to it. The entity's class must be declared with its schema name:
--- declareObject(Player, Entity, "Player").
function Entity:setClient(client)
    local mt = getmetatable(self)
    local cls = mt and rawget(mt, "__name")
    if type(cls) ~= "string" then
        error("setClient: the entity's class has no name; declare it with declareObject(cls, Entity, \"ClassName\")", 2)
    end
    rawset(client, "class", cls)
    client.eid = self.eid
    client.entity = self
    self.client = client
end

--- Hands this entity's client to the entity behind mailbox mb (on any
--- node): that entity gets entity.client and the client's calls from now
--- on; this one loses it. Must run in a coroutine (it waits for the other
--- node).
function Entity:giveClientTo(mb)
    local c = self.client
    if c == nil then error("giveClientTo: this entity has no client", 2) end
    local sid, eid = rawget(mb, "__from"), rawget(mb, "__eid")
    if sid == nil or eid == nil then error("giveClientTo: mb must be an entity mailbox", 2) end
    local ok, why = ctl(sid).adopt(c.session, c.account, c.gate, c.stamp, eid)
    if not ok then error("giveClientTo: refused: " .. tostring(why), 2) end
    ctl(c.gate).give(c.session, sid, eid)
    self.client = nil
    if clients[c.account] == c then clients[c.account] = nil end
end

-- ClientCtl: the built-in interface between Gates and backends -------------

local Ctl = {}

local function newer(a_stamp, a_session, b_stamp, b_session)
    if a_stamp ~= b_stamp then return a_stamp > b_stamp end
    return a_session > b_session
end

-- backend: a Gate binds a verified client here
function Ctl:bind(session, account, gatesid, stamp)
    local cur = clients[account]
    if cur and cur.session ~= session and newer(cur.stamp, cur.session, stamp, session) then
        return 0, "replaced", "a newer login of this account is active"
    end
    local old_entity
    if cur and cur.session ~= session then
        -- the newest login wins: the older session's Gate closes it (its
        -- own Gate already did when it is the same one)
        if cur.gate ~= gatesid then ctl(cur.gate).kick(cur.session, "replaced", "a newer login of this account took over") end
        old_entity = cur.entity
        if old_entity and old_entity.client == cur then old_entity.client = nil end
    end
    if hooks.login == nil then
        return 0, "no_backend", "this server takes no clients (no gate.onLogin)"
    end
    local client = new_client(account, session, gatesid, stamp)
    local ok, ent, why = xpcall(hooks.login, debug.traceback, client, old_entity)
    if not ok then
        log.ERROR("gate.onLogin failed for %s: %s", account, tostring(ent))
        return 0, "refused", "internal error"
    end
    if ent == nil then return 0, "refused", tostring(why or "refused") end
    if ent.client ~= client then ent:setClient(client) end
    clients[account] = client
    return ent.eid, "", ""
end

-- backend: an entity on another node hands its client to entity eid here
function Ctl:adopt(session, account, gatesid, stamp, eid)
    local ent = (require "entity").Entity.get(eid)
    if ent == nil then return false, "no entity " .. eid end
    local client = new_client(account, session, gatesid, stamp)
    ent:setClient(client)
    clients[account] = client
    if ent.onClientGiven then ent:onClientGiven(client) end
    return true, ""
end

-- backend: the client of session is gone (no resume in time, or replaced)
function Ctl:lost(session, account, reason)
    local cur = clients[account]
    if cur == nil or cur.session ~= session then return end
    clients[account] = nil
    local ent = cur.entity
    if ent and ent.client == cur then
        ent.client = nil
        if ent.onClientLost then ent:onClientLost(reason) end
    end
end

-- Gate: a backend ends a session, or moves it
function Ctl:kick(session, code, text)
    core.gate_kick(session, code, text)
end

function Ctl:give(session, sid, eid)
    core.gate_bind(session, sid, eid)
end

--- Backend: ends client's session: its Gate sends it a `kicked` notice
--- with text and closes it; the entity forgets the client
--- (onClientLost("kicked")).
function M.kick(client, text)
    ctl(client.gate).kick(client.session, "kicked", tostring(text or "kicked"))
    Ctl.lost(nil, client.session, client.account, "kicked")
end

--- Backend: the client bound here for account, if any.
function M.client(account)
    return clients[account]
end

-- The Gate's side ------------------------------------------------------------

local function bind(session, account)
    local router = require "router"
    local stype = rpcdef.ServerType[M.backendType]
    if stype == nil then return nil, "no_backend", "no server type " .. tostring(M.backendType) end
    local sid = router.route(stype, account)
    if sid == nil then return nil, "no_backend", "no " .. M.backendType .. " server is online" end
    local stamp = math.floor(core.time() * 1000)
    local ok, eid, code, text = pcall(ctl(sid).bind, session, account, core.sid(), stamp)
    if not ok then
        log.WARN("binding %s to sid %d failed: %s", account, sid, tostring(eid))
        return nil, "no_backend", "the server did not answer"
    end
    if code ~= "" then return nil, code, text end
    return sid, eid
end

local function on_login(session, account, addr, token, lua_verify)
    if lua_verify and hooks.verify == nil then
        -- verify = "lua" in the cluster file, and nothing to check with
        return core.gate_refuse(session, "refused", "this Gate checks logins in Lua, and has no gate.onVerify")
    end
    if hooks.verify then
        local ok, allowed, why = xpcall(hooks.verify, debug.traceback, account, addr, token)
        if not ok then
            log.ERROR("gate.onVerify failed: %s", tostring(allowed))
            return core.gate_refuse(session, "refused", "internal error")
        end
        if not allowed then return core.gate_refuse(session, "refused", tostring(why or "refused")) end
    end
    local sid, eid, text = bind(session, account)
    -- the session this login replaced: its backend forgets it, unless the
    -- new one went to the same backend (which then keeps the player)
    local old = replaced[account]
    replaced[account] = nil
    if old and old.sid ~= sid then ctl(old.sid).lost(old.session, account, "replaced") end
    if sid == nil then return core.gate_refuse(session, eid, text) end
    local ok, err = core.gate_accept(session, sid, eid)
    if not ok then
        -- the client left while it was being bound
        ctl(sid).lost(session, account, "gone")
        log.LOG("client %s left during login: %s", account, err)
    end
end

local function on_backend_lost(session, account, sid)
    local what = "rebind"
    if hooks.backend_lost then what = hooks.backend_lost(session, account, sid) end
    if what ~= "rebind" then
        core.gate_kick(session, "backend_lost", "the server holding this session was lost")
        return
    end
    core.gate_notice(session, "backend_lost", "the server holding this session was lost; binding again")
    local new_sid, eid = bind(session, account)
    if new_sid == nil then
        core.gate_kick(session, "backend_lost", "no server could take this session")
        return
    end
    core.gate_bind(session, new_sid, eid)
    core.gate_notice(session, "rebound", "bound to a new server")
end

local function on_web_login(id, account, password, addr)
    if hooks.web_login == nil then
        return core.gate_web_reply(id, false, "this Gate has no web login (gate.onWebLogin)", 404)
    end
    local ok, allowed, why = xpcall(hooks.web_login, debug.traceback, account, password, addr)
    if not ok then
        log.ERROR("gate.onWebLogin failed: %s", tostring(allowed))
        return core.gate_web_reply(id, false, "internal error", 500)
    end
    if allowed then
        core.gate_web_reply(id, true)
    else
        core.gate_web_reply(id, false, tostring(why or "refused"))
    end
end

-- (event, session, account, sid, eid, extra...) from the host; a web
-- login is ("web_login", request_id, account, password, addr)
function M.event(event, session, account, sid, eid, extra, token, mode)
    if event == "web_login" then
        on_web_login(session, account, sid, eid)
    elseif event == "login" then
        on_login(session, account, extra, token, mode == "lua")
    elseif event == "lost" then
        if sid then ctl(sid).lost(session, account, event) end
    elseif event == "replaced" then
        -- a login of the same account follows at once (see on_login)
        if sid then replaced[account] = { session = session, sid = sid } end
    elseif event == "backend_lost" then
        on_backend_lost(session, account, sid)
    end
end

--- Installs ClientCtl (base.init calls it).
function M.init()
    rpcdef.implements("ClientCtl", Ctl)
end

return M
