/*
** netbe.h: the host side of a virtual NIC, for virtual machine managers.
**
** This header is the manual. netbe opens a network backend (a tap, a socket
** that speaks QEMU's and passt's wire format, user-mode NAT, ...) from a
** bhyve-style config and moves Ethernet frames through it. Receive readiness
** is delivered on the embedder's libevent event_base; the library starts no
** threads of its own and never exits, aborts or prints on its own.
**
** Conventions for every call below:
**   - Calls that can fail return 0 (or a count) on success and a negative
**     errno value on failure. Calls that take `char *err, size_t errlen`
**     write a one-line message there naming the bad input and what was
**     expected; err may be NULL.
**   - Handles are opaque. Whoever creates a handle frees it with the
**     matching _free or _close call; passing NULL to those is a no-op.
**   - Frames are passed as iovecs. Every frame starts with the virtio-net
**     header at the length the frontend chose with netbe_set_cap() (0 by
**     default: plain Ethernet frames).
*/
#ifndef NETBE_H
#define NETBE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct event_base;

/* Largest frame any backend moves: a 64 KiB GSO frame plus Ethernet and VLAN
** headers, not counting the virtio-net header. */
#define NETBE_MAX_FRAME  (65535 + 14 + 4)
/* Size of an error buffer that never truncates a netbe message. */
#define NETBE_ERRMAX     256

/* ====================================================================
** Configuration
** ====================================================================
** A config is an ordered set of key/value strings. It is built from
** bhyve's legacy string "BACKEND[,key[=value]]..." or key by key.
** The first field of a legacy string is stored as key "backend"; a bare
** key means "true" (bhyve's convention). Which backend opens is chosen
** by the "type" key if present, else by the longest backend prefix of
** "backend" ("tap0" -> tap, "vale0:1" -> vale, "ngd3" -> ngd).
*/
typedef struct netbe_config netbe_config;

/* A new, empty config, or NULL when out of memory. */
netbe_config *netbe_config_new(void);
void netbe_config_free(netbe_config *cfg);

/* Set KEY to VALUE (copied); VALUE NULL means "true". A key set twice
** keeps the last value. Returns 0 or -EINVAL for an empty key. */
int netbe_config_set(netbe_config *cfg, const char *key, const char *value);

/* The value of KEY, or NULL. The string belongs to CFG. */
const char *netbe_config_get(const netbe_config *cfg, const char *key);

/* Number of keys, and the I-th key and value in insertion order
** (NULL when I is out of range). */
int netbe_config_count(const netbe_config *cfg);
const char *netbe_config_key(const netbe_config *cfg, int i);
const char *netbe_config_value(const netbe_config *cfg, int i);

/* Add the fields of a legacy string to CFG. Fails with -EINVAL on an empty
** string, an empty field ("tap0,,mac=...") or an empty key ("=x"). */
int netbe_config_parse(netbe_config *cfg, const char *legacy,
                       char *err, size_t errlen);

/* Check CFG against the backend it selects without opening anything:
** unknown keys (the message lists the keys that backend accepts), bad MAC,
** MTU and backend-specific values. Then rewrite CFG in normal form: "type"
** set to the backend's name, values canonical (MAC in lower-case
** colon form). Returns 0 or a negative errno value with ERR filled in.
** This is what `netbe check` prints. */
int netbe_config_check(netbe_config *cfg, char *err, size_t errlen);

/* Parse an Ethernet MAC "xx:xx:xx:xx:xx:xx" that must be unicast and
** non-zero (bhyve's rule). Returns 0 or -EINVAL. */
int netbe_parse_mac(const char *text, uint8_t mac[6], char *err, size_t errlen);

/* Parse an MTU: decimal, 46..65535, no trailing characters. */
int netbe_parse_mtu(const char *text, unsigned *mtu, char *err, size_t errlen);

/* bhyve's generated MAC: OUI 00:a0:98 followed by the first three bytes of
** the MD5 digest of "SLOT-FUNC-VMNAME", so a VM moved from bhyve keeps its
** address. */
void netbe_mac_generate(int slot, int func, const char *vmname, uint8_t mac[6]);

/* ====================================================================
** Backends
** ====================================================================
** The contract follows bhyve's net_backend: open, send, peek_recvlen,
** recv, rx_discard, rx_enable/rx_disable, get_cap/set_cap.
*/
typedef struct netbe netbe;

/* What a callback is told. */
#define NETBE_EV_RX  0x1   /* frames are waiting: call netbe_recv until it returns 0 */
#define NETBE_EV_TX  0x2   /* a send that returned -EAGAIN may be retried now */
#define NETBE_EV_DOWN 0x4  /* the backend failed for good: see netbe_down() */

