-- Hot reload in place.
--
-- hotfix.reload(paths) reloads the loaded modules whose files are in paths
-- (all changed ones when paths is nil), all together or not at all:
--
-- 1. Every changed file is compiled; a syntax error stops the reload.
-- 2. Every chunk runs in a sandbox: globals and every table reached through
--    them are shadowed, so what a chunk writes lands in shadows, not in the
--    live tables. A chunk that raises stops the reload. (Calls a chunk makes
--    to real functions at load time - timers, sends - do happen.)
-- 3. Only when all chunks ran are the shadows merged into the live tables:
--    * the module table and every class table keep their identity;
--    * functions are replaced (instances see new methods at once);
--    * keys that did not exist are added;
--    * existing non-function values (data) are kept;
--    * a new function's upvalues that are data and share a name with an
--      upvalue of the old code (a `local count`) are joined to the old
--      ones, so the value survives; local helper functions are the new code.
--      A changed initial value of such a local is therefore not applied.
-- 4. A module may define __reload(module) to migrate its data; it runs
--    after the merge.
-- Coroutines suspended in old code finish in it; their next call through a
-- table gets the new code. The main script of a node is not reloaded.
--
-- A data module, declared with hotfix.data(name, accept), is not merged:
-- its new table goes to accept before anything is applied, then replaces
-- the contents of the live table. base.init declares the schema, entitydef,
-- so, with rpcdef.init as accept.
local core = require "luahost.core"
local log = require "log"

local M = {}

local stamps = {}   -- real path -> mtime when last loaded
local data = {}     -- module name -> accept(new) of a data module
local shadow_orig = setmetatable({}, { __mode = "k" }) -- shadow -> original, during a reload

--- The live table behind t when t is a shadow made during a reload.
function M.original(t)
    return shadow_orig[t] or t
end

local function loaded_modules()
    local mods = {}
    for name, mod in pairs(package.loaded) do
        -- (modules of the lualib built into the binary have no file)
        if type(name) == "string" and type(mod) == "table" and not name:find("^luahost")
            and not core.builtin_lualib(name) then
            local p = package.searchpath(name, package.path)
            if p then
                local real = core.realpath(p) or p
                mods[real] = { name = name, path = p }
            end
        end
    end
    return mods
end

