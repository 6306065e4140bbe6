/*
** device.c: the vhost-user net device. See device.h.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <event2/event.h>

#include "device.h"

#define BUDGET 256               /* frames per turn before others get one */

void say(const char *fmt, ...)
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

/* Map region R of descriptor FD into MP. The file must hold every byte
** of it: touching a page past its end would kill us with SIGBUS. */
static int mem_map(struct mapping *mp, const struct vu_region *r, int fd, unsigned i)
{
    struct stat st;
    uint64_t end = r->mmap_offset + r->size;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        say("SET_MEM_TABLE: region %u: its descriptor is not a regular file or memfd", i);
        return -EINVAL;
    }
    if ((uint64_t)st.st_size < end) {
        say("SET_MEM_TABLE: region %u needs %llu bytes of its file, which has %lld", i,
            (unsigned long long)end, (long long)st.st_size);
        return -EINVAL;
    }
    mp->len = (size_t)end;
    mp->base = mmap(NULL, mp->len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mp->base == MAP_FAILED) {
        int e = errno;
        say("SET_MEM_TABLE: cannot map region %u: %s", i, strerror(e));
        return -e;
    }
    mp->host = (uint8_t *)mp->base + r->mmap_offset;
    mp->gpa = r->gpa;
    mp->size = r->size;
    mp->uva = r->uva;
    return 0;
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

/* Keep FD (or -1) in *SLOT. Descriptors we write or read from the loop
** must never block it, whatever the front-end passed. */
static void set_fd(int *slot, int fd)
{
    if (*slot >= 0)
        close(*slot);
    if (fd >= 0)
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    *slot = fd;
}

/* Stop serving ring R and keep where it stopped. A tx chain held for the
** backend goes back to the available side, to be taken again. */
static void ring_halt(struct dev *d, struct vring *r)
{
    if (r->index == TXQ && d->tx_held) {
        netbe_vq_unpop(r->vq);
        d->tx_held = 0;
    }
    if (r->started)
        r->base = netbe_vq_get_base(r->vq);
    r->started = 0;
    netbe_vq_reset(r->vq);
}

/* Forget the ring's rings and descriptors (GET_VRING_BASE, reset). */
static void ring_stop(struct dev *d, struct vring *r)
{
    ring_halt(d, r);
    if (r->kick_ev)
        event_free(r->kick_ev);
    r->kick_ev = NULL;
    set_fd(&r->kick_fd, -1);
    if (r->index == RXQ)
        netbe_rx_disable(d->be);
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

/* Backend -> guest: fill rx buffers until either side runs dry. A frame
** too big for the guest's buffers is dropped (netbe counts it too) and
** the next one tried in the same buffers. */
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
            if (n != -EMSGSIZE)
                break;
            r->drops++;
            r->oversize++;
            budget--;
            continue;
        }
        netbe_vq_push(r->vq, ch.head, (uint32_t)n);
        r->frames++;
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
    if (n < 0) {
        r->drops++;
        r->oversize += n == -EMSGSIZE;
    } else {
        r->frames++;
    }
    d->tx_held = 0;
    netbe_vq_push(r->vq, d->tx_chain.head, 0);
    return 0;
}

/* Guest -> backend: send every chain the guest made available. Chains
** longer than any frame never get here: netbe_vq_pop hands them back. */
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
                    budget--;
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

/* Start serving halted ring R once it has addresses, memory and a kick.
** On failure it stays halted: nothing points into memory a new table may
** have unmapped. */
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
        if (!r->kick_ev || event_add(r->kick_ev, NULL) < 0) {
            say("queue %d: cannot watch its kick descriptor", r->index);
            return -EINVAL;
        }
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

/* Take the one descriptor M carries (checked), or -1 when it has none. */
static int take_fd(struct vu_msg *m)
{
    if (m->nfds != 1)
        return -1;
    m->nfds = 0;
    return m->fds[0];
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

/* The regions were checked (vu_msg_check): counts, sizes, no wrap, no
** overlap. Rings stop before the old memory goes and restart in the new. */
static int set_mem_table(struct dev *d, struct vu_msg *m)
{
    uint32_t n = m->p.mem.nregions;
    int started[VU_NQUEUES];
    for (int i = 0; i < VU_NQUEUES; i++) {
        started[i] = d->q[i].started;
        ring_halt(d, &d->q[i]);
    }
    mem_unmap(d);
    for (uint32_t i = 0; i < n; i++) {
        struct vu_region reg;
        memcpy(&reg, &m->p.mem.r[i], sizeof reg);
        int rc = mem_map(&d->mem[i], &reg, m->fds[i], i);
        if (rc < 0)
            return rc;
        d->nmem = (int)i + 1;
    }
    for (int i = 0; i < VU_NQUEUES; i++)
        if (started[i] && ring_start(d, &d->q[i]) < 0)
            return -EFAULT;
    return 0;
}

static int get_config(struct dev *d, struct vu_msg *m)
{
    uint8_t cfg[VU_MAX_CONFIG] = {0};
    uint32_t off = m->p.config.offset, size = m->p.config.size;
    memcpy(cfg, d->mac, 6);
    cfg[6] = 1;                                  /* status: link up */
    cfg[8] = 1;                                  /* max_virtqueue_pairs */
    cfg[10] = (uint8_t)d->mtu;
    cfg[11] = (uint8_t)(d->mtu >> 8);
    memcpy(m->p.config.data, cfg + off, size);
    return send_reply(d, m, 12 + size);
}

/* Messages that address one ring (checked: the index is 0 or 1). */
static int handle_ring(struct dev *d, struct vu_msg *m)
{
    struct vring *r = &d->q[vu_msg_ring(m)];
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
    case VU_SET_VRING_CALL:
        set_fd(&r->call_fd, take_fd(m));
        return 0;
    case VU_SET_VRING_ERR:
        set_fd(&r->err_fd, take_fd(m));
        return 0;
    case VU_SET_VRING_KICK:
        fd = take_fd(m);
        ring_stop(d, r);
        set_fd(&r->kick_fd, fd);
        return ring_start(d, r);
    case VU_SET_VRING_ENABLE:
        r->enabled = m->p.state.num != 0;
        if (!r->enabled && r->index == RXQ)
            netbe_rx_disable(d->be);
        if (r->enabled && r->started)
            ring_kick(r);
        return 0;
    }
    return -ENOTSUP;
}

