-- Handed to netbe.policy_new as it is: lb_torule kept a pointer into the
-- string Lua made of the number and popped (issue 13).
local rules = {}
for i = 1, 200 do rules[i] = { name = 1000000 + i, action = 0 } end
return { default = 0, fail = 1, rules = rules }
