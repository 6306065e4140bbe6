-- A C library call ran unbounded in the policy file: the instruction
-- limit counted it as one (issue 13).
local s = string.rep("", math.maxinteger)
rule { name = "r" }