/* Called on the event_base's thread when BE becomes readable (only while
** receive is enabled) or writable again after -EAGAIN. */
typedef void (*netbe_cb)(netbe *be, int events, void *arg);

/* Open the backend CFG selects (CFG is checked first as netbe_config_check
** does; CFG is not kept). Readiness is reported to CB on BASE. Receive starts
** disabled. On success *BEP is the new backend and 0 is returned. */
int netbe_open(netbe **bep, const netbe_config *cfg, struct event_base *base,
               netbe_cb cb, void *arg, char *err, size_t errlen);

/* netbe_open from a legacy string. */
int netbe_open_str(netbe **bep, const char *legacy, struct event_base *base,
                   netbe_cb cb, void *arg, char *err, size_t errlen);

/* Close BE: release its descriptors, events and memory. Not safe while
** another thread is inside netbe_send on BE. */
void netbe_close(netbe *be);

/* Replace the callback given to netbe_open. */
void netbe_set_callback(netbe *be, netbe_cb cb, void *arg);

/* Send one frame (virtio-net header at the frontend's length, then the
** Ethernet frame). Returns the number of bytes taken, -EAGAIN when the
** backend cannot take it now (NETBE_EV_TX follows once it can; the frame
** was not taken), or another negative errno value when the frame was
** dropped (counted as a drop or error); -EINVAL when its header lies (see
** netbe_frame_check). An offload the header asks for and the backend
** cannot do is done in software (netbe_frame_offload); if the backend
** fills up halfway through the segments, the frame still counts as taken
** and the rest go out, in order, before any later frame. Safe to call
** from one thread other than the event_base's while that thread runs the
** loop. */
ssize_t netbe_send(netbe *be, const struct iovec *iov, int iovcnt);

/* Length of the next received frame including the frontend's header, or
** 0 when none is waiting, or a negative errno value. */
ssize_t netbe_peek_recvlen(netbe *be);

/* Receive one frame into IOV. Returns its length (header included), 0 when
** none is waiting, or a negative errno value. A frame longer than IOV is
** truncated to fit and counted as an rx drop; -EMSGSIZE is returned.
** Frames from the backend whose header lies are dropped and counted
** (rx_bad_hdr) and the next one is read; a frame needing an offload the
** frontend did not negotiate comes out as the segments netbe made of it,
** one per call. */
ssize_t netbe_recv(netbe *be, const struct iovec *iov, int iovcnt);

/* Drop the next received frame (bhyve calls this when the guest has no
** buffers). Returns its length, 0 when none was waiting. */
ssize_t netbe_rx_discard(netbe *be);

/* Start and stop receive notifications. */
void netbe_rx_enable(netbe *be);
void netbe_rx_disable(netbe *be);

/* 0 while BE works; once its descriptor fails for good (a tap whose
** interface was deleted, say) the negative errno value of that failure.
** A backend goes down once: receive is disabled, NETBE_EV_DOWN is reported
** and every later netbe_recv returns the same error. Errors that concern
** one frame or a peer that may come back (a stream client reconnecting)
** do not take a backend down; a stream client without reconnect= whose
** server went away does (-ENOTCONN). */
int netbe_down(netbe *be);

/* virtio-net feature bits (VIRTIO_NET_F_*) a backend can offer. */
#define NETBE_F_CSUM        (1ULL << 0)   /* host handles partial csum */
#define NETBE_F_GUEST_CSUM  (1ULL << 1)   /* guest handles partial csum */
#define NETBE_F_MTU         (1ULL << 3)
#define NETBE_F_MAC         (1ULL << 5)
#define NETBE_F_GUEST_TSO4  (1ULL << 7)
#define NETBE_F_GUEST_TSO6  (1ULL << 8)
#define NETBE_F_GUEST_ECN   (1ULL << 9)
#define NETBE_F_GUEST_UFO   (1ULL << 10)
#define NETBE_F_HOST_TSO4   (1ULL << 11)
#define NETBE_F_HOST_TSO6   (1ULL << 12)
#define NETBE_F_HOST_ECN    (1ULL << 13)
#define NETBE_F_HOST_UFO    (1ULL << 14)
#define NETBE_F_MRG_RXBUF   (1ULL << 15)
#define NETBE_F_STATUS      (1ULL << 16)
#define NETBE_F_GUEST_USO4  (1ULL << 54)
#define NETBE_F_GUEST_USO6  (1ULL << 55)
#define NETBE_F_HOST_USO    (1ULL << 56)
#define NETBE_F_OFFLOADS    (NETBE_F_CSUM | NETBE_F_GUEST_CSUM | \
    NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6 | NETBE_F_GUEST_ECN | \
    NETBE_F_GUEST_UFO | NETBE_F_HOST_TSO4 | NETBE_F_HOST_TSO6 | \
    NETBE_F_HOST_ECN | NETBE_F_HOST_UFO | NETBE_F_GUEST_USO4 | \
    NETBE_F_GUEST_USO6 | NETBE_F_HOST_USO)

