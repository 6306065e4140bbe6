/*
** vhost-user-net.c: a vhost-user net device with any netbe backend behind it.
**
**   vhost-user-net --socket PATH [--allow-exec] [--allow-files DIR] BACKEND-SPEC
**
** --allow-exec and --allow-files give the backend's config the permissions
** of netbe_config_allow (a UNIX socket path or tftp= under DIR; guestfwd=).
** QEMU connects to PATH and hands us the guest's memory and virtqueues:
**
**   -object memory-backend-memfd,id=mem0,size=256M,share=on
**   -machine pc,memory-backend=mem0
**   -chardev socket,id=c0,path=PATH,reconnect=1
**   -netdev vhost-user,id=n0,chardev=c0 -device virtio-net-pci,netdev=n0
**
** Frames move between the guest's rx/tx virtqueues (walked with netbe's
** netbe_vq_* helper) and the backend (netbe_send/netbe_recv) with the
** virtio-net header the guest negotiated, so offloads the backend can do
** (netbe_get_cap) are offered to the guest. One QEMU is served at a time;
** when it goes away (shut down, killed, restarted) the device forgets the
** guest and waits for the next connection. A guest reboot stops and
** re-sets the rings over the same connection. Runs until SIGINT or SIGTERM,
** then prints the backend's counters. VHOST_USER_NET_DEBUG=1 in the
** environment logs every control message to stderr.
**
** Under TCG, QEMU 7.2 crashes in vhost_net_start when the virtio-net-pci
** device uses MSI-X with a vhost-user backend; give the device vectors=0.
**
** The protocol is QEMU's docs/interop/vhost-user.rst; only what a net device
** with one queue pair needs is offered (no multiqueue, no dirty logging, no
** postcopy). Messages out of order or malformed end the connection.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <event2/event.h>

#include "netbe.h"

/* ====================================================================
** Protocol
** ==================================================================== */

enum {
    VU_GET_FEATURES = 1, VU_SET_FEATURES = 2, VU_SET_OWNER = 3, VU_RESET_OWNER = 4,
    VU_SET_MEM_TABLE = 5, VU_SET_VRING_NUM = 8, VU_SET_VRING_ADDR = 9,
    VU_SET_VRING_BASE = 10, VU_GET_VRING_BASE = 11, VU_SET_VRING_KICK = 12,
    VU_SET_VRING_CALL = 13, VU_SET_VRING_ERR = 14, VU_GET_PROTOCOL_FEATURES = 15,
    VU_SET_PROTOCOL_FEATURES = 16, VU_GET_QUEUE_NUM = 17, VU_SET_VRING_ENABLE = 18,
    VU_NET_SET_MTU = 20, VU_GET_CONFIG = 24,
};

#define VU_VERSION         0x1
#define VU_FLAG_REPLY      (1u << 2)
#define VU_FLAG_NEED_REPLY (1u << 3)
#define VU_VRING_NOFD      (1ull << 8)
#define VU_MAX_FDS         8
#define VU_MAX_REGIONS     8
#define VU_MAX_CONFIG      256

#define VU_F_PROTOCOL_FEATURES (1ull << 30)
#define VU_PF_REPLY_ACK    (1ull << 3)
#define VU_PF_NET_MTU      (1ull << 4)
#define VU_PF_CONFIG       (1ull << 9)
#define VU_PROTOCOL_FEATURES (VU_PF_REPLY_ACK | VU_PF_NET_MTU)

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

/* ====================================================================
** Device state
** ==================================================================== */

#define RXQ 0
#define TXQ 1
#define IOVMAX 1024              /* longest chain we take; Linux uses ~20 */
#define BUDGET 256               /* frames per turn before others get one */

struct mapping {
    uint64_t gpa, size, uva;
    uint8_t *host;
    void *base;
    size_t len;
};

struct dev;

struct vring {
    struct dev *dev;
    netbe_vq *vq;
    int index;
    unsigned num;
    uint16_t base;
    int have_addr, started, enabled;
    uint64_t desc_uva, avail_uva, used_uva;
    int kick_fd, call_fd, err_fd;
    struct event *kick_ev, *resume_ev;
};

