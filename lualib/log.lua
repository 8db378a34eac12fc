-- LOG/INFO/WARN/ERROR with printf-style formats. The host prefixes every
-- line with time, level and the node's name.
local core = require "luahost.core"

local M = {}

local function emit(level, fmt, ...)
    local msg
    if select("#", ...) == 0 then
        msg = tostring(fmt)
    else
        local ok, s = pcall(string.format, tostring(fmt), ...)
        msg = ok and s or (tostring(fmt) .. " [bad log format: " .. tostring(s) .. "]")
    end
    core.log(level, msg)
end

--- Debug-level line (hidden unless LUAHOST_LOG=debug).
function M.LOG(fmt, ...) emit(1, fmt, ...) end
--- Info-level line.
function M.INFO(fmt, ...) emit(2, fmt, ...) end
--- Warning line.
function M.WARN(fmt, ...) emit(3, fmt, ...) end
--- Error line.
function M.ERROR(fmt, ...) emit(4, fmt, ...) end

return M