--- Makes module name a data module: when its file changes, its new table
--- (a plain copy, nothing shared with the reload's sandbox) is passed to
--- accept(new) once every changed chunk has run and before anything is
--- applied; accept raises to refuse the whole reload, and may apply the new
--- data itself (rpcdef.init does). Then the live module table keeps its
--- identity and gets exactly the new contents: values are replaced, not
--- merged (a merge keeps old data). Data modules are accepted in name
--- order, so a later one that refuses leaves an earlier one accepted.
function M.data(name, accept)
    assert(type(name) == "string", "hotfix.data: name must be a module name")
    assert(type(accept) == "function", "hotfix.data: accept must be a function")
    data[name] = accept
end

--- Records the file times of every loaded module (base.init calls it).
function M.snapshot()
    for real in pairs(loaded_modules()) do
        stamps[real] = stamps[real] or core.mtime(real)
    end
end

local function new_ctx()
    local ctx = { shadows = {}, orig = {}, replaced = 0, pairs = {}, newmods = {} }
    return ctx
end

local function shadow(t, ctx)
    local s = ctx.shadows[t]
    if s then return s end
    s = {}
    ctx.shadows[t] = s
    ctx.orig[s] = t
    shadow_orig[s] = t
    setmetatable(s, {
        __index = function(sh, k)
            local v = t[k]
            if type(v) == "table" then
                v = shadow(v, ctx)
                rawset(sh, k, v)
            end
            return v
        end,
    })
    return s
end

local function translate(v, ctx)
    if type(v) == "table" then
        return ctx.orig[v] or ctx.newmods[v] or v
    end
    return v
end

-- Replaces shadows by their live tables inside a table the chunk created
-- (keys, values, nested tables, metatables).
local function fix_new_table(t, ctx, seen)
    if seen[t] then return end
    seen[t] = true
    local fixed = {}
    for k, v in next, t do
        local tk, tv = translate(k, ctx), translate(v, ctx)
        if type(tv) == "table" and not ctx.orig[v] and not ctx.newmods[v] then
            fix_new_table(tv, ctx, seen)
        end
        fixed[tk] = tv
    end
    for k in next, fixed do rawset(t, k, nil) end
    for k in next, t do rawset(t, k, nil) end
    for k, v in next, fixed do rawset(t, k, v) end
    local mt = getmetatable(t)
    if type(mt) == "table" then
        if ctx.orig[mt] then
            setmetatable(t, ctx.orig[mt])
        else
            fix_new_table(mt, ctx, seen)
        end
    end
end

local function merge(src, dst, ctx, seen)
    if seen[src] then return end
    seen[src] = true
    for k, v in next, src do
        local old = rawget(dst, k)
        local tk = translate(k, ctx)
        if type(v) == "function" then
            if old ~= v then
                rawset(dst, tk, v)
                ctx.replaced = ctx.replaced + 1
                if type(old) == "function" then ctx.pairs[#ctx.pairs + 1] = { old, v } end
            end
        elseif type(v) == "table" and ctx.orig[v] then
            local o = ctx.orig[v]
            merge(v, o, ctx, seen)
            if old ~= o then rawset(dst, tk, o) end
        elseif type(v) == "table" and ctx.newmods[v] then
            if old == nil then rawset(dst, tk, ctx.newmods[v]) end
        elseif type(v) == "table" then
            if type(old) == "table" then
                merge(v, old, ctx, seen)
            elseif old == nil then
                -- a new table: fix references to shadows anywhere inside it
                fix_new_table(v, ctx, {})
                rawset(dst, tk, v)
            end
        elseif old == nil then
            rawset(dst, tk, v)
        end
    end
end

-- True for Lua functions defined in one of the files being reloaded: only
-- those are walked (never library code, other modules or C closures).
local function ours(f, ctx)
    local info = debug.getinfo(f, "S")
    return info.what == "Lua" and ctx.sources[info.source] == true
end

-- Calls visit(f, i, name, value) for every upvalue of f and, depth first,
-- of the functions in them, for functions of the reloaded files only.
local function walk_upvalues(f, ctx, seen, visit)
    if seen[f] or not ours(f, ctx) then return end
    seen[f] = true
    local i = 1
    while true do
        local name, value = debug.getupvalue(f, i)
        if not name then break end
        if type(value) == "function" then
            walk_upvalues(value, ctx, seen, visit)
        else
            visit(f, i, name, value)
        end
        i = i + 1
    end
end

-- name -> {f, index} of data upvalues of the old code
local function collect_old_upvalues(ctx)
    local map, seen = {}, {}
    local function walk(f)
        walk_upvalues(f, ctx, seen, function(g, i, name)
            if name ~= "_ENV" and map[name] == nil then map[name] = { g, i } end
        end)
    end
    for _, p in ipairs(ctx.pairs) do walk(p[1]) end
    return map
end

local function fix_new_functions(ctx, roots, sandbox)
    local olds = collect_old_upvalues(ctx)
    local seen = {}
    local function walk(f)
        walk_upvalues(f, ctx, seen, function(g, i, name, value)
            if name == "_ENV" and value == sandbox then
                debug.setupvalue(g, i, _G)
            elseif type(value) == "table" and (ctx.orig[value] or ctx.newmods[value]) then
                debug.setupvalue(g, i, translate(value, ctx))
            elseif olds[name] then
                debug.upvaluejoin(g, i, olds[name][1], olds[name][2])
            end
        end)
    end
    local tseen = {}
    local function walk_table(t)
        if tseen[t] then return end
        tseen[t] = true
        if ctx.shadows[t] then return end -- a live table: not the chunk's
        for _, v in next, t do
            if type(v) == "function" then
                walk(v)
            elseif type(v) == "table" then
                walk_table(v)
            end
        end
    end
    for _, r in ipairs(roots) do
        if type(r) == "function" then walk(r) else walk_table(r) end
    end
    for _, p in ipairs(ctx.pairs) do walk(p[2]) end
    for s in pairs(ctx.orig) do walk_table(s) end
end

local function log_error(msg)
    log.ERROR("hot reload refused, old code stays: %s", msg)
end

-- A copy of t sharing nothing with the reload's shadows: a shadow's copy
-- holds what the chunk wrote and what its live table holds.
local function plain_copy(t, ctx, seen)
    if type(t) ~= "table" then return t end
    if seen[t] then return seen[t] end
    local c = {}
    seen[t] = c
    for k, v in next, t do c[k] = plain_copy(v, ctx, seen) end
    local orig = ctx.orig[t]
    if orig then
        for k, v in pairs(orig) do
            if rawget(c, k) == nil then c[k] = plain_copy(v, ctx, seen) end
        end
    end
    return c
end

-- After a reload (applied or refused), every shadow becomes a pass-through
-- to its live table, so anything that kept one (a closure registered while
-- a chunk ran, a table it built) reads and writes the live state.
local function retire(ctx)
    for s, orig in pairs(ctx.orig) do
        for k in next, s do rawset(s, k, nil) end
        setmetatable(s, { __index = orig, __newindex = orig })
        shadow_orig[s] = nil
    end
end

--- Reloads the modules whose files are in paths (a list of file paths), or
--- every loaded module whose file changed when paths is nil. Returns a
--- summary, or nil and the error (the old code then stays in force).
function M.reload(paths)
    local t0 = core.now()
    local mods = loaded_modules()
    local todo = {}
    if paths then
        for _, p in ipairs(paths) do
            local real = core.realpath(p) or p
            if mods[real] then
                todo[#todo + 1] = mods[real]
                mods[real].real = real
            elseif real == (core.realpath(conf.MainScript) or conf.MainScript) then
                log.WARN("main script %s changed: restart the node to apply it", p)
            end
        end
    else
        for real, m in pairs(mods) do
            local mt = core.mtime(real)
            if mt and mt ~= stamps[real] then
                m.real = real
                todo[#todo + 1] = m
            end
        end
    end
    if #todo == 0 then return "nothing to reload" end
    table.sort(todo, function(a, b) return a.name < b.name end)

    -- 1. compile everything
    local ctx = new_ctx()
    ctx.sources = {}
    for _, m in ipairs(todo) do ctx.sources["@" .. m.path] = true end
    local sandbox = shadow(_G, ctx)
    for _, m in ipairs(todo) do
        local f, text = io.open(m.real, "rb")
        if not f then
            log_error(tostring(text))
            return nil, text
        end
        text = f:read("a")
        f:close()
        local chunk, err = load(text, "@" .. m.path, "t", sandbox)
        if not chunk then
            log_error(err)
            retire(ctx)
            return nil, err
        end
        m.chunk = chunk
    end
    -- 2. run every chunk in the sandbox
    local roots = {}
    for _, m in ipairs(todo) do
        local ok, res = xpcall(m.chunk, debug.traceback, m.name, m.path)
        if not ok then
            log_error(res)
            retire(ctx)
            return nil, res
        end
        if res == nil then res = rawget(package.loaded, m.name) end
        m.new = res
        roots[#roots + 1] = m.chunk
    end
    -- data modules: accepted (or the reload refused) before anything is changed
    for _, m in ipairs(todo) do
        local accept = data[m.name]
        if accept then
            m.data = plain_copy(m.new, ctx, {})
            local ok, err = pcall(accept, m.data)
            if not ok then
                log_error(err)
                retire(ctx)
                return nil, err
            end
        end
    end
    -- 3. merge
    for _, m in ipairs(todo) do
        local live = package.loaded[m.name]
        if type(m.new) == "table" and type(live) == "table" and m.new ~= live then
            ctx.newmods[m.new] = live
        end
    end
    local seen = {}
    for _, m in ipairs(todo) do
        local live = package.loaded[m.name]
        if m.data ~= nil then
            if type(m.data) == "table" then
                for k in pairs(live) do live[k] = nil end
                for k, v in pairs(m.data) do live[k] = v end
            end
        elseif type(m.new) == "table" and type(live) == "table" then
            merge(m.new, live, ctx, seen)
        end
    end
    merge(sandbox, _G, ctx, seen)
    for _, m in ipairs(todo) do
        if type(m.new) == "table" then roots[#roots + 1] = m.new end
    end
    fix_new_functions(ctx, roots, sandbox)
    -- 4. hooks
    local names = {}
    for _, m in ipairs(todo) do
        names[#names + 1] = m.name
        stamps[m.real] = core.mtime(m.real)
        local live = package.loaded[m.name]
        local hook = type(live) == "table" and rawget(live, "__reload")
        if type(hook) == "function" then
            local ok, err = xpcall(hook, debug.traceback, live)
            if not ok then log.ERROR("%s.__reload failed: %s", m.name, err) end
        end
    end
    retire(ctx)
    local summary = string.format("hot reload: %s; %d functions replaced; %.1f ms",
        table.concat(names, ", "), ctx.replaced, (core.now() - t0) * 1000)
    log.INFO("%s", summary)
    return summary
end

return M
