-- A value with a newline was quoted into the message as it is: two lines
-- (issue 13).
name = "t"
switches = { ["a\nb"] = { type = "bridge" } }
