-- A topology file runs with no instruction limit.
name = "t"
while true do end
