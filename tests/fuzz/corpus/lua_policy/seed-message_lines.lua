-- A value with a newline was quoted into the message as it is: two lines
-- (issue 13).
rule { name = "r", action = "rate", rate = "a\nb" }