struct dev {
    struct event_base *base;
    netbe *be;
    const char *path;
    struct netbe_unix_id bound;  /* PATH, once bound */
    unsigned allow;              /* NETBE_ALLOW_* for the backend's config */
    const char *allow_dir;
    int listen_fd, conn_fd;
    struct event *accept_ev, *conn_ev;
    uint64_t offered, features, protocol;
    unsigned hdr_len, mtu;
    uint8_t mac[6];
    struct mapping mem[VU_MAX_REGIONS];
    int nmem;
    struct vring q[2];
    /* A tx chain the backend refused with EAGAIN, resent on NETBE_EV_TX. */
    int tx_held;
    struct netbe_vq_chain tx_chain;
    struct iovec tx_iov[IOVMAX];
    struct iovec rx_iov[IOVMAX];
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vhost-user-net: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* ====================================================================
** Guest memory
** ==================================================================== */

static void *guest_map(void *arg, uint64_t gpa, uint64_t len)
{
    struct dev *d = arg;
    for (int i = 0; i < d->nmem; i++) {
        struct mapping *m = &d->mem[i];
        if (gpa >= m->gpa && gpa - m->gpa <= m->size && len <= m->size - (gpa - m->gpa))
            return m->host + (gpa - m->gpa);
    }
    return NULL;
}

/* Ring addresses come as QEMU's virtual addresses: find their guest address. */
static int uva_to_gpa(struct dev *d, uint64_t uva, uint64_t *gpa)
{
    for (int i = 0; i < d->nmem; i++) {
        struct mapping *m = &d->mem[i];
        if (uva >= m->uva && uva - m->uva < m->size) {
            *gpa = m->gpa + (uva - m->uva);
            return 0;
        }
    }
    return -EFAULT;
}

static void mem_unmap(struct dev *d)
{
    for (int i = 0; i < d->nmem; i++)
        munmap(d->mem[i].base, d->mem[i].len);
    d->nmem = 0;
}

/* ====================================================================
** Rings
** ==================================================================== */

static void ring_signal(int fd)
{
    if (fd >= 0)
        eventfd_write(fd, 1);
}

static void ring_publish(struct vring *r)
{
    if (netbe_vq_publish(r->vq) == 1)
        ring_signal(r->call_fd);
}

static int ring_running(struct vring *r)
{
    return r->started && r->enabled && netbe_vq_ready(r->vq);
}

/* The guest broke a ring's rules: stop serving it until it is set up again. */
static void ring_broken(struct vring *r)
{
    say("queue %d stopped: %s", r->index, netbe_vq_error(r->vq));
    ring_signal(r->err_fd);
}

static void set_fd(int *slot, int fd)
{
    if (*slot >= 0)
        close(*slot);
    *slot = fd;
}

/* Forget the ring's rings and descriptors (GET_VRING_BASE, reset). */
static void ring_stop(struct dev *d, struct vring *r)
{
    if (r->started)
        r->base = netbe_vq_get_base(r->vq);
    r->started = 0;
    netbe_vq_reset(r->vq);
    if (r->kick_ev)
        event_free(r->kick_ev);
    r->kick_ev = NULL;
    set_fd(&r->kick_fd, -1);
    if (r->index == RXQ)
        netbe_rx_disable(d->be);
    else
        d->tx_held = 0;
}

static void ring_forget(struct dev *d, struct vring *r)
{
    ring_stop(d, r);
    set_fd(&r->call_fd, -1);
    set_fd(&r->err_fd, -1);
    r->base = 0;
    r->num = 0;
    r->have_addr = 0;
    r->enabled = 0;
}

/* ====================================================================
** Data path
** ==================================================================== */

/* Backend -> guest: fill rx buffers until either side runs dry. */
static void rx_pump(struct dev *d)
{
    struct vring *r = &d->q[RXQ];
    struct netbe_vq_chain ch;
    int budget = BUDGET;
    if (!ring_running(r))
        return;
    while (budget > 0) {
        int rc = netbe_vq_pop(r->vq, d->rx_iov, IOVMAX, NETBE_VQ_WRITE, &ch);
        if (rc < 0) {
            ring_broken(r);
            netbe_rx_disable(d->be);
            break;
        }
        if (rc == 0) {
            /* No room in the guest: wait for its kick, leave frames queued. */
            if (netbe_vq_notify_enable(r->vq) == 1)
                continue;
            netbe_rx_disable(d->be);
            break;
        }
        ssize_t n = netbe_recv(d->be, d->rx_iov, ch.nwrite);
        if (n <= 0) {
            netbe_vq_unpop(r->vq);
            if (n == -EMSGSIZE)
                continue;        /* too big for the buffer: dropped and counted */
            break;
        }
        netbe_vq_push(r->vq, ch.head, (uint32_t)n);
        budget--;
    }
    ring_publish(r);
    if (budget == 0)
        event_active(r->resume_ev, 0, 0);
}

/* Send the held chain; returns 0 when sent or dropped, -EAGAIN to wait. */
static int tx_send_held(struct dev *d)
{
    struct vring *r = &d->q[TXQ];
    ssize_t n = netbe_send(d->be, d->tx_iov, d->tx_chain.nread);
    if (n == -EAGAIN)
        return -EAGAIN;
    d->tx_held = 0;
    netbe_vq_push(r->vq, d->tx_chain.head, 0);
    return 0;
}

/* Guest -> backend: send every chain the guest made available. */
static void tx_pump(struct dev *d)
{
    struct vring *r = &d->q[TXQ];
    int budget = BUDGET;
    if (!ring_running(r))
        return;
    netbe_vq_notify_disable(r->vq);
    while (budget > 0) {
        if (!d->tx_held) {
            int rc = netbe_vq_pop(r->vq, d->tx_iov, IOVMAX, NETBE_VQ_READ, &d->tx_chain);
            if (rc < 0) {
                ring_broken(r);
                break;
            }
            if (rc == 0) {
                if (netbe_vq_notify_enable(r->vq) == 1) {
                    netbe_vq_notify_disable(r->vq);
                    continue;
                }
                break;
            }
            d->tx_held = 1;
        }
        if (tx_send_held(d) == -EAGAIN)
            break;               /* NETBE_EV_TX resumes us */
        budget--;
    }
    ring_publish(r);
    if (budget == 0)
        event_active(r->resume_ev, 0, 0);
}

static void on_backend(netbe *be, int events, void *arg)
{
    struct dev *d = arg;
    if (events & NETBE_EV_TX)
        tx_pump(d);
    if (events & NETBE_EV_RX)
        rx_pump(d);
}

/* The guest kicked ring R, or it may have work: serve it. */
static void ring_kick(struct vring *r)
{
    struct dev *d = r->dev;
    if (r->index == RXQ) {
        /* The guest posted buffers: take frames from the backend again. */
        if (!ring_running(r))
            return;
        netbe_vq_notify_disable(r->vq);
        netbe_rx_enable(d->be);
        rx_pump(d);
    } else {
        tx_pump(d);
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    eventfd_t v;
    eventfd_read(fd, &v);
    ring_kick(arg);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    ring_kick(arg);
}

/* Start serving ring R once it has addresses, memory and a kick. */
static int ring_start(struct dev *d, struct vring *r)
{
    char err[NETBE_ERRMAX];
    uint64_t desc, avail, used;
    if (!r->have_addr || r->kick_fd < 0)
        return 0;
    if (uva_to_gpa(d, r->desc_uva, &desc) < 0 || uva_to_gpa(d, r->avail_uva, &avail) < 0 ||
        uva_to_gpa(d, r->used_uva, &used) < 0) {
        say("queue %d: ring addresses are outside the memory table", r->index);
        return -EFAULT;
    }
    netbe_vq_set_base(r->vq, r->base);
    if (netbe_vq_setup(r->vq, r->num, desc, avail, used, d->features, err, sizeof err) < 0) {
        say("queue %d: %s", r->index, err);
        return -EINVAL;
    }
    if (!r->kick_ev) {
        r->kick_ev = event_new(d->base, r->kick_fd, EV_READ | EV_PERSIST, on_kick, r);
        if (!r->kick_ev)
            return -ENOMEM;
        event_add(r->kick_ev, NULL);
    }
    r->started = 1;
    if (r->enabled)
        ring_kick(r);        /* buffers may be waiting already */
    return 0;
}

/* ====================================================================
** Messages
** ==================================================================== */

static int send_reply(struct dev *d, struct vu_msg *m, uint32_t size)
{
    m->flags = VU_VERSION | VU_FLAG_REPLY;
    m->size = size;
    size_t len = VU_HDR_SIZE + size;
    return send(d->conn_fd, m, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -EIO;
}

static int reply_u64(struct dev *d, struct vu_msg *m, uint64_t v)
{
    m->p.u64 = v;
    return send_reply(d, m, sizeof m->p.u64);
}

/* Take the one fd message M must carry. */
static int take_fd(struct vu_msg *m)
{
    if (m->nfds != 1)
        return -1;
    m->nfds = 0;
    return m->fds[0];
}

static struct vring *msg_ring(struct dev *d, uint32_t index)
{
    return index < 2 ? &d->q[index] : NULL;
}

static int set_features(struct dev *d, uint64_t f)
{
    if (f & ~d->offered) {
        say("SET_FEATURES 0x%llx: not a subset of the offered 0x%llx",
            (unsigned long long)f, (unsigned long long)d->offered);
        return -EINVAL;
    }
    d->features = f;
    d->hdr_len = f & (NETBE_F_VERSION_1 | NETBE_F_MRG_RXBUF) ? 12 : 10;
    int rc = netbe_set_cap(d->be, f & NETBE_F_OFFLOADS, d->hdr_len);
    if (rc < 0)
        say("backend refused features 0x%llx: %s", (unsigned long long)f, strerror(-rc));
    /* Without PROTOCOL_FEATURES, rings are enabled as soon as they start. */
    if (!(f & VU_F_PROTOCOL_FEATURES))
        d->q[RXQ].enabled = d->q[TXQ].enabled = 1;
    return rc;
}

static int set_mem_table(struct dev *d, struct vu_msg *m)
{
    uint32_t n = m->p.mem.nregions;
    if (n == 0 || n > VU_MAX_REGIONS || (int)n != m->nfds ||
        m->size != 8 + n * sizeof(struct vu_region)) {
        say("SET_MEM_TABLE: %u regions with %d fds in %u bytes", n, m->nfds, m->size);
        return -EINVAL;
    }
    mem_unmap(d);
    for (uint32_t i = 0; i < n; i++) {
        struct vu_region reg;
        struct mapping *mp = &d->mem[i];
        memcpy(&reg, (char *)m + offsetof(struct vu_msg, p.mem.r) + i * sizeof reg, sizeof reg);
        if (reg.size == 0 || reg.mmap_offset > SIZE_MAX - reg.size) {
            say("SET_MEM_TABLE: region %u has size %llu", i, (unsigned long long)reg.size);
            return -EINVAL;
        }
        mp->len = reg.size + reg.mmap_offset;
        mp->base = mmap(NULL, mp->len, PROT_READ | PROT_WRITE, MAP_SHARED, m->fds[i], 0);
        if (mp->base == MAP_FAILED) {
            say("SET_MEM_TABLE: cannot map region %u: %s", i, strerror(errno));
            return -errno;
        }
        mp->host = (uint8_t *)mp->base + reg.mmap_offset;
        mp->gpa = reg.gpa;
        mp->size = reg.size;
        mp->uva = reg.uva;
        d->nmem = (int)i + 1;
    }
    /* Rings already running move to the new mappings. */
    for (int i = 0; i < 2; i++)
        if (d->q[i].started) {
            d->q[i].base = netbe_vq_get_base(d->q[i].vq);
            ring_start(d, &d->q[i]);
        }
    return 0;
}

static int get_config(struct dev *d, struct vu_msg *m)
{
    uint8_t cfg[VU_MAX_CONFIG] = {0};
    uint32_t off = m->p.config.offset, size = m->p.config.size;
    if (size > VU_MAX_CONFIG || off > VU_MAX_CONFIG - size || m->size != 12 + size)
        return -EINVAL;
    memcpy(cfg, d->mac, 6);
    cfg[6] = 1;                                  /* status: link up */
    cfg[8] = 1;                                  /* max_virtqueue_pairs */
    cfg[10] = (uint8_t)d->mtu;
    cfg[11] = (uint8_t)(d->mtu >> 8);
    memcpy(m->p.config.data, cfg + off, size);
    return send_reply(d, m, 12 + size);
}

/* Handle one message; a negative return ends the connection. Returns 1
** when the message already sent its reply. */
static int handle(struct dev *d, struct vu_msg *m)
{
    struct vring *r;
    switch (m->request) {
    case VU_GET_FEATURES:
        return reply_u64(d, m, d->offered) < 0 ? -EIO : 1;
    case VU_SET_FEATURES:
        return set_features(d, m->p.u64);
    case VU_GET_PROTOCOL_FEATURES:
        return reply_u64(d, m, VU_PROTOCOL_FEATURES) < 0 ? -EIO : 1;
    case VU_SET_PROTOCOL_FEATURES:
        d->protocol = m->p.u64 & VU_PROTOCOL_FEATURES;
        return 0;
    case VU_SET_OWNER:
        return 0;
    case VU_RESET_OWNER:
        for (int i = 0; i < 2; i++)
            ring_forget(d, &d->q[i]);
        d->features = 0;
        return 0;
    case VU_SET_MEM_TABLE:
        return set_mem_table(d, m);
    case VU_GET_QUEUE_NUM:
        return reply_u64(d, m, 1) < 0 ? -EIO : 1;
    case VU_NET_SET_MTU:
        d->mtu = (unsigned)m->p.u64;
        return 0;
    case VU_GET_CONFIG:
        return get_config(d, m) < 0 ? -EIO : 1;
    }
    /* The rest address one ring. */
    uint32_t index = m->request == VU_SET_VRING_KICK || m->request == VU_SET_VRING_CALL ||
                     m->request == VU_SET_VRING_ERR ? (uint32_t)(m->p.u64 & 0xff) :
                     m->p.state.index;
    if (!(r = msg_ring(d, index))) {
        say("request %u for queue %u: this device has queues 0 and 1", m->request, index);
        return -EINVAL;
    }
    int fd;
    switch (m->request) {
    case VU_SET_VRING_NUM:
        r->num = m->p.state.num;
        return 0;
    case VU_SET_VRING_ADDR:
        r->desc_uva = m->p.addr.desc;
        r->avail_uva = m->p.addr.avail;
        r->used_uva = m->p.addr.used;
        r->have_addr = 1;
        return 0;
    case VU_SET_VRING_BASE:
        r->base = (uint16_t)m->p.state.num;
        return 0;
    case VU_GET_VRING_BASE:
        ring_stop(d, r);
        m->p.state.num = r->base;
        return send_reply(d, m, sizeof m->p.state) < 0 ? -EIO : 1;
    case VU_SET_VRING_KICK:
    case VU_SET_VRING_CALL:
    case VU_SET_VRING_ERR:
        fd = m->p.u64 & VU_VRING_NOFD ? -1 : take_fd(m);
        if (fd < 0 && m->request == VU_SET_VRING_KICK) {
            say("SET_VRING_KICK without an eventfd: polling is not supported");
            return -EINVAL;
        }
        if (m->request == VU_SET_VRING_CALL) {
            set_fd(&r->call_fd, fd);
            return 0;
        }
        if (m->request == VU_SET_VRING_ERR) {
            set_fd(&r->err_fd, fd);
            return 0;
        }
        ring_stop(d, r);
        r->kick_fd = fd;
        return ring_start(d, r);
    case VU_SET_VRING_ENABLE:
        r->enabled = m->p.state.num != 0;
        if (!r->enabled && r->index == RXQ)
            netbe_rx_disable(d->be);
        if (r->enabled && r->started)
            ring_kick(r);
        return 0;
    }
    say("request %u is not supported", m->request);
    return -ENOTSUP;
}

/* Payload size each fixed-size request must have; -1: variable or none. */
static int payload_size(uint32_t request)
{
    switch (request) {
    case VU_SET_FEATURES: case VU_SET_PROTOCOL_FEATURES: case VU_SET_VRING_KICK:
    case VU_SET_VRING_CALL: case VU_SET_VRING_ERR: case VU_NET_SET_MTU:
    case VU_SET_VRING_NUM: case VU_SET_VRING_BASE: case VU_GET_VRING_BASE:
    case VU_SET_VRING_ENABLE:
        return 8;
    case VU_SET_VRING_ADDR:
        return (int)sizeof(struct vu_vring_addr);
    }
    return -1;
}

/* Read one message with its fds. Returns 0, or -1 when the peer is gone or
** sent something that is not a message. */
static int read_msg(struct dev *d, struct vu_msg *m)
{
    char ctl[CMSG_SPACE(VU_MAX_FDS * sizeof(int))];
    struct iovec v = {m, VU_HDR_SIZE};
    struct msghdr mh = {.msg_iov = &v, .msg_iovlen = 1, .msg_control = ctl,
                        .msg_controllen = sizeof ctl};
    m->nfds = 0;
    ssize_t n = recvmsg(d->conn_fd, &mh, MSG_CMSG_CLOEXEC);
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); n > 0 && c; c = CMSG_NXTHDR(&mh, c))
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int k = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            memcpy(m->fds, CMSG_DATA(c), k * sizeof(int));
            m->nfds = k;
        }
    if (n != VU_HDR_SIZE) {
        if (n != 0)
            say("short message header (%zd bytes): %s", n, n < 0 ? strerror(errno) : "");
        return -1;
    }
    if ((m->flags & 0x3) != VU_VERSION || m->size > sizeof m->p) {
        say("bad message header: request %u flags 0x%x size %u", m->request, m->flags,
            m->size);
        return -1;
    }
    int want = payload_size(m->request);
    if (want >= 0 && m->size != (uint32_t)want) {
        say("request %u: payload of %u bytes, expected %d", m->request, m->size, want);
        return -1;
    }
    if (m->size && recv(d->conn_fd, &m->p, m->size, MSG_WAITALL) != (ssize_t)m->size) {
        say("request %u: payload of %u bytes cut short", m->request, m->size);
        return -1;
    }
    return 0;
}

