-- The DB node of `luahost bench db`: its cluster entry has the store.
base.init("DB")
bench = require "benchlib"
