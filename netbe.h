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

/* The version of this header, and of the netbe.c it came with:
** NETBE_VERSION is "X.Y.Z", NETBE_VERSION_NUMBER is X*1000000 + Y*1000 + Z.
** netbe_libversion() returns the NETBE_VERSION that netbe.c was compiled
** with, so an embedder can tell a header and a library that disagree. */
#define NETBE_VERSION        "0.11.0"
#define NETBE_VERSION_NUMBER 11000
const char *netbe_libversion(void);

/* Build options, for embedders that cannot take every dependency (bhyve's
** base system has neither glib nor Lua). Define them when compiling netbe.c;
** this header and every call in it stay the same:
**   NETBE_OMIT_SLIRP  no libslirp (and so no glib): opening a slirp backend
**                     fails with -ENOTSUP and a message saying so.
**   NETBE_OMIT_LUA    no Lua: policies take compiled rules only; a rule with
**                     action NETBE_ACT_LUA is refused with -ENOTSUP.
** libevent is always needed. */

/* Largest frame any backend moves: a 64 KiB GSO frame plus Ethernet and VLAN
** headers, not counting the virtio-net header. Every length a guest or a
** peer controls is held to it: a longer frame is refused or dropped and
** counted, on send and on receive (see netbe_send, netbe_recv). */
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
** MTU and backend-specific values, values holding a ',' or a control
** character (every config has a legacy normal form, and a value set key
** by key must not add keys to it), and the permissions below (-EPERM).
** Then rewrite CFG in normal form: "type" set to the backend's name,
** values canonical (MAC in lower-case colon form). Returns 0 or a negative
** errno value with ERR filled in. This is what `netbe check` prints. */
int netbe_config_check(netbe_config *cfg, char *err, size_t errlen);

/* ---- What a config may do on the host ----
** Configs often come from people other than the embedder (a VM manager's
** users), and netbe acts with the embedder's privileges. Options that
** reach beyond the backend are refused unless the embedder allows them on
** the config; a new config allows neither:
**   NETBE_ALLOW_EXEC   running host commands: slirp's guestfwd=...-cmd:CMD,
**                      which runs CMD for every guest connection.
**   NETBE_ALLOW_FILES  host paths, inside one directory DIR: slirp's tftp=
**                      (the guest reads the files there) and every UNIX
**                      socket path: slirp's hostfwd=unix:, stream's
**                      listen= and connect=, dgram's local= and remote=.
**                      Binding a socket creates a file wherever the path
**                      says, and connecting hands the guest's frames to
**                      whatever local service listens there, so socket
**                      paths are confined like files. Also the Linux
**                      tap's netns= and userns= (namespace files: the tap
**                      is made in that network namespace).
** A path is inside DIR when its real path, with '..' and symbolic links
** resolved, is DIR or below it: tftp=, netns= and userns= are resolved
** whole (so a /proc/PID/ns/net link, which no real path names, needs DIR
** "/", while ip-netns's /run/netns/NAME works with DIR /run/netns); for a socket
** path its directory is, and the path itself may not be a symbolic link.
** DIR "/" allows every path without resolving anything. The check is made
** when the config is checked (and again at netbe_open), so keep DIR and
** what is below it writable only by the embedder; the files in a tftp=
** directory, symbolic links included, are the guest's to read.
** netbe_config_check and netbe_open refuse with -EPERM and one message that
** names every option not allowed and the permission it needs. Rules added
** later with netbe_slirp_hostfwd_add get the permissions the backend was
** opened with. */
#define NETBE_ALLOW_EXEC   0x1
#define NETBE_ALLOW_FILES  0x2

/* Give CFG the permissions ALLOW (NETBE_ALLOW_* bits; 0 takes them all
** back), replacing what an earlier call gave. DIR is needed with
** NETBE_ALLOW_FILES and ignored without it: an existing directory,
** resolved now. Returns 0, -EINVAL for an unknown bit or a missing DIR, or
** the errno of resolving DIR (-ENOTDIR when it is not a directory). */
int netbe_config_allow(netbe_config *cfg, unsigned allow, const char *dir,
                       char *err, size_t errlen);

/* The NETBE_ALLOW_* permissions the options of CFG need, as the last
** netbe_config_check found them (also when it refused them). */
unsigned netbe_config_needs(const netbe_config *cfg);