/* The offload features BE can offer a frontend. Every backend offers the
** sending side in full (CSUM, HOST_TSO4/6, HOST_ECN, HOST_UFO, HOST_USO):
** what the backend cannot do itself netbe does in software (see "Frames:
** software offloads" below). The receiving side (GUEST_*) is offered only
** by backends that can deliver such frames: a Linux tap (probed at open),
** slirp (GUEST_CSUM, GUEST_TSO4/6) and a VALE port. */
uint64_t netbe_get_cap(netbe *be);

/* Settle on FEATURES (a subset of netbe_get_cap) and the frontend's header
** length VNET_HDR_LEN: 0, 10 or 12. Returns 0, or -EINVAL for another
** length, a feature BE did not offer, or features with length 0. A frontend never receives a frame
** needing an offload it did not negotiate here: such frames are
** checksummed and segmented in software first. */
int netbe_set_cap(netbe *be, uint64_t features, unsigned vnet_hdr_len);

/* The header length frames carry through netbe_send and netbe_recv. */
unsigned netbe_get_vnet_hdr_len(netbe *be);

/* The features settled by the last netbe_set_cap (0 before any). */
uint64_t netbe_get_features(netbe *be);

/* The name the backend was opened as ("tap0", "stream"), and its type
** ("tap", "stream", ...). Strings belong to BE. */
const char *netbe_name(netbe *be);
const char *netbe_type(netbe *be);

/* The MTU from "mtu=" (1500 when unset) and the MAC from "mac=". Returns 0
** when a MAC was configured, -ENOENT otherwise. */
unsigned netbe_get_mtu(netbe *be);
int netbe_get_mac(netbe *be, uint8_t mac[6]);

/* Counters. Frames and bytes count what crossed the backend; drops count
** frames given up on purpose (no room, oversize, malformed); errors count
** failed system calls and protocol violations.
** The rest count software offloads. A frame whose virtio-net header lies
** (see netbe_frame_check) counts in tx_drops or rx_drops and also in
** tx_bad_hdr or rx_bad_hdr. tx_sw_frames and rx_sw_frames count frames
** netbe checksummed or segmented because the other side could not;
** the segments they became count in tx_frames and rx_frames. */
struct netbe_stats {
    uint64_t tx_frames, tx_bytes, tx_drops, tx_errors;
    uint64_t rx_frames, rx_bytes, rx_drops, rx_errors;
    uint64_t tx_bad_hdr, rx_bad_hdr, tx_sw_frames, rx_sw_frames;
};
void netbe_get_stats(netbe *be, struct netbe_stats *st);

/* ====================================================================
** Frames: software offloads
** ====================================================================
** What a NIC without offloads does to a frame whose virtio-net header asks
** for one. netbe_send and netbe_recv call these by themselves; they are
** public for device models that move frames without a netbe backend, and
** for tests. A FRAME here starts with a virtio-net header of HDR_LEN bytes
** (10 or 12), followed by the Ethernet frame. Fields are little-endian
** (VIRTIO_F_VERSION_1).
*/

/* Check the header of FRAME (LEN bytes in all) against the frame behind
** it. Returns 0 when it can be trusted, -EINVAL when it lies:
**   - flags other than NEEDS_CSUM and DATA_VALID;
**   - NEEDS_CSUM with csum_start inside the Ethernet header, or
**     csum_start + csum_offset + 2 past the end of the frame;
**   - hdr_len past the end of the frame;
**   - an unknown gso_type, the ECN bit on anything but TCP segmentation;
**   - a GSO frame with gso_size 0, or more than 1024 segments; one that is
**     not Ethernet (optionally with one or two VLAN tags), IPv4 or IPv6
**     (no extension headers), TCP for TCPV4/TCPV6 or UDP for UDP/UDP_L4,
**     of the IP version its type names; an IPv4 fragment; hdr_len other
**     than 0 and shorter than the headers; NEEDS_CSUM not pointing at
**     the TCP or UDP checksum field; lengths in the IP header that run
**     past the frame.
** Returns -EINVAL also for HDR_LEN not 10 or 12, or LEN shorter than it. */
int netbe_frame_check(const void *frame, size_t len, unsigned hdr_len);

/* Called by netbe_frame_offload with each frame it makes: a plain
** Ethernet frame, no virtio header. Return 0 to go on, or a negative
** value to stop (netbe_frame_offload returns it). */
typedef int (*netbe_frame_cb)(const struct iovec *iov, int iovcnt, void *arg);

