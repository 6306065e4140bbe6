-- The policy file replaced the CLI's own string.match: normalize_rule
-- looped (issue 13).
string.match = function() while true do end end
rule { name = "r" }
