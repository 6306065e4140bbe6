-- A value with a newline, quoted into the message as it is.
name = "t"
switches = { ["a\nb"] = { type = "bridge" } }