/* Do in software what the header of FRAME asks, as Linux's own GSO does
** for a device without offloads, and hand each resulting frame to CB:
**   - NEEDS_CSUM alone: the checksum from csum_start to the end of the
**     frame is stored at csum_start + csum_offset (0 becomes 0xffff);
**   - TCPV4, TCPV6: TCP segments of gso_size payload bytes; each has its
**     own IP total length (IPv4: header checksum, id incremented per
**     segment; IPv6: payload length), sequence number, a complete TCP
**     checksum, CWR only on the first and FIN and PSH only on the last;
**   - UDP_L4: UDP datagrams of gso_size payload bytes, ids and checksums
**     as for TCP;
**   - UDP (UFO, IPv4 only): the datagram's checksum completed, then IPv4
**     fragments of gso_size rounded down to a multiple of 8.
** A frame with neither is handed over as it is. FRAME may be changed
** (the checksum is written in place). Returns the number of frames made,
** -EINVAL when the header lies (as netbe_frame_check), -EOPNOTSUPP for
** UFO over IPv6, or CB's negative value. */
int netbe_frame_offload(void *frame, size_t len, unsigned hdr_len,
                        netbe_frame_cb cb, void *arg);

/* Mergeable receive buffers (VIRTIO_NET_F_MRG_RXBUF). Copy one received
** frame, which starts with its 12-byte virtio-net header (FRAME, FRAMECNT
** iovecs, as netbe_recv fills them), into the guest's receive buffers
** BUFS[0..NBUFS-1] in order, one buffer after the other, and set
** num_buffers in the header copied into BUFS[0] to the number used.
** LENS[i] gets the bytes written to BUFS[i] (the used-ring length); it
** has room for NBUFS entries. Returns the number of buffers used;
** -EINVAL when the frame is shorter than 12 bytes or BUFS[0] cannot hold
** the header; -EMSGSIZE when the buffers together are too small (their
** contents are then unspecified and none should be returned to the
** guest). */
int netbe_rx_merge(const struct iovec *frame, int framecnt,
                   const struct iovec *bufs, int nbufs, uint32_t *lens);

/* ====================================================================
** Slirp: user-mode NAT (libslirp)
** ====================================================================
** "slirp[,option...]" gives the guest a private network behind NAT with a
** DHCP server, a DNS forwarder and host port forwarding, and needs no host
** configuration and no privileges. One libslirp instance per backend runs
** on the embedder's event_base; the library starts no thread for it.
** Options (bhyve's and QEMU's user network; each bad one fails the open
** with a message naming it and the expected form):
**   hostfwd=RULE[;RULE...]   RULE is PROTO:HADDR:HPORT-GADDR:GPORT with
**                            PROTO tcp (or empty) or udp, HADDR an IPv4
**                            address, [IPV6] or empty (any), GADDR empty
**                            (the DHCP start address) or IPv4; or
**                            unix:/PATH-GADDR:GPORT (a UNIX socket on the host)
**   open                     the guest may connect out; without it (and
**   restrict=on|off          with restrict=on) only forwarded traffic flows
**   net=ADDR[/LEN|/MASK] host=ADDR dhcpstart=ADDR dns=ADDR  IPv4 plan
**                            (default 10.0.2.0/24, .2, .15, .3)
**   ipv6=on|off ipv6-net=PREFIX/LEN ipv6-host=ADDR ipv6-dns=ADDR
**                            (default on, fec0::/64, ::2, ::3)
**   hostname= domainname= dnssearch=DOMAIN[;DOMAIN...]   DHCP options
**   tftp=DIR tftp-server-name=NAME bootfile=FILE
**   guestfwd=tcp:ADDR:PORT-cmd:COMMAND   guest connections to ADDR:PORT
**                            are served by COMMAND's stdin and stdout
**   mtu=N                    68 to 65521: libslirp's MTU and MRU
** Calls into libslirp are serialized by a mutex, so netbe_send may run on
** another thread than the event loop; the base must then be thread-aware
** (evthread_use_pthreads() before event_base_new()), because a send wakes
** the loop. Without "open" libslirp also leaves router and DNS out of the
** DHCP lease and drops the guest's UDP except DHCP and TFTP, answers to
** forwarded datagrams included. libslirp writes to host sockets without
** MSG_NOSIGNAL, so opening a slirp backend sets SIGPIPE to be ignored when
** its disposition is still the default (QEMU does the same).
** Offloads (netbe_get_cap): CSUM and HOST_TSO4/6, so the guest's TSO frames
** reach libslirp whole; GUEST_CSUM and GUEST_TSO4/6, so that toward a
** frontend that negotiates them TCP goes with a partial checksum and the
** in-order segments of one burst are joined into one TSO frame.
*/

