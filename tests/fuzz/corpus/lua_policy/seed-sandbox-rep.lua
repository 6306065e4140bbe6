-- A C library call runs unbounded in the policy file: the instruction
-- limit counts it as one.
local s = string.rep("", math.maxinteger)
rule { name = "r" }
