-- A topology file ran with no instruction limit (issue 13).
name = "t"
while true do end