/* Add a host forwarding RULE (the hostfwd= form above, one rule) to a
** running slirp backend. Returns 0, -EINVAL for a bad rule, -EEXIST when
** the host address and port are already forwarded, -ENOTSUP when BE is not
** a slirp backend, or the errno of a failed bind or listen. */
int netbe_slirp_hostfwd_add(netbe *be, const char *rule, char *err, size_t errlen);

/* Remove the forwarding whose host side RULE names: a whole rule, or just
** PROTO:HADDR:HPORT (unix:/PATH for a UNIX socket). Returns 0, -ENOENT
** when no such forwarding exists, -EINVAL or -ENOTSUP as above. */
int netbe_slirp_hostfwd_remove(netbe *be, const char *rule, char *err, size_t errlen);

/* Write the active forwarding rules in normal form, one per line, into
** BUF (always NUL-terminated when LEN > 0). Returns the length the whole
** list needs, not counting the NUL (as snprintf does), or -ENOTSUP. */
ssize_t netbe_slirp_hostfwd_list(netbe *be, char *buf, size_t len);

/* ====================================================================
** Wire: two backends joined both ways
** ====================================================================
** Frames read from one side are sent to the other. When a side answers
** -EAGAIN the frame is held (one per direction) and the other side's
** receive is disabled until NETBE_EV_TX: no busy loop and no queue. The
** wire takes over both backends' callbacks; it does not own them. A side
** that goes down (netbe_down) stops sending; the embedder checks
** netbe_down() on both sides to learn that the wire is over.
*/
typedef struct netbe_wire netbe_wire;

/* Join A and B and enable receive on both. Both must use the same event
** base. Returns 0 and *WP, or a negative errno value.
** Offloads are negotiated between the two (12-byte headers on both sides)
** when at least one direction gains from it: A may deliver a frame kind
** (GUEST_CSUM, GUEST_TSO4, ...) that B can send (CSUM, HOST_TSO4, ..., in
** hardware or in netbe's software), or the other way. Two Linux taps so
** move 64 KiB TSO frames without segmenting them. */
int netbe_wire_new(netbe_wire **wp, netbe *a, netbe *b, char *err, size_t errlen);

/* netbe_wire_new with FLAGS: NETBE_WIRE_NO_OFFLOAD leaves offloads off
** (plain frames both ways). */
#define NETBE_WIRE_NO_OFFLOAD 0x1
int netbe_wire_new_flags(netbe_wire **wp, netbe *a, netbe *b, unsigned flags,
                         char *err, size_t errlen);

/* Unjoin: receive is disabled on both backends; they stay open. */
void netbe_wire_free(netbe_wire *w);

/* Frames dropped because the other side refused them (not -EAGAIN). */
uint64_t netbe_wire_drops(netbe_wire *w);

/* ====================================================================
** Policy: per-packet rules matched in C
** ====================================================================
** A policy is an ordered list of rules and a default verdict, built once
** from a C description into an immutable structure and then matched per
** frame. The first rule that matches and whose action is terminal decides;
** "count" and conforming "rate" rules record the frame and go on. Rules
** are indexed by direction, ethertype class, IP protocol class and
** destination port, so a frame is only checked against rules that can
** match it. Header access is bounds-checked: a field a frame is too short
** to carry is absent, and a rule that tests an absent field does not match.
**
** The Lua compiler (lua/netbe/policy.lua) turns Lua tables into this
** description; C embedders may fill it directly.
**
** Counters (per rule, per direction and verdict) and rate-limit buckets
** live in the policy; when a wire swaps one policy for another, both carry
** over to the rules of the new policy that have the same name.
**
** Threads: a policy is evaluated by one thread at a time (the thread that
** runs its wire's event base). Its Lua hooks run in a lua_State of its
** own, created when the policy is built.
*/
typedef struct netbe_policy netbe_policy;

/* Directions, seen from the guest. On a wire A <-> B, B is the guest side:
** frames A -> B go to the guest, frames B -> A come from it. */
#define NETBE_DIR_TO_GUEST    0
#define NETBE_DIR_FROM_GUEST  1

/* Verdicts. */
#define NETBE_PASS  0
#define NETBE_DROP  1

/* Rule actions. PASS and DROP decide. COUNT records and continues. RATE
** drops what exceeds a token bucket and lets the rest continue. LUA calls
** the rule's hook, which returns "pass", "drop", or nil to continue. */
enum netbe_action {
    NETBE_ACT_PASS, NETBE_ACT_DROP, NETBE_ACT_COUNT, NETBE_ACT_RATE, NETBE_ACT_LUA
};