/* Parse an Ethernet MAC, exactly "xx:xx:xx:xx:xx:xx" with hex digits, that
** must be unicast and non-zero (bhyve's rule). Returns 0 or -EINVAL. */
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
**
** The handle's struct tag is bhyve's: a netbe * is the net_backend_t * of
** bhyve's net_backends.h, and every call below whose name bhyve also has
** (netbe_send, netbe_recv, netbe_get_vnet_hdr_len, ...) has bhyve's exact
** signature, so a file may include both headers. examples/bhyve/ uses that
** to give bhyve's own device models netbe as their backend layer.
*/
typedef struct net_backend netbe;

/* What a callback is told. */
#define NETBE_EV_RX  0x1   /* frames are waiting: call netbe_recv until it returns 0 */
#define NETBE_EV_TX  0x2   /* a send that returned -EAGAIN may be retried now */
#define NETBE_EV_DOWN 0x4  /* the backend failed for good: see netbe_down() */

/* Called on the event_base's thread when BE becomes readable (only while
** receive is enabled) or writable again after -EAGAIN.
**
** Threads: everything about BE runs on the thread that runs its event_base,
** with two exceptions. netbe_send may run on one other thread (see there);
** one thread sends at a time: calls of netbe_send on BE never overlap.
** netbe_rx_enable and netbe_rx_disable may run on any thread while the loop
** runs, as bhyve calls them from vCPU threads; the base must then be
** thread-aware (evthread_use_pthreads() before event_base_new()), and the
** embedder must keep them from running at the same time as the calls that
** receive (netbe_recv, netbe_peek_recvlen, netbe_rx_discard), as bhyve's
** receive lock does. netbe_rx_disable never waits for a callback that is
** running, so it may be called with a lock held that the callback takes. */
typedef void (*netbe_cb)(netbe *be, int events, void *arg);

/* Open the backend CFG selects (CFG is checked first as netbe_config_check
** does; CFG is not kept). Readiness is reported to CB on BASE. Receive starts
** disabled. On success *BEP is the new backend and 0 is returned. */
int netbe_open(netbe **bep, const netbe_config *cfg, struct event_base *base,
               netbe_cb cb, void *arg, char *err, size_t errlen);

/* netbe_open from a legacy string. */
int netbe_open_str(netbe **bep, const char *legacy, struct event_base *base,
                   netbe_cb cb, void *arg, char *err, size_t errlen);

/* ---- Queues ----
** A Linux tap opened with "queues=N" (N from 2 to 256) is one interface
** with N queues (IFF_MULTI_QUEUE), as a multiqueue NIC has: the kernel
** spreads the frames it sends over the queues by flow and takes frames
** on any of them. netbe_open returns queue 0 and opens the others with
** it, detached; netbe_open_queue makes queue I a handle of its own, on
** an event base of its own, so that a device model can serve each queue
** pair of its guest on a thread of its own. Each handle is a backend
** like any other (its own callback, counters, netbe_set_cap, netbe_close;
** the "Threads" rules hold per handle), and all share the interface's
** name, MAC, MTU and offloads. Closing queue 0 closes the queues not
** opened yet; the interface lives while any queue is open. An interface
** made elsewhere must match: a persistent multiqueue tap opens only with
** queues=2 or more, a single-queue one only without. Every other backend
** has one queue. */

/* The number of queues of the backend BE is a queue of: N for a tap
** opened with queues=N, else 1. */
int netbe_queues(netbe *be);

/* Open queue INDEX (1 to netbe_queues(BE) - 1) of BE, the handle
** netbe_open returned, as the new handle *QP that reports to CB(ARG) on
** BASE; the queue is attached. Each index opens once. Not while BE is
** being closed. Returns 0, -EINVAL for an index the backend does not
** have, -EBUSY for a queue opened already, or the errno of attaching it,
** with ERR filled in. */
int netbe_open_queue(netbe **qp, netbe *be, int index, struct event_base *base,
                     netbe_cb cb, void *arg, char *err, size_t errlen);

