-- The echo side of `luahost bench`.
require "bench_echo"
base.init("Echo")