/* Which match fields of a rule apply (struct netbe_rule.match). */
#define NETBE_M_DIR        (1u << 0)
#define NETBE_M_SRC_MAC    (1u << 1)
#define NETBE_M_DST_MAC    (1u << 2)
#define NETBE_M_ETHERTYPE  (1u << 3)   /* after any VLAN tags */
#define NETBE_M_VLAN       (1u << 4)   /* the outer VLAN id; 0xffff: untagged */
#define NETBE_M_SRC_IP     (1u << 5)   /* ARP: the sender protocol address */
#define NETBE_M_DST_IP     (1u << 6)   /* ARP: the target protocol address */
#define NETBE_M_PROTO      (1u << 7)   /* IPv4 protocol / IPv6 last next header */
#define NETBE_M_SPORT      (1u << 8)   /* TCP, UDP, SCTP, UDP-Lite */
#define NETBE_M_DPORT      (1u << 9)
#define NETBE_M_TCP_FLAGS  (1u << 10)
#define NETBE_M_ICMP_TYPE  (1u << 11)  /* ICMP and ICMPv6 */
#define NETBE_M_LEN        (1u << 12)  /* Ethernet frame length, no vnet header */

/* Rate units of NETBE_ACT_RATE. */
#define NETBE_RATE_BITS    0           /* rate in bits/s, burst in bits */
#define NETBE_RATE_FRAMES  1           /* rate in frames/s, burst in frames */

/* One rule. Strings and buffers are copied by netbe_policy_new. */
struct netbe_rule {
    const char *name;                  /* unique in the policy, 1..63 chars */
    unsigned match;                    /* NETBE_M_* bits */
    int dir;                           /* NETBE_DIR_* */
    uint8_t src_mac[6], src_mac_mask[6];
    uint8_t dst_mac[6], dst_mac_mask[6];
    uint16_t ethertype;
    uint16_t vlan;
    int ip_family;                     /* 4 or 6, when SRC_IP or DST_IP is set */
    uint8_t src_ip[16], dst_ip[16];    /* network order; IPv4 in the first 4 */
    unsigned src_plen, dst_plen;       /* prefix lengths */
    uint8_t proto;
    uint16_t sport_lo, sport_hi, dport_lo, dport_hi;   /* inclusive */
    uint8_t tcp_flags, tcp_flags_mask; /* (flags & mask) == tcp_flags */
    uint8_t icmp_type;
    unsigned len_lo, len_hi;           /* inclusive */
    enum netbe_action action;
    int rate_unit;                     /* NETBE_RATE_* */
    double rate, burst;                /* RATE: per second, bucket size */
    /* LUA: a chunk that is the hook: it is called with the packet view
    ** (source: "local pkt = ..."), and returns "pass", "drop" or nil to
    ** continue. Lua source, or the string.dump of a function: Lua does not
    ** verify bytecode, so pass only bytecode you produced yourself. The
    ** view has fields len, dir, src_mac, dst_mac, ethertype, vlan, family,
    ** src_ip, dst_ip, proto, sport, dport, tcp_flags, icmp_type (nil when
    ** the frame does not carry one) and pkt:byte(off), pkt:u16(off),
    ** pkt:u32(off): big-endian, 0-based into the frame, nil past its end.
    ** The sandbox has base (without load, require, pcall, print,
    ** collectgarbage, metatables), string (without dump), table, math and
    ** utf8. A hook that errors, runs past hook_budget instructions, grows
    ** the state past hook_memory or returns anything else counts a hook
    ** error and gets fail_verdict. */
    const char *hook;
    size_t hook_len;
    /* LUA, optional: Lua source returning one value per upvalue of the
    ** hook, in order (the _ENV upvalue gets the sandbox). NULL: none. */
    const char *hook_upvalues;
};

/* A whole policy. */
struct netbe_policy_desc {
    const struct netbe_rule *rules;
    int nrules;
    int default_verdict;               /* NETBE_PASS or NETBE_DROP */
    int fail_verdict;                  /* what a failing hook gets */
    unsigned hook_budget;              /* Lua instructions per call, at most
                                       ** INT_MAX; 0: 10000 */
    size_t hook_memory;                /* bytes for the Lua state; 0: 4 MiB */
};

/* Build a policy from DESC. Checks every rule (names unique, prefixes and
** ranges sane, hooks load in the sandbox) and returns 0 and *PP, or a
** negative errno value with ERR naming the rule and the problem. */
int netbe_policy_new(netbe_policy **pp, const struct netbe_policy_desc *desc,
                     char *err, size_t errlen);