static void close_fds(struct vu_msg *m)
{
    for (int i = 0; i < m->nfds; i++)
        close(m->fds[i]);
    m->nfds = 0;
}

/* QEMU is gone: forget the guest and listen for the next one. */
static void disconnect(struct dev *d)
{
    for (int i = 0; i < 2; i++)
        ring_forget(d, &d->q[i]);
    mem_unmap(d);
    d->features = d->protocol = 0;
    event_free(d->conn_ev);
    d->conn_ev = NULL;
    close(d->conn_fd);
    d->conn_fd = -1;
    event_add(d->accept_ev, NULL);
    say("disconnected; waiting for the next connection");
}

static void on_message(evutil_socket_t fd, short what, void *arg)
{
    struct dev *d = arg;
    struct vu_msg m;
    if (read_msg(d, &m) < 0) {
        close_fds(&m);
        disconnect(d);
        return;
    }
    if (getenv("VHOST_USER_NET_DEBUG"))
        say("request %u flags 0x%x size %u fds %d", m.request, m.flags, m.size, m.nfds);
    int rc = handle(d, &m);
    close_fds(&m);
    if (rc < 0 && getenv("VHOST_USER_NET_DEBUG"))
        say("request %u failed: %s", m.request, strerror(-rc));
    /* REPLY_ACK: a message that asked and has no reply yet gets 0 (done) or 1. */
    if (rc <= 0 && (m.flags & VU_FLAG_NEED_REPLY) && (d->protocol & VU_PF_REPLY_ACK) &&
        reply_u64(d, &m, rc < 0) < 0)
        rc = -EIO;
    if (rc < 0)
        disconnect(d);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct dev *d = arg;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    /* A peer that stops mid-message must not hang the device. */
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    d->conn_fd = fd;
    d->conn_ev = event_new(d->base, fd, EV_READ | EV_PERSIST, on_message, d);
    event_add(d->conn_ev, NULL);
    event_del(d->accept_ev);
    say("connected");
}