/* Attach queue BE to its interface (ON non-zero) or detach it. The kernel
** steers no frame to a detached queue and takes none from it: receive is
** disabled (enable it again after attaching) and netbe_send drops with
** -ENOTCONN. A device model detaches the queues its guest does not use,
** as QEMU does, so that no flow goes to a queue nobody reads. Returns 0
** (also when the queue already is so), -ENOTSUP for a backend with one
** queue, or the errno of the ioctl. */
int netbe_queue_attach(netbe *be, int on);

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
** netbe_frame_check) or the frame is shorter than the header and an
** Ethernet header; -EMSGSIZE, counted in tx_drops, when it is longer than
** NETBE_MAX_FRAME plus the header (checked before any of it is copied),
** or longer than the backend's MTU where netbe enforces it:
**   - tap: the kernel's interface has the mtu= MTU and applies it as for
**     any interface; netbe does not, so GSO frames up to 64 KiB pass
**     whole (the kernel cuts them) and the host's stack or bridge decides
**     about plain frames, as it does for any NIC;
**   - stream, dgram, pair: the link has no MTU of its own, so when mtu=
**     is given netbe drops a frame whose payload after the Ethernet
**     header and VLAN tags is longer (a giant); a GSO frame is checked
**     per segment netbe cuts from it. Without mtu= nothing is checked;
**   - slirp: libslirp applies its MTU and MRU (mtu=) itself;
**   - null: takes anything; netgraph, netmap, vale: their kernel side.
** An offload the header asks for and the backend cannot do is done in
** software (netbe_frame_offload); if the backend fills up halfway through
** the segments, the frame still counts as taken and the rest go out, in
** order, before any later frame (a segment the backend refuses, over the
** MTU say, is counted and skipped). Safe to call from one thread other
** than the event_base's while that thread runs the loop.
** Batches (stream, dgram): a frame sent from inside a netbe callback of
** BE's event base (a NETBE_EV_RX or NETBE_EV_TX handler, a wire) is
** queued and counted as taken, and the queue goes out in one write
** (stream) or one sendmmsg (dgram) when the callbacks of this loop turn
** are done, before the loop waits again, or earlier once 64 KiB (dgram:
** also 32 frames) wait. So a frame waits at most for the rest of the
** current loop turn. A frame sent from anywhere else (another thread, a
** caller running no loop, an event of the embedder's own) goes out at
** once, behind what is queued, as without batches. What the socket has
** no room for waits, records whole and in order, for TX readiness;
** -EAGAIN comes only when the queue (64 KiB and one largest frame) is
** full. netbe_close writes what the socket takes and counts the rest in
** tx_drops, as it does for frames queued when a stream peer goes away. */
ssize_t netbe_send(netbe *be, const struct iovec *iov, int iovcnt);

/* For frontends that never retry a send (bhyve's pci_virtio_net.c hands a
** failed frame back to the guest as sent): with ON non-zero, a frame BE has
** no room for is dropped, counted in tx_drops, and netbe_send returns
** -ENOBUFS instead of -EAGAIN; no NETBE_EV_TX follows. Off by default. */
void netbe_set_drop_when_full(netbe *be, int on);

/* Length of the next received frame including the frontend's header, or
** 0 when none is waiting, or a negative errno value. */
ssize_t netbe_peek_recvlen(netbe *be);

/* Receive one frame into IOV. Returns its length (header included), 0 when
** none is waiting, or a negative errno value. Frames from the backend
** longer than NETBE_MAX_FRAME plus the header (a datagram peer can send
** one) are dropped, counted in rx_drops, and the next one is read. So are
** frames whose header lies (counted in rx_bad_hdr too). A frame needing
** an offload the frontend did not negotiate comes out as the segments
** netbe made of it, one per call.
** A frame longer than IOV is dropped (what fits is written), counted in
** rx_drops, and -EMSGSIZE is returned: the frame is gone, and the rule is
** that frames behind it are never stranded. When receive is enabled
** netbe reports NETBE_EV_RX again, so a loop that stops at the first
** value <= 0, `while ((n = netbe_recv(be, iov, cnt)) > 0)`, is called
** back for them; a caller may also go on calling after -EMSGSIZE. A
** buffer of NETBE_MAX_FRAME plus the header length never sees it. */
ssize_t netbe_recv(netbe *be, const struct iovec *iov, int iovcnt);

/* Drop the next received frame (bhyve calls this when the guest has no
** buffers). Returns its length, 0 when none was waiting. */
ssize_t netbe_rx_discard(netbe *be);

/* Start and stop receive notifications. Any thread may call them (see
** "Threads" above). */
void netbe_rx_enable(netbe *be);
void netbe_rx_disable(netbe *be);

/* 0 while BE works; once its descriptor fails for good (a tap whose
** interface was deleted, say) the negative errno value of that failure.
** A backend goes down once: receive is disabled, NETBE_EV_DOWN is reported
** and every later netbe_recv returns the same error. Errors that concern
** one frame or a peer that may come back (a stream client reconnecting)
** do not take a backend down; a stream client without reconnect= whose
** server went away does (-ENOTCONN), or whose connect failed after
** netbe_open returned (its error; -ETIMEDOUT after 10 s without an
** answer), and so does a pair end whose other end was closed (-ENOTCONN). */
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
** slirp, stream and dgram (GUEST_CSUM, GUEST_TSO4/6) and a VALE port.
** slirp, stream and dgram make such frames by joining in-order TCP
** segments of one connection that wait together (libslirp's burst, a
** read's worth of records or datagrams) into one TSO frame, by the rules
** of Linux's GRO; from a socket peer, a segment joins only with right
** IPv4 header and TCP checksums. */
uint64_t netbe_get_cap(netbe *be);

/* Settle on FEATURES, every bit the frontend negotiated with its guest,
** and the frontend's header length VNET_HDR_LEN: 0, 10 or 12. Of FEATURES
** only the offloads (NETBE_F_OFFLOADS) concern netbe, and each of them is
** honoured from here on; the rest (MAC, STATUS, MTU, MRG_RXBUF, CTRL_VQ,
** ring and transport bits, ...) are accepted and kept, as bhyve's device
** model passes them all. Returns 0, or -EINVAL for another length, an
** offload BE did not offer (a frontend only negotiates what netbe_get_cap
** offered; bhyve's virtio layer masks the guest's bits with it), or
** offloads with length 0; BE is then unchanged. A frontend never receives
** a frame needing an offload it did not negotiate here: such frames are
** checksummed and segmented in software first. */
int netbe_set_cap(netbe *be, uint64_t features, unsigned vnet_hdr_len);

/* The header length frames carry through netbe_send and netbe_recv: the
** frontend's, from the last successful netbe_set_cap (0 before any). netbe
** converts to the backend's own, so a bhyve frontend hands it frames with
** their header and honours no offload itself; 0 would make it strip and
** prepend headers on its own. */
size_t netbe_get_vnet_hdr_len(netbe *be);

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
** the segments they became count in tx_frames and rx_frames. TCP
** segments joined into one TSO frame for the frontend (slirp, stream,
** dgram; see netbe_get_cap) count once in rx_frames, as the frame they
** became, and its bytes in rx_bytes.
** The tx_frag counters are kept by backends that reassemble the IP
** fragments their frontend sends (slirp; see there): tx_frags counts the
** fragments taken, tx_frag_whole the datagrams made whole and passed on,
** tx_frag_drops the fragments given up (also in tx_drops; they counted in
** tx_frames when taken). Each datagram given up counts in one of:
** tx_frag_overlap (fragments overlapped or disagreed on its end),
** tx_frag_oversize (it would pass 65,535 bytes, or the largest IPv6
** packet the backend takes), tx_frag_timeout (still incomplete after
** 30 s), tx_frag_evicted (dropped, oldest first, to keep within the
** limits on datagrams, bytes and fragments in between).
** netbe_get_stats may run on any thread while BE is in use; each counter
** is read whole. rx_frames, rx_bytes, tx_frames and tx_bytes are bumped
** once per frame without a locked instruction, so each has one writer:
** the event_base's thread receives, and one thread at a time sends (calls
** of netbe_send on one backend never overlap, whichever thread makes
** them). */
struct netbe_stats {
    uint64_t tx_frames, tx_bytes, tx_drops, tx_errors;
    uint64_t rx_frames, rx_bytes, rx_drops, rx_errors;
    uint64_t tx_bad_hdr, rx_bad_hdr, tx_sw_frames, rx_sw_frames;
    uint64_t tx_frags, tx_frag_whole, tx_frag_drops;
    uint64_t tx_frag_overlap, tx_frag_oversize, tx_frag_timeout, tx_frag_evicted;
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
** the header; -EMSGSIZE when the buffers together are too small, or the
** frame would need more than 65535 of them (the most num_buffers can
** count): their contents are then unspecified and none should be
** returned to the guest. */
int netbe_rx_merge(const struct iovec *frame, int framecnt,
                   const struct iovec *bufs, int nbufs, uint32_t *lens);

/* ====================================================================
** UNIX socket paths
** ====================================================================
** netbe removes a path only when it is a UNIX socket nobody listens on: a
** stale one (its process died) before binding the path again, and its own
** once it closed it, if the path still is the socket it bound. It never
** removes a regular file, a directory, a symbolic link or the live socket
** of another process, and binding over one of those is an open error
** naming the path. The stream, dgram and slirp backends work this way; an
** embedder binding sockets of its own (a vhost-user device) can use the
** same three calls. A path swapped by someone else between the check and
** the removal is not detected; keep socket directories private.
*/

/* Which socket a path was bound to. All zero: none. */
struct netbe_unix_id {
    uint64_t dev, ino;
};

/* Make PATH free for bind(): returns 0 when nothing is there, or after
** removing a stale socket; -EADDRINUSE when a process listens on it,
** -EEXIST when it is not a socket, or the errno of a failed check, with ERR
** naming PATH and why. */
int netbe_unix_clear(const char *path, char *err, size_t errlen);

/* Right after bind(): record in *ID which socket PATH now is. Returns 0, or
** a negative errno value (and *ID unchanged) when PATH is no socket. */
int netbe_unix_mark(const char *path, struct netbe_unix_id *id);

/* After closing the socket bound at PATH: remove PATH when it still is the
** socket *ID names and nobody listens on it. Returns 1 when it removed
** PATH, 0 when it left it (gone, replaced, in use, or *ID all zero). */
int netbe_unix_release(const char *path, const struct netbe_unix_id *id);

/* ====================================================================
** Log
** ====================================================================
** netbe prints nothing. What a library it calls wants to say goes to the
** function given here: libslirp's glib messages (its log domain "Slirp",
** which glib would print on stderr as "Slirp-CRITICAL **: ..." or
** "Slirp-WARNING **: ..."). Without a function they are dropped. Only
** that domain is taken: glib's default handler and the handlers of other
** domains stay as they are.
*/
#define NETBE_LOG_CRIT     2   /* g_critical: the library met a case it cannot handle */
#define NETBE_LOG_ERR      3   /* g_error: glib aborts the process after the call */
#define NETBE_LOG_WARNING  4
#define NETBE_LOG_NOTICE   5   /* g_message */
#define NETBE_LOG_INFO     6
#define NETBE_LOG_DEBUG    7   /* libslirp's own, with SLIRP_DEBUG set */

/* Called with a NETBE_LOG_* level (syslog's numbers) and one line of text
** naming its source ("slirp: ..."; valid during the call only), on the
** thread that made the library log: the event base's, or one that called
** netbe_send. */
typedef void (*netbe_log_fn)(int level, const char *msg, void *arg);

/* From now on hand log messages to FN(level, msg, ARG), process-wide; FN
** NULL drops them, as before any call. Safe from any thread, FN too. */
void netbe_set_log(netbe_log_fn fn, void *arg);

/* ====================================================================
** Slirp: user-mode NAT (libslirp)
** ====================================================================
** "slirp[,option...]" gives the guest a private network behind NAT with a
** DHCP server, a DNS forwarder and host port forwarding, and needs no host
** configuration and no privileges. One libslirp instance per backend runs
** on the embedder's event_base; the library starts no thread for it.
** Options (bhyve's and QEMU's user network; each bad one fails the open
** with a message naming it and the expected form; unix: forwarding, tftp=
** and guestfwd= need permissions, see netbe_config_allow):
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
** MSG_NOSIGNAL. Where the OS has SO_NOSIGPIPE (FreeBSD, macOS) netbe sets
** it on every socket libslirp registers, as bhyve does, and leaves the
** process's signals alone. Elsewhere (Linux) nothing per socket exists, so
** opening a slirp backend sets SIGPIPE to be ignored when its disposition
** is still the default (QEMU does the same); an embedder that wants
** SIGPIPE must handle it itself before opening one.
** Offloads (netbe_get_cap): CSUM and HOST_TSO4, so the guest's IPv4 TSO
** frames reach libslirp whole (IPv6 ones are cut in software first:
** libslirp 4.7 refuses an IPv6 packet longer than mtu= with "packet too
** big"); GUEST_CSUM and GUEST_TSO4/6, so that toward a
** frontend that negotiates them TCP goes with a partial checksum and the
** in-order segments of one burst are joined into one TSO frame.
** IP fragments from the guest never reach libslirp: libslirp 4.7 crashes
** on a lone last IPv4 fragment and drops every IPv6 packet with a fragment
** header. netbe reassembles them, as Linux does, and hands libslirp the
** whole datagram (IPv6: without the fragment header). Overlapping
** fragments drop the datagram (RFC 5722), an exact duplicate is dropped
** alone; a datagram that would pass 65,535 bytes is dropped, and so is an
** IPv6 one larger than mtu=, which libslirp would refuse (the guest has
** fragmented already, so its ICMPv6 "packet too big" would help nothing).
** At most 256 datagrams and 4 MiB are held per backend (oldest dropped
** first); a datagram incomplete after 30 s, or one that saw no fragment
** while 64 others came, is dropped (Linux's ipfrag_time, _high_thresh and
** _max_dist). Only a fragment header right after the fixed IPv6 header is
** reassembled; libslirp drops packets with other extension headers. Every
** step is counted (the tx_frag counters of struct netbe_stats). Checksum
** offload never repairs a fragment: a fragment whose header asks for a
** checksum lies (the transport checksum covers the whole datagram) and is
** dropped as tx_bad_hdr, and a fragment whose IPv4 header checksum is wrong
** is dropped, not recomputed, so no forged fragment is made valid.
*/

/* Add a host forwarding RULE (the hostfwd= form above, one rule) to a
** running slirp backend. Returns 0, -EINVAL for a bad rule, -EEXIST when
** the host address and port are already forwarded, -EPERM for a UNIX path
** the backend's config was not allowed (netbe_config_allow), -ENOTSUP when
** BE is not a slirp backend, or the errno of a failed bind or listen
** (netbe_unix_clear's for a UNIX path in use). */
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

/* Pull the wire's cable (UP 0) or plug it back in (UP 1; a new wire is
** up). While it is down every frame either side delivers is read and
** dropped, before any policy sees it, and counted per direction; both
** backends stay open, so traffic flows again as soon as it is up. Safe
** from any thread. */
void netbe_wire_set_link(netbe_wire *w, int up);

/* A wire's own counters. LINK_DROPS is indexed by NETBE_DIR_* (A->B is
** NETBE_DIR_TO_GUEST). Safe from any thread. */
struct netbe_wire_stats {
    uint64_t drops;               /* as netbe_wire_drops */
    uint64_t link_drops[2];       /* frames dropped while the link was down */
    int link_up;                  /* 1 up, 0 down */
};
void netbe_wire_get_stats(netbe_wire *w, struct netbe_wire_stats *st);

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
** runs its wire's event base). Each of its Lua hooks runs in a sandbox of
** its own (see "Lua sandboxes" below), created when the policy is built.
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

/* Which match fields of a rule apply (struct netbe_rule.match).
** ORDER NETBE_M: netbe.c's table of fields (POL_FIELDS) has one row per
** bit, in this order, and checks it against these values. */
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
    /* LUA: Lua source text (never bytecode: it is loaded with mode "t",
    ** so a binary chunk is refused) of a chunk that returns the hook, a
    ** function: "return function(pkt) if pkt.dport == 22 then return
    ** 'drop' end end". The chunk runs once, when the policy is built, in
    ** the hook's own sandbox and within the hook's bounds; locals it sets
    ** up stay the hook's own between calls. The hook is called per frame
    ** with the packet view and returns "pass", "drop" or nil to continue.
    ** The view has fields len, dir, src_mac, dst_mac, ethertype, vlan,
    ** family, src_ip, dst_ip, proto, sport, dport, tcp_flags, icmp_type
    ** (nil when the frame does not carry one) and pkt:byte(off),
    ** pkt:u16(off), pkt:u32(off): big-endian, 0-based into the frame, nil
    ** past its end. The sandbox's libraries are listed under "Lua
    ** sandboxes". A hook that errors, runs past hook_budget instructions
    ** or hook_time_ns, grows its state past hook_memory or returns
    ** anything else counts a hook error and gets fail_verdict. */
    const char *hook;
    size_t hook_len;
    /* LUA, optional: the chunk name for messages, as in lua_load
    ** ("@vm0.lua" reads "vm0.lua:LINE: ..."). NULL: "=hook". */
    const char *hook_name;
};

/* The match fields, described for whoever compiles rules (the Lua
** module gives this list to lua/netbe/policy.lua as netbe.policy_fields):
** netbe_match_field(I) is the field of bit 1u << I, NULL past the last.
** A field's value fills one to three members of struct netbe_rule; their
** offsets let a compiler store into them without a table of its own. */
struct netbe_rule_member {
    const char *name;                  /* "dport_lo" */
    size_t off, size;                  /* offsetof and sizeof in struct netbe_rule */
    int bytes;                         /* 1: a byte string of LO or HI bytes;
                                       ** 0: an integer from LO to HI */
    long long lo, hi;
    unsigned match;                    /* the bit it turns on when given, or 0 */
};

struct netbe_match_field {
    const char *name;                  /* as policy files and the packet view
                                       ** name it: "dport" */
    unsigned bit;                      /* its NETBE_M_* bit */
    const char *kind;                  /* how it is written and matched: NAME,
                                       ** ENUM, TAG, RANGE, FLAGS, MAC or PREFIX
                                       ** (netbe.c, "Fields") */
    unsigned max;                      /* the largest number a policy file
                                       ** gives it (PREFIX: prefix length) */
    const char *names;                 /* values with names: "tcp=6 udp=17" */
    int nmembers;
    struct netbe_rule_member members[3];
};

const struct netbe_match_field *netbe_match_field(int i);

/* 1 when IP protocol PROTO carries ports (TCP, UDP, SCTP, UDP-Lite), else
** 0. A rule matching proto may match sport or dport only with one of
** these: netbe_policy_new refuses the others, which could never match. */
int netbe_proto_has_ports(int proto);

/* A whole policy. */
struct netbe_policy_desc {
    const struct netbe_rule *rules;
    int nrules;
    int default_verdict;               /* NETBE_PASS or NETBE_DROP */
    int fail_verdict;                  /* what a failing hook gets */
    unsigned hook_budget;              /* Lua instructions per call, at most
                                       ** INT_MAX; 0: 10000 */
    size_t hook_memory;                /* bytes for each hook's state; 0: 4 MiB */
    uint64_t hook_time_ns;             /* CPU time per call; 0: 1 ms */
};

/* All hook states of one policy together hold at most this many bytes. */
#define NETBE_POLICY_HOOKS_MEMORY  (64u << 20)

/* Build a policy from DESC. Checks every rule (names unique, prefixes and
** ranges sane, each hook's chunk loads and returns a function within the
** hook's bounds) and returns 0 and *PP, or a negative errno value with ERR
** naming the rule and the problem. */
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
** Lua sandboxes
** ====================================================================
** A sandbox is a lua_State for Lua code written by someone netbe does not
** trust: policy hooks, and (through the Lua module) policy and topology
** files. Embedders may run their own untrusted Lua in one. Nothing in it
** is shared with another state: its libraries are opened fresh in it, so
** what the code replaces it replaces only for itself.
**
** What the code can call: base (assert, error, ipairs, next, pairs,
** rawequal, rawget, rawlen, rawset, select, tonumber, tostring, type, _G,
** _VERSION), string (all but dump), table, math (all but randomseed) and
** utf8. Left out: anything that reaches files, processes or other code
** (dofile, loadfile, load, require, io, os, package, debug, coroutine),
** that prints (print, warn), that catches errors (pcall, xpcall: they
** would catch the bounds' errors) or touches metatables and the collector
** (setmetatable, getmetatable, collectgarbage; a __gc finalizer would run
** outside every bound). Only source text loads, never bytecode.
**
** Bounds, per call of netbe_sandbox_call:
**   - memory: the allocator refuses what would pass the limit;
**   - time: CPU time of the calling thread, so that time the thread spends
**     preempted does not count. The clock is read at least every 1000 VM
**     instructions (more often as the state holds more, since one
**     instruction may touch all of it: as soon as it grows, down to every
**     instruction once it holds 8 MiB), every megabyte allocated, and
**     inside the library calls whose work does not follow from the size
**     of their arguments: patterns (find, match, gmatch and gsub run
**     netbe's own matcher, with Lua's semantics and messages, counting its
**     steps), string.rep, table.move, insert, remove and sort. A call that
**     passes its bound is stopped within about a millisecond of CPU time,
**     with one exception: a single instruction on strings of many
**     megabytes (comparing long strings that hold zero bytes, converting
**     a long numeric string) runs to its end first, up to about 0.2 s at
**     the default memory limit; a smaller memory limit shortens it. A
**     short call reads no clock at all;
**   - instructions: optional, exact but for one case: when the state
**     grows enough within one interval of the count to halve the interval,
**     the count restarts shorter at once, and what ran of the interval
**     goes uncounted (Lua does not tell). Each such growth may let a call
**     run up to 1000 instructions past its budget.
** A call that passes one fails with a message naming it.
**
** The embedder may push values into the state and read results with the
** Lua C API; whatever runs Lua code (a call, a load) goes through the calls
** below, which never let a Lua error out. One thread at a time.
*/
struct lua_State;

/* Bounds of a sandbox; a zero field takes the default. */
struct netbe_sandbox_limits {
    size_t memory;                     /* bytes the state may hold; 0: 64 MiB */
    uint64_t time_ns;                  /* CPU time per call; 0: 1 s */
    uint64_t instructions;             /* VM instructions per call; 0: no count */
};

/* A new sandbox with LIM (NULL: the defaults), or NULL with ERR set when
** its libraries do not fit in the memory limit. Close it with
** netbe_sandbox_close, never lua_close. */
struct lua_State *netbe_sandbox_new(const struct netbe_sandbox_limits *lim, char *err,
                                    size_t errlen);

/* Compile LEN bytes of Lua source text SRC as a chunk named CHUNKNAME (as
** lua_load names it: "@file", "=name") and push it. A binary chunk is
** refused. The parser runs within the memory and time bounds. Returns 0,
** or a negative errno value with ERR set ("FILE:LINE: ...", or "FILE:
** nested too deeply ..." for nesting past the parser's C stack, which
** Lua reports without a line) and nothing pushed. */
int netbe_sandbox_load(struct lua_State *L, const char *src, size_t len,
                       const char *chunkname, char *err, size_t errlen);

/* Call the function below NARGS arguments on L's stack, protected and
** within the bounds (lua_pcall's contract otherwise). Returns 0 with
** NRESULTS results pushed, or a negative errno value with ERR set to the
** error message or the bound it passed ("FILE:LINE: ran past its time
** bound of 1 s"); then nothing is pushed. No Lua error leaves this call. */
int netbe_sandbox_call(struct lua_State *L, int nargs, int nresults, char *err,
                       size_t errlen);

/* Close sandbox L and free its memory. NULL is a no-op. */
void netbe_sandbox_close(struct lua_State *L);


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

/* The longest device-readable part of a chain netbe_vq_pop returns: a
** frame and the longest virtio-net header. */
#define NETBE_VQ_MAX_READ (NETBE_MAX_FRAME + 12)

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
** skipped.
** A chain whose device-readable part is longer than NETBE_VQ_MAX_READ (a
** tx "frame" no backend may take) breaks no rule: it is returned to the
** used ring with length 0, unread, counted (netbe_vq_dropped), and the
** next chain is taken. Such chains reach the driver with the next
** netbe_vq_publish, so publish after popping as after pushing, also when
** the pop returned 0. The device-writable part has no such limit: a
** driver may post receive buffers larger than any frame (Linux's big
** packets) and the device writes only what the frame needs. */
int netbe_vq_pop(netbe_vq *vq, struct iovec *iov, int iovmax, int allow,
                 struct netbe_vq_chain *ch);

/* Chains netbe_vq_pop gave back unread for being longer than
** NETBE_VQ_MAX_READ, since netbe_vq_new. */
uint64_t netbe_vq_dropped(const netbe_vq *vq);

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
