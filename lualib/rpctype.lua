-- The argument types of the schema: int8/16/32/48/64, uint8/16/32/64, float,
-- double, bool, string, bytes, array<T>, map<K,V>, named structs, T? (may be
-- nil). Values are checked by the host when a message is sent; these helpers
-- check earlier, where the value is built.
local core = require "luahost.core"

local M = {}

--- The primitive type names.
M.names = {
    "int8", "int16", "int32", "int48", "int64",
    "uint8", "uint16", "uint32", "uint64",
    "float", "double", "bool", "string", "bytes",
}

--- Checks value against a type expression; returns true, or nil and why.
function M.check(ty, value)
    return core.check(ty, value)
end

local function checked(ty, value)
    local ok, err = core.check(ty, value)
    if not ok then error(err, 3) end
    return value
end
-- (build functions call checked without a tail call, so level 3 is the
-- caller of build)

M.Types = {
    array = {
        --- rpctype.Types.array.build("int48", rids): checks every element
        --- and returns the table itself, ready to send.
        build = function(elem, t)
            local v = checked("array<" .. elem .. ">", t)
            return v
        end,
    },
    map = {
        --- rpctype.Types.map.build("string", "int32", t)
        build = function(k, v, t)
            local r = checked("map<" .. k .. "," .. v .. ">", t)
            return r
        end,
    },
}

return M
