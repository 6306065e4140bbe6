-- No ARP spoofing: ARP from the guest must name the guest's own IPv4 address
-- as sender, and its sender hardware address must equal the Ethernet source
-- (checked by a Lua hook reading the ARP header: bytes 22-27). The hook runs
-- in a sandbox of its own: netbe compiles it again from its text here, with
-- the values it captures (GUEST_MAC, GUEST_IP); it does not see this file's
-- globals.
local GUEST_MAC, GUEST_IP = "52:54:00:12:34:56", "10.0.0.2"

settings { default = "pass", fail = "closed" }
rule { name = "arp-other-ip", dir = "from_guest", ethertype = "arp", action = "lua",
       hook = function(pkt)
         if pkt.src_ip ~= GUEST_IP or pkt.src_mac ~= GUEST_MAC then return "drop" end
         for i = 0, 5 do
           if pkt:byte(22 + i) ~= pkt:byte(6 + i) then return "drop" end
         end
         return "pass"
       end }
