/*
** vhost_user.c: decoding and checking vhost-user messages. See vhost_user.h.
*/
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vhost_user.h"

/* What each request this device takes looks like on the wire. */
struct vu_req {
    uint32_t request;
    const char *name;
    int size;                    /* payload bytes; -1: checked per request */
};

static const struct vu_req vu_reqs[] = {
    {VU_GET_FEATURES, "GET_FEATURES", 0},
    {VU_SET_FEATURES, "SET_FEATURES", 8},
    {VU_SET_OWNER, "SET_OWNER", 0},
    {VU_RESET_OWNER, "RESET_OWNER", 0},
    {VU_SET_MEM_TABLE, "SET_MEM_TABLE", -1},
    {VU_SET_VRING_NUM, "SET_VRING_NUM", 8},
    {VU_SET_VRING_ADDR, "SET_VRING_ADDR", (int)sizeof(struct vu_vring_addr)},
    {VU_SET_VRING_BASE, "SET_VRING_BASE", 8},
    {VU_GET_VRING_BASE, "GET_VRING_BASE", 8},
    {VU_SET_VRING_KICK, "SET_VRING_KICK", 8},
    {VU_SET_VRING_CALL, "SET_VRING_CALL", 8},
    {VU_SET_VRING_ERR, "SET_VRING_ERR", 8},
    {VU_GET_PROTOCOL_FEATURES, "GET_PROTOCOL_FEATURES", 0},
    {VU_SET_PROTOCOL_FEATURES, "SET_PROTOCOL_FEATURES", 8},
    {VU_GET_QUEUE_NUM, "GET_QUEUE_NUM", 0},
    {VU_SET_VRING_ENABLE, "SET_VRING_ENABLE", 8},
    {VU_NET_SET_MTU, "NET_SET_MTU", 8},
    {VU_GET_CONFIG, "GET_CONFIG", -1},
};

static const struct vu_req *vu_req_find(uint32_t request)
{
    for (size_t i = 0; i < sizeof vu_reqs / sizeof vu_reqs[0]; i++)
        if (vu_reqs[i].request == request)
            return &vu_reqs[i];
    return NULL;
}

const char *vu_request_name(uint32_t request, char *buf, size_t len)
{
    const struct vu_req *q = vu_req_find(request);
    if (q)
        return q->name;
    snprintf(buf, len, "request %u", request);
    return buf;
}

