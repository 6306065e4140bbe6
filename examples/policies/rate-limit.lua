-- A per-VM rate limit: 100 Mbit/s each way, with a 256 KiB burst. Frames
-- over the limit are dropped (policing); the rest go on to the next rules.
settings { default = "pass" }
rule { name = "limit-out", dir = "from_guest", action = "rate", rate = "100mbit",
       burst = "256kb" }
rule { name = "limit-in", dir = "to_guest", action = "rate", rate = "100mbit",
       burst = "256kb" }
