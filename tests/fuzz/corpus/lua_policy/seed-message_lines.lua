-- A value with a newline, quoted into the message as it is.
rule { name = "r", action = "rate", rate = "a\nb" }
