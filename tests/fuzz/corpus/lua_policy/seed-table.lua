-- A policy as a returned table, with a hook that captures values, every
-- setting, and each kind of match.
local ssh, limit = 22, "10mbit"
return {
  default = "drop", fail = "open", hook_budget = 5000, hook_memory = "64 kb",
  rules = {
    { name = "ssh", dir = "to_guest", proto = "tcp", dport = ssh, tcp_flags = "syn,!ack" },
    { name = "web", proto = "tcp", dport = { 80, 443 }, action = "count" },
    { name = "lan", src_ip = "10.0.0.0/8", dst_ip = "10.0.0.0/8", ethertype = "ipv4" },
    { name = "v6", src_ip = "fe80::/10", proto = "icmpv6", icmp_type = "neighbor-solicit" },
    { name = "mac", src_mac = "52:54:00:00:00:00/24", dst_mac = "ff:ff:ff:ff:ff:ff" },
    { name = "tagged", vlan = 20, len = { 60, 1518 } },
    { name = "slow", action = "rate", rate = limit, burst = "64kb" },
    { name = "pps", action = "rate", rate = "1000pps", burst = 10 },
    { name = "hook", action = "lua", hook = function(pkt)
        if pkt.dport == ssh and pkt:byte(0) == 0x52 then return "drop" end
        return pkt.len > 1500 and "pass" or nil
      end },
    { name = "all", action = "pass" },
  },
}