/* Write "NAME: message" into ERR and return -CODE. */
static int vu_fail(const struct vu_msg *m, char *err, size_t errlen, int code,
                   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static int vu_fail(const struct vu_msg *m, char *err, size_t errlen, int code,
                   const char *fmt, ...)
{
    char name[32], text[200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    if (err && errlen)
        snprintf(err, errlen, "%s%s", m ? vu_request_name(m->request, name, sizeof name) : "",
                 text);
    return -code;
}

int vu_msg_check_header(const struct vu_msg *m, char *err, size_t errlen)
{
    uint32_t reserved = m->flags & ~(VU_FLAG_VERSION | VU_FLAG_NEED_REPLY);
    if ((m->flags & VU_FLAG_VERSION) != VU_VERSION || reserved || m->size > sizeof m->p)
        return vu_fail(NULL, err, errlen, EINVAL, "bad message header: request %u flags "
                       "0x%x size %u (expected version 1, no flags but NEED_REPLY, a "
                       "payload of at most %zu bytes)", m->request, m->flags, m->size,
                       sizeof m->p);
    const struct vu_req *q = vu_req_find(m->request);
    if (q && q->size >= 0 && m->size != (uint32_t)q->size)
        return vu_fail(m, err, errlen, EINVAL, ": payload of %u bytes, expected %d", m->size,
                       q->size);
    return 0;
}

uint32_t vu_msg_ring(const struct vu_msg *m)
{
    if (m->request == VU_SET_VRING_KICK || m->request == VU_SET_VRING_CALL ||
        m->request == VU_SET_VRING_ERR)
        return (uint32_t)(m->p.u64 & VU_VRING_INDEX);
    return m->p.state.index;
}

/* Descriptors the request of M must come with. */
static int vu_fds_wanted(const struct vu_msg *m)
{
    switch (m->request) {
    case VU_SET_MEM_TABLE:
        return (int)m->p.mem.nregions;
    case VU_SET_VRING_KICK: case VU_SET_VRING_CALL: case VU_SET_VRING_ERR:
        return m->p.u64 & VU_VRING_NOFD ? 0 : 1;
    }
    return 0;
}

/* True when [A, A + ALEN) and [B, B + BLEN) share a byte (no wrap). */
static int vu_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

static int vu_check_regions(const struct vu_msg *m, char *err, size_t errlen)
{
    uint32_t n = m->p.mem.nregions;
    if (m->size < 8 || n == 0 || n > VU_MAX_REGIONS ||
        m->size != 8 + n * sizeof(struct vu_region))
        return vu_fail(m, err, errlen, EINVAL, ": %u regions in %u bytes (expected 1 to %d "
                       "regions of %zu bytes after 8)", n, m->size, VU_MAX_REGIONS,
                       sizeof(struct vu_region));
    if (m->nfds != (int)n)
        return vu_fail(m, err, errlen, EINVAL, ": %u regions with %d fds (one descriptor "
                       "per region expected)", n, m->nfds);
    struct vu_region r[VU_MAX_REGIONS];
    memcpy(r, m->p.mem.r, n * sizeof r[0]);
    for (uint32_t i = 0; i < n; i++) {
        /* Offsets into the file must fit an off_t; addresses must not wrap. */
        if (r[i].size == 0 || r[i].size > INT64_MAX || r[i].mmap_offset > INT64_MAX - r[i].size ||
            r[i].gpa > UINT64_MAX - r[i].size || r[i].uva > UINT64_MAX - r[i].size)
            return vu_fail(m, err, errlen, EINVAL, ": region %u (guest 0x%llx, user 0x%llx, "
                           "size 0x%llx, offset 0x%llx): expected a non-zero size and "
                           "ranges that do not wrap", i, (unsigned long long)r[i].gpa,
                           (unsigned long long)r[i].uva, (unsigned long long)r[i].size,
                           (unsigned long long)r[i].mmap_offset);
        for (uint32_t j = 0; j < i; j++)
            if (vu_overlap(r[i].gpa, r[i].size, r[j].gpa, r[j].size) ||
                vu_overlap(r[i].uva, r[i].size, r[j].uva, r[j].size))
                return vu_fail(m, err, errlen, EINVAL, ": regions %u and %u overlap", j, i);
    }
    return 0;
}

/* Ring fields: the index, then what each request says of the ring. */
static int vu_check_ring(const struct vu_msg *m, unsigned nqueues, char *err,
                         size_t errlen)
{
    uint32_t index = vu_msg_ring(m), num = m->p.state.num;
    if (index >= nqueues)
        return vu_fail(m, err, errlen, EINVAL, " for queue %u: this device has queues 0 "
                       "to %u", index, nqueues - 1);
    switch (m->request) {
    case VU_SET_VRING_NUM:
        if (num == 0 || num > VU_MAX_RING || (num & (num - 1)))
            return vu_fail(m, err, errlen, EINVAL, ": queue %u size %u (expected a power "
                           "of 2 from 1 to %d)", index, num, VU_MAX_RING);
        return 0;
    case VU_SET_VRING_BASE:
        if (num > UINT16_MAX)
            return vu_fail(m, err, errlen, EINVAL, ": queue %u base %u (expected at most "
                           "65535)", index, num);
        return 0;
    case VU_SET_VRING_ENABLE:
        if (num > 1)
            return vu_fail(m, err, errlen, EINVAL, ": queue %u enable %u (expected 0 or 1)",
                           index, num);
        return 0;
    case VU_SET_VRING_ADDR:
        if (m->p.addr.flags)
            return vu_fail(m, err, errlen, EINVAL, ": queue %u flags 0x%x (dirty logging "
                           "is not offered: expected 0)", index, m->p.addr.flags);
        if (m->p.addr.desc % 16 || m->p.addr.avail % 2 || m->p.addr.used % 4)
            return vu_fail(m, err, errlen, EINVAL, ": queue %u desc 0x%llx avail 0x%llx "
                           "used 0x%llx (expected 16-, 2- and 4-byte alignment)", index,
                           (unsigned long long)m->p.addr.desc,
                           (unsigned long long)m->p.addr.avail,
                           (unsigned long long)m->p.addr.used);
        return 0;
    case VU_SET_VRING_KICK: case VU_SET_VRING_CALL: case VU_SET_VRING_ERR:
        if (m->p.u64 & ~(VU_VRING_INDEX | VU_VRING_NOFD))
            return vu_fail(m, err, errlen, EINVAL, ": payload 0x%llx (expected a queue "
                           "index and the no-descriptor bit 0x100)",
                           (unsigned long long)m->p.u64);
        if (m->request == VU_SET_VRING_KICK && m->p.u64 & VU_VRING_NOFD)
            return vu_fail(m, err, errlen, EINVAL, " without an eventfd: polling is not "
                           "supported");
        return 0;
    }
    return 0;
}

int vu_msg_check(const struct vu_msg *m, unsigned nqueues, char *err, size_t errlen)
{
    const struct vu_req *q = vu_req_find(m->request);
    if (!q)
        return vu_fail(m, err, errlen, ENOTSUP, " is not supported");
    if (m->request == VU_SET_MEM_TABLE)
        return vu_check_regions(m, err, errlen);
    int want = vu_fds_wanted(m);
    if (m->nfds != want)
        return vu_fail(m, err, errlen, EINVAL, ": %d descriptors came with it, expected %d",
                       m->nfds, want);
    switch (m->request) {
    case VU_SET_VRING_NUM: case VU_SET_VRING_ADDR: case VU_SET_VRING_BASE:
    case VU_GET_VRING_BASE: case VU_SET_VRING_KICK: case VU_SET_VRING_CALL:
    case VU_SET_VRING_ERR: case VU_SET_VRING_ENABLE:
        return vu_check_ring(m, nqueues, err, errlen);
    case VU_SET_PROTOCOL_FEATURES:
        if (m->p.u64 & ~VU_PROTOCOL_FEATURES)
            return vu_fail(m, err, errlen, EINVAL, ": 0x%llx is not a subset of the offered "
                           "0x%llx", (unsigned long long)m->p.u64,
                           (unsigned long long)VU_PROTOCOL_FEATURES);
        return 0;
    case VU_NET_SET_MTU:
        if (m->p.u64 < 68 || m->p.u64 > 65535)
            return vu_fail(m, err, errlen, EINVAL, ": MTU %llu (expected 68 to 65535)",
                           (unsigned long long)m->p.u64);
        return 0;
    case VU_GET_CONFIG: {
        uint32_t off = m->p.config.offset, size = m->p.config.size;
        if (m->size < 12 || size > VU_MAX_CONFIG || off > VU_MAX_CONFIG - size ||
            m->size != 12 + size)
            return vu_fail(m, err, errlen, EINVAL, ": offset %u size %u in a payload of %u "
                           "bytes (expected a window of the %d-byte config space, and "
                           "12 + size bytes)", off, size, m->size, VU_MAX_CONFIG);
        return 0;
    }
    }
    return 0;
}