/* ====================================================================
** Main
** ==================================================================== */

/* Listen on PATH, taking over only a stale socket there (netbe_unix_clear). */
static int listen_on(const char *path, struct netbe_unix_id *bound)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    char err[NETBE_ERRMAX];
    if (strlen(path) >= sizeof sa.sun_path) {
        say("--socket '%s': at most %zu characters", path, sizeof sa.sun_path - 1);
        return -1;
    }
    strcpy(sa.sun_path, path);
    if (netbe_unix_clear(path, err, sizeof err) < 0) {
        say("--socket: %s", err);
        return -1;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        say("cannot listen on %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    netbe_unix_mark(path, bound);
    if (listen(fd, 1) < 0) {
        say("cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        netbe_unix_release(path, bound);
        return -1;
    }
    return fd;
}

/* Open SPEC with the permissions given on the command line. */
static int open_backend(struct dev *d, const char *spec, char *err, size_t errlen)
{
    netbe_config *cfg = netbe_config_new();
    if (!cfg)
        return -ENOMEM;
    int rc = netbe_config_parse(cfg, spec, err, errlen);
    if (rc == 0 && d->allow)
        rc = netbe_config_allow(cfg, d->allow, d->allow_dir, err, errlen);
    if (rc == 0)
        rc = netbe_open(&d->be, cfg, d->base, on_backend, d, err, errlen);
    netbe_config_free(cfg);
    return rc;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopbreak(arg);
}

static int dev_init(struct dev *d, const char *spec)
{
    char err[NETBE_ERRMAX];
    if (open_backend(d, spec, err, sizeof err) < 0) {
        say("%s", err);
        return -1;
    }
    d->offered = NETBE_F_VERSION_1 | NETBE_F_RING_EVENT_IDX | NETBE_F_RING_INDIRECT_DESC |
                 VU_F_PROTOCOL_FEATURES | NETBE_F_MTU |
                 (netbe_get_cap(d->be) & NETBE_F_OFFLOADS);
    d->mtu = netbe_get_mtu(d->be);
    if (netbe_get_mac(d->be, d->mac) < 0)
        netbe_mac_generate(0, 0, d->path, d->mac);
    for (int i = 0; i < 2; i++) {
        struct vring *r = &d->q[i];
        r->index = i;
        r->dev = d;
        r->kick_fd = r->call_fd = r->err_fd = -1;
        r->resume_ev = event_new(d->base, -1, 0, on_resume, r);
        if (netbe_vq_new(&r->vq, guest_map, d) < 0 || !r->resume_ev) {
            say("out of memory");
            return -1;
        }
    }
    d->conn_fd = -1;
    d->listen_fd = listen_on(d->path, &d->bound);
    if (d->listen_fd < 0)
        return -1;
    d->accept_ev = event_new(d->base, d->listen_fd, EV_READ | EV_PERSIST, on_accept, d);
    event_add(d->accept_ev, NULL);
    return 0;
}

static void dev_free(struct dev *d)
{
    if (d->conn_fd >= 0)
        disconnect(d);
    for (int i = 0; i < 2; i++) {
        netbe_vq_free(d->q[i].vq);
        if (d->q[i].resume_ev)
            event_free(d->q[i].resume_ev);
    }
    if (d->accept_ev)
        event_free(d->accept_ev);
    if (d->listen_fd >= 0) {
        close(d->listen_fd);
        netbe_unix_release(d->path, &d->bound);
    }
    if (d->be) {
        struct netbe_stats st;
        netbe_get_stats(d->be, &st);
        printf("%s: rx %llu frames %llu bytes, tx %llu frames %llu bytes, "
               "drops %llu/%llu, errors %llu/%llu\n", netbe_name(d->be),
               (unsigned long long)st.rx_frames, (unsigned long long)st.rx_bytes,
               (unsigned long long)st.tx_frames, (unsigned long long)st.tx_bytes,
               (unsigned long long)st.rx_drops, (unsigned long long)st.tx_drops,
               (unsigned long long)st.rx_errors, (unsigned long long)st.tx_errors);
        netbe_close(d->be);
    }
}

int main(int argc, char **argv)
{
    static struct dev d = {.listen_fd = -1, .conn_fd = -1};
    int i = 3;
    for (; i < argc - 1; i++) {
        if (strcmp(argv[i], "--allow-exec") == 0) {
            d.allow |= NETBE_ALLOW_EXEC;
        } else if (strcmp(argv[i], "--allow-files") == 0 && i + 2 < argc) {
            d.allow |= NETBE_ALLOW_FILES;
            d.allow_dir = argv[++i];
        } else {
            break;
        }
    }
    if (argc < 4 || strcmp(argv[1], "--socket") != 0 || i != argc - 1) {
        fprintf(stderr, "usage: %s --socket PATH [--allow-exec] [--allow-files DIR] "
                "BACKEND-SPEC\n", argv[0]);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    d.path = argv[2];
    d.base = event_base_new();
    if (!d.base) {
        say("cannot create an event base");
        return 1;
    }
    struct event *sigint = evsignal_new(d.base, SIGINT, on_signal, d.base);
    struct event *sigterm = evsignal_new(d.base, SIGTERM, on_signal, d.base);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    int status = 1;
    if (dev_init(&d, argv[argc - 1]) == 0) {
        say("listening on %s, backend %s", d.path, netbe_name(d.be));
        fflush(stderr);
        event_base_dispatch(d.base);
        status = 0;
    }
    dev_free(&d);
    event_free(sigint);
    event_free(sigterm);
    event_base_free(d.base);
    return status;
}