/* Free P and its Lua state. Not for a policy given to a wire. */
void netbe_policy_free(netbe_policy *p);

/* Decide on one Ethernet frame (no virtio-net header) travelling in DIR.
** Counts it and returns NETBE_PASS or NETBE_DROP. NOW_NS is the monotonic
** time for rate limits in nanoseconds, or 0 to read the clock when needed. */
int netbe_policy_eval(netbe_policy *p, int dir, const void *frame, size_t len,
                      uint64_t now_ns);

/* Copy counters and rate-limit buckets from OLD to the rules of NEW that
** have the same names, and the direction totals. Wires do this on swap. */
void netbe_policy_carry(netbe_policy *newp, const netbe_policy *old);

/* Counters. Readers may run on any thread while the policy is in use. */
struct netbe_policy_stats {
    uint64_t pass_frames[2], pass_bytes[2];   /* indexed by NETBE_DIR_* */
    uint64_t drop_frames[2], drop_bytes[2];
    uint64_t hook_errors;                     /* hooks that failed or ran away */
    uint64_t reloads;                         /* swaps onto this rule chain */
    int nrules;
};
struct netbe_rule_stats {
    char name[64];
    uint64_t hits, bytes;                     /* frames that matched the rule */
    uint64_t drops;                           /* frames the rule dropped */
};
void netbe_policy_get_stats(const netbe_policy *p, struct netbe_policy_stats *st);
/* Counters of rule I (0-based). Returns 0, or -ENOENT when I is out of range. */
int netbe_policy_rule_stats(const netbe_policy *p, int i, struct netbe_rule_stats *rs);

/* Give policy P to wire W (W owns it from now on; NULL removes the policy).
** The wire takes it at its next batch boundary, carries counters and
** buckets over by rule name, and frees the policy it replaces; a frame is
** always judged by exactly one whole policy. Safe from another thread when
** the event base is thread-aware (evthread_use_pthreads). */
int netbe_wire_set_policy(netbe_wire *w, netbe_policy *p);

/* The counters of the policy W uses (or the one waiting to be taken).
** Return -ENOENT when W has no policy. Safe from any thread. */
int netbe_wire_policy_stats(netbe_wire *w, struct netbe_policy_stats *st);
int netbe_wire_rule_stats(netbe_wire *w, int i, struct netbe_rule_stats *rs);


/* ====================================================================
** virtio: split virtqueues
** ====================================================================
** A helper for embedders that serve a guest's virtio queues themselves
** (a bhyve-style device model, a vhost-user device). It walks a split
** virtqueue (descriptor table, available ring, used ring: virtio 1.x,
** section 2.7) that lives in guest memory, reached only through the
** embedder's MAP callback. Supported: indirect descriptors,
** VIRTIO_F_EVENT_IDX (used_event / avail_event notification suppression),
** VIRTIO_F_VERSION_1 (rings little-endian; netbe supports little-endian
** hosts only, where legacy rings look the same).
**
** Nothing the guest writes is trusted. Every index, address and length is
** checked before use; each descriptor is copied out of guest memory once, so
** a guest changing it meanwhile sees no effect. A queue whose guest breaks
** the rules (a buffer outside guest memory, a loop in a chain, an indirect
** table inside an indirect table, an available index that jumps by more than
** the queue size, a buffer of the wrong direction, an absurd length) becomes
** broken: the call returns a negative errno value, netbe_vq_error() names
** what was wrong, and every later call fails the same way until
** netbe_vq_setup() is called again (the guest resets the device). This is
** what QEMU does with a misbehaving driver: stop the queue, never loop,
** never touch memory outside the guest.
**
** A queue is used from one thread at a time; the helper takes no locks.
*/
typedef struct netbe_vq netbe_vq;

/* Map LEN bytes of guest memory at guest physical address GPA into the
** embedder's address space: a pointer to all LEN bytes, contiguous, or NULL
** when any of them lies outside guest memory. LEN may be 0. The pointer must
** stay valid until the queue is set up again, reset or freed. */
typedef void *(*netbe_vq_map_fn)(void *arg, uint64_t gpa, uint64_t len);

/* Transport and ring feature bits the helper understands. */
#define NETBE_F_RING_INDIRECT_DESC (1ULL << 28)
#define NETBE_F_RING_EVENT_IDX     (1ULL << 29)
#define NETBE_F_VERSION_1          (1ULL << 32)

/* Largest queue size of a split virtqueue (sizes are powers of 2). */
#define NETBE_VQ_MAX_SIZE 32768

/* Directions a chain may carry, for netbe_vq_pop's ALLOW. */
#define NETBE_VQ_READ   0x1  /* device-readable: the driver's data (a tx frame) */
#define NETBE_VQ_WRITE  0x2  /* device-writable: room for the device (an rx buffer) */