/* Act on checked message M. Returns 1 when it sent its reply. */
static int handle(struct dev *d, struct vu_msg *m)
{
    switch (m->request) {
    case VU_GET_FEATURES:
        return reply_u64(d, m, d->offered) < 0 ? -EIO : 1;
    case VU_SET_FEATURES:
        return set_features(d, m->p.u64);
    case VU_GET_PROTOCOL_FEATURES:
        return reply_u64(d, m, VU_PROTOCOL_FEATURES) < 0 ? -EIO : 1;
    case VU_SET_PROTOCOL_FEATURES:
        d->protocol = m->p.u64;
        return 0;
    case VU_SET_OWNER:
        return 0;
    case VU_RESET_OWNER:
        for (int i = 0; i < VU_NQUEUES; i++)
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
    return handle_ring(d, m);
}

int dev_message(struct dev *d, struct vu_msg *m)
{
    char err[300], name[32];
    int rc = vu_msg_check(m, err, sizeof err);
    if (rc < 0)
        say("%s", err);
    else
        rc = handle(d, m);
    if (rc < 0 && getenv("VHOST_USER_NET_DEBUG"))
        say("%s failed: %s", vu_request_name(m->request, name, sizeof name), strerror(-rc));
    /* REPLY_ACK: a message that asked and has no reply yet gets 0 (done) or 1. */
    if (rc <= 0 && (m->flags & VU_FLAG_NEED_REPLY) && (d->protocol & VU_PF_REPLY_ACK) &&
        reply_u64(d, m, rc < 0) < 0)
        rc = -EIO;
    return rc < 0 ? rc : 0;
}

void dev_disconnect(struct dev *d)
{
    for (int i = 0; i < VU_NQUEUES; i++)
        ring_forget(d, &d->q[i]);
    mem_unmap(d);
    d->features = d->protocol = 0;
}

/* ====================================================================
** Setup and counters
** ==================================================================== */

int dev_open(struct dev *d, struct event_base *base, const netbe_config *cfg,
             const char *name)
{
    char err[NETBE_ERRMAX];
    d->base = base;
    d->conn_fd = -1;
    for (int i = 0; i < VU_NQUEUES; i++) {
        struct vring *r = &d->q[i];
        r->index = i;
        r->dev = d;
        r->kick_fd = r->call_fd = r->err_fd = -1;
        r->resume_ev = event_new(base, -1, 0, on_resume, r);
        if (netbe_vq_new(&r->vq, guest_map, d) < 0 || !r->resume_ev) {
            say("out of memory");
            return -1;
        }
    }
    if (netbe_open(&d->be, cfg, base, on_backend, d, err, sizeof err) < 0) {
        say("%s", err);
        return -1;
    }
    d->offered = NETBE_F_VERSION_1 | NETBE_F_RING_EVENT_IDX | NETBE_F_RING_INDIRECT_DESC |
                 VU_F_PROTOCOL_FEATURES | NETBE_F_MTU |
                 (netbe_get_cap(d->be) & NETBE_F_OFFLOADS);
    d->mtu = netbe_get_mtu(d->be);
    if (netbe_get_mac(d->be, d->mac) < 0)
        netbe_mac_generate(0, 0, name, d->mac);
    return 0;
}

void dev_report(struct dev *d, FILE *out)
{
    static const char *const names[VU_NQUEUES] = {"rx", "tx"};
    if (!d->be)
        return;
    for (int i = 0; i < VU_NQUEUES; i++) {
        struct vring *r = &d->q[i];
        uint64_t given_back = netbe_vq_dropped(r->vq);
        fprintf(out, "queue %d (%s): %llu frames, %llu dropped, of them %llu oversize\n", i,
                names[i], (unsigned long long)r->frames,
                (unsigned long long)(r->drops + given_back),
                (unsigned long long)(r->oversize + given_back));
    }
    struct netbe_stats st;
    netbe_get_stats(d->be, &st);
    fprintf(out, "%s: rx %llu frames %llu bytes, tx %llu frames %llu bytes, "
            "drops %llu/%llu, errors %llu/%llu\n", netbe_name(d->be),
            (unsigned long long)st.rx_frames, (unsigned long long)st.rx_bytes,
            (unsigned long long)st.tx_frames, (unsigned long long)st.tx_bytes,
            (unsigned long long)st.rx_drops, (unsigned long long)st.tx_drops,
            (unsigned long long)st.rx_errors, (unsigned long long)st.tx_errors);
    fflush(out);
}

void dev_close(struct dev *d)
{
    if (d->be)
        dev_disconnect(d);
    for (int i = 0; i < VU_NQUEUES; i++) {
        netbe_vq_free(d->q[i].vq);
        d->q[i].vq = NULL;
        if (d->q[i].resume_ev)
            event_free(d->q[i].resume_ev);
        d->q[i].resume_ev = NULL;
    }
    netbe_close(d->be);
    d->be = NULL;
}
