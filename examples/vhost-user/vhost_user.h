/*
** vhost_user.h: the vhost-user messages a net device with queue pairs
** takes (QEMU's docs/interop/vhost-user.rst), decoded and checked apart
** from any socket, so that a fuzzer can feed them bytes.
**
** A message is a 12-byte header (request, flags, payload size), a payload
** and the descriptors passed with it. Nothing in one is trusted: every
** field of every request is checked before the device acts on it, and a
** message that fails gets an error naming the request, the field and what
** was expected.
*/
#ifndef VHOST_USER_H
#define VHOST_USER_H

#include <stddef.h>
#include <stdint.h>

enum {
    VU_GET_FEATURES = 1, VU_SET_FEATURES = 2, VU_SET_OWNER = 3, VU_RESET_OWNER = 4,
    VU_SET_MEM_TABLE = 5, VU_SET_VRING_NUM = 8, VU_SET_VRING_ADDR = 9,
    VU_SET_VRING_BASE = 10, VU_GET_VRING_BASE = 11, VU_SET_VRING_KICK = 12,
    VU_SET_VRING_CALL = 13, VU_SET_VRING_ERR = 14, VU_GET_PROTOCOL_FEATURES = 15,
    VU_SET_PROTOCOL_FEATURES = 16, VU_GET_QUEUE_NUM = 17, VU_SET_VRING_ENABLE = 18,
    VU_NET_SET_MTU = 20, VU_GET_CONFIG = 24,
};

#define VU_VERSION         0x1
#define VU_FLAG_VERSION    0x3
#define VU_FLAG_REPLY      (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)
#define VU_VRING_INDEX     0xffull       /* SET_VRING_KICK/CALL/ERR: the ring */
#define VU_VRING_NOFD      (1ull << 8)   /* ... and no descriptor comes with it */
#define VU_MAX_FDS         8
#define VU_MAX_REGIONS     8
#define VU_MAX_CONFIG      256
#define VU_MAX_PAIRS       16            /* queue pairs: each an rx and a tx ring */
#define VU_MAX_QUEUES      (2 * VU_MAX_PAIRS)
#define VU_MAX_RING        32768         /* virtio's largest split ring */

#define VU_F_PROTOCOL_FEATURES (1ull << 30)
#define VU_PF_MQ           (1ull << 0)   /* GET_QUEUE_NUM says how many pairs */
#define VU_PF_REPLY_ACK    (1ull << 3)
#define VU_PF_NET_MTU      (1ull << 4)
#define VU_PROTOCOL_FEATURES (VU_PF_MQ | VU_PF_REPLY_ACK | VU_PF_NET_MTU)

struct vu_region {
    uint64_t gpa, size, uva, mmap_offset;
};

struct vu_vring_addr {
    uint32_t index, flags;
    uint64_t desc, used, avail, log;
};

/* On the wire the payload follows the 12-byte header directly: packed. */
struct __attribute__((packed)) vu_msg {
    uint32_t request, flags, size;
    union __attribute__((packed)) {
        uint64_t u64;
        struct { uint32_t index, num; } state;
        struct vu_vring_addr addr;
        struct { uint32_t nregions, padding; struct vu_region r[VU_MAX_REGIONS]; } mem;
        struct { uint32_t offset, size, flags; uint8_t data[VU_MAX_CONFIG]; } config;
    } p;
    /* Not on the wire: the descriptors that came with the message. */
    int fds[VU_MAX_FDS];
    int nfds;
};

#define VU_HDR_SIZE 12

/* The request's name ("SET_MEM_TABLE"), or "request N" in BUF. */
const char *vu_request_name(uint32_t request, char *buf, size_t len);

/* Check the header of M (its first VU_HDR_SIZE bytes): version, no reserved
** flag, a payload that fits M and, for requests with a fixed payload,
** exactly that size. Returns 0, or -EINVAL with ERR naming the field. */
int vu_msg_check_header(const struct vu_msg *m, char *err, size_t errlen);

/* Check the whole message M (header checked, payload and fds in M) for a
** device with NQUEUES rings (twice its queue pairs): the request is one
** this device takes, it came with the descriptors that request carries
** and no others, and every field is in range (ring index, ring size, base,
** enable flag, MTU, config window; SET_MEM_TABLE: region count, sizes and
** addresses that do not wrap or overlap). Returns 0, -ENOTSUP for a
** request the device does not take, or -EINVAL, with ERR naming the
** request, the field and what was expected. */
int vu_msg_check(const struct vu_msg *m, unsigned nqueues, char *err, size_t errlen);

/* The ring a SET_VRING_* or GET_VRING_BASE message of M addresses. */
uint32_t vu_msg_ring(const struct vu_msg *m);

#endif
