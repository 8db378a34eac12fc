-- The prelude every node runs before its main script: it makes the names of
-- seed 000 global so that game scripts read as they always have, and no
-- other name (the host adds conf). The rest of lualib is reached by
-- require: local rpcco = require "rpcco" (also timer, hotfix, ...).
local log = require "log"
LOG, INFO, WARN, ERROR = log.LOG, log.INFO, log.WARN, log.ERROR

local entity = require "entity"
Entity = entity.Entity
declareObject = entity.declareObject

local event = require "event"
EventMng = event.EventMng
Event = event.Event

rpctype = require "rpctype"
rpcdef = require "rpcdef"
rpcstub = require "rpcstub"
router = require "router"
base = require "base"
DBProxy = require "dbproxy"

--- Classes of global entities, by name; scripts fill them before base.init.
Global = Global or {}

--- The schema's server types: rpcdef's table, which rpcdef.init fills and
--- keeps (a change of types needs a restart). Filled now when the schema is
--- on the path, so that scripts may use ServerType before base.init.
ServerType = rpcdef.ServerType
if package.searchpath("entitydef", package.path) then
    local types = require("entitydef").ServerType
    if type(types) == "table" then rpcdef.declareTypes(types) end
end