/* A new queue, not yet set up, that reaches guest memory through MAP(ARG).
** Returns 0 and *VQP, or -ENOMEM. Free with netbe_vq_free. */
int netbe_vq_new(netbe_vq **vqp, netbe_vq_map_fn map, void *arg);
void netbe_vq_free(netbe_vq *vq);

/* Place the queue: SIZE entries (a power of 2 up to NETBE_VQ_MAX_SIZE), the
** descriptor table at guest physical address DESC (16-byte aligned), the
** available ring at AVAIL (2-byte aligned), the used ring at USED (4-byte
** aligned). FEATURES are the negotiated bits; NETBE_F_RING_EVENT_IDX and
** NETBE_F_RING_INDIRECT_DESC change behaviour, others are ignored. The three
** areas are mapped now, so call this again after the guest memory map
** changes. The next available entry is the one netbe_vq_set_base gave (0 by
** default); the used index continues from the one in the used ring. Clears a
** broken state. Returns 0, or -EINVAL with ERR naming the bad value. */
int netbe_vq_setup(netbe_vq *vq, unsigned size, uint64_t desc, uint64_t avail,
                   uint64_t used, uint64_t features, char *err, size_t errlen);

/* Forget the rings: the queue is no longer ready; the base is kept. */
void netbe_vq_reset(netbe_vq *vq);

/* 1 when set up and not broken, else 0. */
int netbe_vq_ready(const netbe_vq *vq);

/* The index of the next available entry to take (vhost's "vring base"), and
** setting it, e.g. when a device resumes a queue another process served. */
uint16_t netbe_vq_get_base(const netbe_vq *vq);
void netbe_vq_set_base(netbe_vq *vq, uint16_t base);

/* What netbe_vq_pop found: give HEAD back to netbe_vq_push. The chain's
** buffers are IOV[0 .. nread) (device-readable) followed by
** IOV[nread .. nread + nwrite) (device-writable), mapped into host memory. */
struct netbe_vq_chain {
    uint16_t head;
    int nread, nwrite;
    uint64_t read_len, write_len;   /* bytes in each part */
};

/* Take the next available chain into IOV (room for IOVMAX entries; a chain
** can have as many descriptors as the queue has entries). ALLOW says which
** directions the caller accepts (NETBE_VQ_READ, NETBE_VQ_WRITE or both); a
** buffer of another direction, or a readable buffer after a writable one,
** breaks the queue. Returns 1 with *CH filled, 0 when no chain is
** available, -EIO when the queue is not set up or broken, or the errno
** value for the rule the guest broke (-EFAULT: a buffer or table outside
** guest memory; -ELOOP: a chain longer than the queue; -EINVAL: a bad index,
** flag or length; -E2BIG: more buffers than IOVMAX). Zero-length buffers are
** skipped. */
int netbe_vq_pop(netbe_vq *vq, struct iovec *iov, int iovmax, int allow,
                 struct netbe_vq_chain *ch);

/* Give back the chain netbe_vq_pop returned last, unused (e.g. no frame was
** waiting after all): the next pop returns it again. Only one pop can be
** undone, and only before the next pop. */
void netbe_vq_unpop(netbe_vq *vq);

/* Return chain HEAD to the driver with LEN bytes written into its writable
** buffers. The driver sees it after netbe_vq_publish. Returns 0, -EIO when
** the queue is not ready, or -EINVAL for a HEAD outside the queue. */
int netbe_vq_push(netbe_vq *vq, uint16_t head, uint32_t len);

/* Make the chains pushed so far visible to the driver. Returns 1 when the
** driver wants an interrupt for them (used_event with EVENT_IDX, else the
** avail ring's NO_INTERRUPT flag), 0 when it does not or nothing was
** pushed since the last publish, -EIO when the queue is not ready. */
int netbe_vq_publish(netbe_vq *vq);

/* Ask the driver to notify (kick) when it makes more chains available, or
** to stop notifying. Enabling returns 1 when chains became available before
** the request was seen (process them, as no kick will come for them), 0
** when the ring is empty, or a negative errno value as netbe_vq_pending. */
int netbe_vq_notify_enable(netbe_vq *vq);
void netbe_vq_notify_disable(netbe_vq *vq);

/* Number of chains available now, or a negative errno value when the queue
** is not ready or its available index is out of range (which breaks it). */
int netbe_vq_pending(netbe_vq *vq);

/* Why the queue broke, or "" when it is not broken. Belongs to VQ. */
const char *netbe_vq_error(const netbe_vq *vq);

#ifdef __cplusplus
}
#endif
#endif /* NETBE_H */
