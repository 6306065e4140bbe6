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
** dropped (counted as a drop or error). Safe to call from one thread other
** than the event_base's while that thread runs the loop. */
ssize_t netbe_send(netbe *be, const struct iovec *iov, int iovcnt);

/* Length of the next received frame including the frontend's header, or
** 0 when none is waiting, or a negative errno value. */
ssize_t netbe_peek_recvlen(netbe *be);

/* Receive one frame into IOV. Returns its length (header included), 0 when
** none is waiting, or a negative errno value. A frame longer than IOV is
** truncated to fit and counted as an rx drop; -EMSGSIZE is returned. */
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
#define NETBE_F_HOST_USO    (1ULL << 56)
#define NETBE_F_OFFLOADS    (NETBE_F_CSUM | NETBE_F_GUEST_CSUM | \
    NETBE_F_GUEST_TSO4 | NETBE_F_GUEST_TSO6 | NETBE_F_GUEST_ECN | \
    NETBE_F_GUEST_UFO | NETBE_F_HOST_TSO4 | NETBE_F_HOST_TSO6 | \
    NETBE_F_HOST_ECN | NETBE_F_HOST_UFO)

/* The offload features BE can offer a frontend. */
uint64_t netbe_get_cap(netbe *be);

/* Settle on FEATURES (a subset of netbe_get_cap) and the frontend's header
** length VNET_HDR_LEN: 0, 10 or 12. Returns 0, or -EINVAL for another
** length or a feature BE did not offer. */
int netbe_set_cap(netbe *be, uint64_t features, unsigned vnet_hdr_len);

/* The header length frames carry through netbe_send and netbe_recv. */
unsigned netbe_get_vnet_hdr_len(netbe *be);

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
** failed system calls and protocol violations. */
struct netbe_stats {
    uint64_t tx_frames, tx_bytes, tx_drops, tx_errors;
    uint64_t rx_frames, rx_bytes, rx_drops, rx_errors;
};
void netbe_get_stats(netbe *be, struct netbe_stats *st);

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
** wire takes over both backends' callbacks; it does not own them.
*/
typedef struct netbe_wire netbe_wire;

/* Join A and B and enable receive on both. Both must use the same event
** base. Returns 0 and *WP, or a negative errno value. */
int netbe_wire_new(netbe_wire **wp, netbe *a, netbe *b, char *err, size_t errlen);

/* Unjoin: receive is disabled on both backends; they stay open. */
void netbe_wire_free(netbe_wire *w);

/* Frames dropped because the other side refused them (not -EAGAIN). */
uint64_t netbe_wire_drops(netbe_wire *w);

#ifdef __cplusplus
}
#endif
#endif /* NETBE_H */
