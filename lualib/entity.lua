-- Entities: objects addressed by an entity id (eid) on their node, and the
-- small class helper declareObject of seed 000.
local M = {}

local entities = {}

--- The base class of every entity.
local Entity = {}
Entity.__index = Entity
M.Entity = Entity

--- Registers obj under eid on this node; messages to (this node, eid) reach it.
function Entity.set(eid, obj)
    assert(math.type(eid) == "integer", "Entity.set: eid must be an integer")
    entities[eid] = obj
end

--- The entity registered under eid, or nil.
function Entity.get(eid)
    return entities[eid]
end

--- How many entities are registered on this node.
function M.count()
    local n = 0
    for _ in pairs(entities) do
        n = n + 1
    end
    return n
end

--- Forgets the entity registered under eid.
function Entity.remove(eid)
    entities[eid] = nil
end

--- Makes cls a class deriving from base (default Entity) and gives it
--- cls.new(sid, flags, eid, ...), which builds an instance with fields
--- sid and eid and calls instance:__init(...) when the class has one.
--- name, when given, is the class's name in the schema (entitydef.Entity),
--- which an entity owning a client needs (gate: entity:setClient).
--- The class table keeps its identity, so hot reload can patch it in place.
function M.declareObject(cls, base, name)
    base = base or Entity
    cls.__index = cls
    if name ~= nil then
        assert(type(name) == "string", "declareObject: name must be a string")
        cls.__name = name
    end
    local mt = getmetatable(cls)
    if mt == nil then
        setmetatable(cls, { __index = base })
    elseif mt.__index == nil then
        mt.__index = base
    end
    cls.new = function(sid, flags, eid, ...)
        local o = setmetatable({ sid = sid, flags = flags, eid = eid }, cls)
        if o.__init then o:__init(...) end
        return o
    end
    return cls
end

return M
