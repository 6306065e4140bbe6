-- ... and no memory limit (issue 13).
name = "t"
local s = "x"
for i = 1, 40 do s = s .. s end
