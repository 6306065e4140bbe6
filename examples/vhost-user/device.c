/*
** device.c: the vhost-user net device. See device.h.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>

#include <event2/event.h>

#include "device.h"

#define BUDGET 256               /* frames per turn before others get one */
#define PUBLISH_EVERY 32         /* frames per used-ring update in a turn */
#define POLL_MIN 32              /* frames per look that make a dry ring watched */
#define COALESCE_MIN 32          /* frames per look that keep a ring coalescing */
#define COALESCE_START_US 20
#define COALESCE_FLOOR_US 5

void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("vhost-user-net: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

/* Add N to a counter only its pair's thread writes: a plain add, as a
** locked one would wait for the frames just copied to leave the CPU. */
static void count(uint64_t *c, uint64_t n)
{
    __atomic_store_n(c, __atomic_load_n(c, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
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
** Queue pairs: threads, and calls into them
** ==================================================================== */

/* Run FN(P, ARG) on P's thread and return what it returns, the calling
** thread waiting for it: ring state is touched on its pair's thread only. */
static int pair_call(struct pair *p, int (*fn)(struct pair *p, void *arg), void *arg)
{
    if (!p->threaded)
        return fn(p, arg);
    pthread_mutex_lock(&p->lock);
    p->call_fn = fn;
    p->call_arg = arg;
    p->call_done = 0;
    event_active(p->call_ev, 0, 0);
    while (!p->call_done)
        pthread_cond_wait(&p->done, &p->lock);
    int rc = p->call_rc;
    pthread_mutex_unlock(&p->lock);
    return rc;
}

static void on_call(evutil_socket_t fd, short what, void *arg)
{
    struct pair *p = arg;
    int rc = p->call_fn(p, p->call_arg);
    pthread_mutex_lock(&p->lock);
    p->call_rc = rc;
    p->call_done = 1;
    pthread_cond_signal(&p->done);
    pthread_mutex_unlock(&p->lock);
}

/* pair_call FN on every pair with ARG; returns the first failure, or 0. */
static int pairs_call(struct dev *d, int (*fn)(struct pair *p, void *arg), void *arg)
{
    int rc = 0;
    for (int i = 0; i < d->npairs; i++) {
        int r = pair_call(d->pairs[i], fn, arg);
        if (r < 0 && rc == 0)
            rc = r;
    }
    return rc;
}

static void *pair_main(void *arg)
{
    struct pair *p = arg;
    event_base_loop(p->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* Serve P on a thread of its own. Signals stay with the device's thread. */
static int pair_thread_start(struct pair *p)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = pthread_create(&p->thread, NULL, pair_main, p);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        say("pair %d: cannot start its thread: %s", p->index, strerror(rc));
        return -1;
    }
    p->threaded = 1;
    return 0;
}

static void pair_thread_stop(struct pair *p)
{
    if (!p->threaded)
        return;
    event_base_loopbreak(p->base);
    pthread_join(p->thread, NULL);
    p->threaded = 0;
}

/* ====================================================================
** Rings
** ==================================================================== */

static void ring_signal(int fd)
{
    if (fd >= 0)
        eventfd_write(fd, 1);
}

/* Hand the guest what was pushed since the last publish; one interrupt
** for all of it, when the guest wants one. */
static void ring_publish(struct vring *r)
{
    if (netbe_vq_publish(r->vq) == 1)
        ring_signal(r->call_fd);
}

static int ring_running(struct vring *r)
{
    return r->started && r->enabled && netbe_vq_ready(r->vq);
}

/* Ring R took MOVED frames in this turn and found no more; a look may
** take several turns (BUDGET). While frames
** keep coming, look again after an interval sized to find about half a
** ring then (at most coalesce_us), rather than on the guest's next kick
** or the backend's next readiness: a wakeup costs the device as much as a
** hundred frames, and a busy driver kicks every burst. The guest is not
** asked to kick meanwhile, which is the caller's to leave so. Returns 1
** when R waits so, 0 when traffic is too thin for it (or coalescing is
** off): wait for a notification. */
static int ring_coalesce(struct vring *r, int moved)
{
    unsigned max = r->pair->dev->coalesce_us;
    moved += r->look;
    r->look = 0;
    if (moved < COALESCE_MIN || max == 0 || r->timer_fd < 0) {
        r->wait_us = 0;
        return 0;
    }
    uint64_t us = r->wait_us ? r->wait_us : COALESCE_START_US;
    us = us * (r->num / 2) / (unsigned)moved;
    r->wait_us = (unsigned)(us < COALESCE_FLOOR_US ? COALESCE_FLOOR_US : us > max ? max : us);
    struct itimerspec when = {.it_value = {0, (long)r->wait_us * 1000}};
    if (timerfd_settime(r->timer_fd, 0, &when, NULL) < 0) {
        r->wait_us = 0;
        return 0;
    }
    return 1;
}

static void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Ring R ran dry (tx: no chains; rx: no buffers) after MOVED frames in
** this turn. With --poll, a ring under load (POLL_MIN frames in this
** look) is watched for up to poll_us before the guest is asked to
** notify, as Linux vhost-net's busyloop_timeout does: a driver that keeps
** sending refills the ring within microseconds, while a kick and the
** wakeup it causes cost both sides far more. A thin flow never makes the
** device spin. What was used goes back first: the driver refills from
** it. The other ring of the pair waits meanwhile, at most poll_us.
** Returns 1 when the guest made more available (or broke the ring, which
** the caller's next pop reports), else 0. */
static int ring_poll(struct vring *r, int moved)
{
    unsigned us = r->pair->dev->poll_us;
    if (us == 0 || moved + r->look < POLL_MIN)
        return 0;
    ring_publish(r);
    uint64_t start = now_ns(), end = start + 1000u * (uint64_t)us;
    for (unsigned i = 1;; i++) {
        int found = netbe_vq_pending(r->vq) != 0;
        if (found || (i % 64 == 0 && now_ns() >= end)) {
            count(&r->watched_ns, now_ns() - start);
            return found;
        }
        cpu_relax();
    }
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

/* A queue of a multiqueue backend is attached while the guest uses its
** pair, so that the kernel steers no flow to a queue nobody serves. */
static void pair_attach(struct pair *p)
{
    int on = p->q[RXQ].enabled || p->q[TXQ].enabled;
    if (netbe_queues(p->be) > 1 && netbe_queue_attach(p->be, on) < 0)
        say("pair %d: cannot %s its queue of %s", p->index, on ? "attach" : "detach",
            netbe_name(p->be));
}

/* Stop serving ring R and keep where it stopped. A tx chain held for the
** backend goes back to the available side, to be taken again. */
static void ring_halt(struct vring *r)
{
    struct pair *p = r->pair;
    if (r->index % 2 == TXQ && p->tx_held) {
        netbe_vq_unpop(r->vq);
        p->tx_held = 0;
    }
    if (r->started)
        r->base = netbe_vq_get_base(r->vq);
    r->started = 0;
    r->wait_us = 0;
    r->look = 0;
    netbe_vq_reset(r->vq);
}

/* Forget the ring's rings and descriptors (GET_VRING_BASE, reset). A frame
** that waited for the guest's rx buffers is dropped. */
static void ring_stop(struct vring *r)
{
    struct pair *p = r->pair;
    ring_halt(r);
    if (r->kick_ev)
        event_free(r->kick_ev);
    r->kick_ev = NULL;
    set_fd(&r->kick_fd, -1);
    if (r->index % 2 == RXQ) {
        netbe_rx_disable(p->be);
        if (p->rx_len)
            count(&r->drops, 1);
        p->rx_len = 0;
    }
}

static void ring_forget(struct vring *r)
{
    ring_stop(r);
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

static int mergeable(const struct pair *p)
{
    return (p->dev->features & NETBE_F_MRG_RXBUF) != 0;
}

/* Copy the first LEN bytes that IOV holds to BUF. */
static void iov_gather(const struct iovec *iov, int cnt, uint8_t *buf, size_t len)
{
    for (int i = 0; i < cnt && len; i++) {
        size_t n = iov[i].iov_len < len ? iov[i].iov_len : len;
        memcpy(buf, iov[i].iov_base, n);
        buf += n;
        len -= n;
    }
}

/* The frame waiting in rx_frame is dropped: the guest's buffers cannot
** take it. Returns 1, a frame dealt with. */
static int rx_drop_held(struct pair *p)
{
    struct vring *r = &p->q[RXQ];
    count(&r->drops, 1);
    count(&r->oversize, 1);
    p->rx_len = 0;
    return 1;
}

/* Spread the frame waiting in rx_frame over as many rx chains as it needs
** (mergeable buffers, with netbe_rx_merge). Returns 1 when it went or was
** dropped, -EAGAIN to wait for the guest's buffers, -EIO when the ring
** broke. */
static int rx_deliver_held(struct pair *p)
{
    struct vring *r = &p->q[RXQ];
    uint16_t base = netbe_vq_get_base(r->vq);
    int nchains = 0, niov = 0;
    size_t room = 0;
    while (room < p->rx_len) {
        struct netbe_vq_chain ch;
        /* A pop may take IOVMAX buffers: past half the room, stop. */
        int rc = niov <= IOVMAX ? netbe_vq_pop(r->vq, p->rx_iov + niov, IOVMAX,
                                               NETBE_VQ_WRITE, &ch) : 0;
        if (rc < 0)
            return -EIO;
        if (rc == 0) {
            /* Put them all back (rx chains are never skipped, so the base
            ** is exact). Wait for more, unless no more can come. */
            netbe_vq_set_base(r->vq, base);
            if (niov > IOVMAX || netbe_vq_pending(r->vq) >= (int)r->num)
                return rx_drop_held(p);
            return -EAGAIN;
        }
        p->rx_heads[nchains] = ch.head;
        p->rx_nbufs[nchains++] = (uint16_t)ch.nwrite;
        niov += ch.nwrite;
        room += ch.write_len;
    }
    struct iovec frame = {p->rx_frame, p->rx_len};
    int used = netbe_rx_merge(&frame, 1, p->rx_iov, niov, p->rx_lens);
    if (used < 0) {
        netbe_vq_set_base(r->vq, base);
        return rx_drop_held(p);
    }
    /* netbe_rx_merge counted buffers; the guest counts chains. */
    uint8_t *hdr = p->rx_iov[0].iov_base;
    hdr[10] = (uint8_t)nchains;
    hdr[11] = (uint8_t)(nchains >> 8);
    for (int c = 0, i = 0; c < nchains; c++) {
        uint32_t len = 0;
        for (int k = 0; k < p->rx_nbufs[c]; k++, i++)
            len += i < used ? p->rx_lens[i] : 0;
        netbe_vq_push(r->vq, p->rx_heads[c], len);
    }
    count(&r->frames, 1);
    p->rx_len = 0;
    return 1;
}

/* Receive one frame into the guest's next rx chain. Returns 1 when a frame
** went or was dropped, 0 when the backend has none, -EAGAIN when the guest
** has no buffers, -EIO when the ring broke. A frame longer than the
** chain goes over several (mergeable buffers) or is dropped, counted. */
static int rx_one(struct pair *p)
{
    struct vring *r = &p->q[RXQ];
    struct netbe_vq_chain ch;
    int rc = netbe_vq_pop(r->vq, p->rx_iov, IOVMAX, NETBE_VQ_WRITE, &ch);
    if (rc <= 0)
        return rc < 0 ? -EIO : -EAGAIN;
    int cnt = ch.nwrite;
    size_t room = ch.write_len, max = NETBE_MAX_FRAME + p->dev->hdr_len;
    /* What does not fit lands in rx_frame, behind room for what does. */
    if (mergeable(p) && room < max)
        p->rx_iov[cnt++] = (struct iovec){p->rx_frame + room, max - room};
    ssize_t n = netbe_recv(p->be, p->rx_iov, cnt);
    if (n <= 0) {
        netbe_vq_unpop(r->vq);
        if (n != -EMSGSIZE)
            return 0;
        count(&r->drops, 1);
        count(&r->oversize, 1);
        return 1;
    }
    if ((size_t)n <= room) {
        netbe_vq_push(r->vq, ch.head, (uint32_t)n);
        count(&r->frames, 1);
        return 1;
    }
    iov_gather(p->rx_iov, ch.nwrite, p->rx_frame, room);
    netbe_vq_unpop(r->vq);
    p->rx_len = (size_t)n;
    return rx_deliver_held(p);
}

/* Backend -> guest: fill rx buffers until either side runs dry, then
** publish them all at once. */
static void rx_pump(struct pair *p)
{
    struct vring *r = &p->q[RXQ];
    int budget = BUDGET;
    if (!ring_running(r))
        return;
    while (budget > 0) {
        int rc = p->rx_len ? rx_deliver_held(p) : rx_one(p);
        if (rc == 0 && ring_coalesce(r, BUDGET - budget)) {
            netbe_rx_disable(p->be);
            break;
        }
        if (rc == -EIO) {
            ring_broken(r);
            netbe_rx_disable(p->be);
            break;
        }
        if (rc == -EAGAIN) {
            /* No room in the guest: wait for its kick, leave frames queued. */
            if (ring_poll(r, BUDGET - budget) || netbe_vq_notify_enable(r->vq) == 1)
                continue;
            netbe_rx_disable(p->be);
            break;
        }
        if (rc == 0)
            break;
        if (--budget % PUBLISH_EVERY == 0)
            ring_publish(r);
    }
    ring_publish(r);
    if (budget == 0) {
        r->look += BUDGET;
        event_active(r->resume_ev, 0, 0);
    }
}

/* Send the held chain; returns 0 when sent or dropped, -EAGAIN to wait. */
static int tx_send_held(struct pair *p)
{
    struct vring *r = &p->q[TXQ];
    ssize_t n = netbe_send(p->be, p->tx_iov, p->tx_chain.nread);
    if (n == -EAGAIN)
        return -EAGAIN;
    if (n < 0) {
        count(&r->drops, 1);
        if (n == -EMSGSIZE)
            count(&r->oversize, 1);
    } else {
        count(&r->frames, 1);
    }
    p->tx_held = 0;
    netbe_vq_push(r->vq, p->tx_chain.head, 0);
    return 0;
}

/* Guest -> backend: send every chain the guest made available, then
** publish them all at once. Chains longer than any frame never get here:
** netbe_vq_pop hands them back. */
static void tx_pump(struct pair *p)
{
    struct vring *r = &p->q[TXQ];
    int budget = BUDGET;
    if (!ring_running(r))
        return;
    netbe_vq_notify_disable(r->vq);
    while (budget > 0) {
        if (!p->tx_held) {
            int rc = netbe_vq_pop(r->vq, p->tx_iov, IOVMAX, NETBE_VQ_READ, &p->tx_chain);
            if (rc < 0) {
                ring_broken(r);
                break;
            }
            if (rc == 0) {
                if (ring_poll(r, BUDGET - budget))
                    continue;
                if (ring_coalesce(r, BUDGET - budget))
                    break;
                if (netbe_vq_notify_enable(r->vq) == 1) {
                    netbe_vq_notify_disable(r->vq);
                    budget--;
                    continue;
                }
                break;
            }
            p->tx_held = 1;
        }
        if (tx_send_held(p) == -EAGAIN)
            break;               /* NETBE_EV_TX resumes us */
        if (--budget % PUBLISH_EVERY == 0)
            ring_publish(r);
    }
    ring_publish(r);
    if (budget == 0) {
        r->look += BUDGET;
        event_active(r->resume_ev, 0, 0);
    }
}

static void on_backend(netbe *be, int events, void *arg)
{
    struct pair *p = arg;
    if (events & NETBE_EV_TX)
        tx_pump(p);
    if (events & NETBE_EV_RX)
        rx_pump(p);
}

/* The guest kicked ring R, or it may have work: serve it. */
static void ring_kick(struct vring *r)
{
    struct pair *p = r->pair;
    if (r->index % 2 == RXQ) {
        /* The guest posted buffers: take frames from the backend again. */
        if (!ring_running(r))
            return;
        netbe_vq_notify_disable(r->vq);
        netbe_rx_enable(p->be);
        rx_pump(p);
    } else {
        tx_pump(p);
    }
}

static void on_kick(evutil_socket_t fd, short what, void *arg)
{
    struct vring *r = arg;
    eventfd_t v;
    /* Edge-triggered, every kick wakes us once: the counter may grow. */
    if (!r->et)
        eventfd_read(fd, &v);
    ring_kick(r);
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    ring_kick(arg);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct vring *r = arg;
    uint64_t expired;
    if (!r->et && read(fd, &expired, sizeof expired) < 0)
        return;
    ring_kick(r);
}

/* Start serving halted ring R once it has addresses, memory and a kick.
** On failure it stays halted: nothing points into memory a new table may
** have unmapped. */
static int ring_start(struct vring *r)
{
    struct pair *p = r->pair;
    struct dev *d = p->dev;
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
        /* Edge-triggered where the base can: one read fewer per wakeup. */
        r->kick_ev = event_new(p->base, r->kick_fd,
                               EV_READ | EV_PERSIST | (r->et ? EV_ET : 0), on_kick, r);
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

/* On each pair's thread: settle the features with its queue of the
** backend. Without PROTOCOL_FEATURES rings are enabled as soon as they
** start. */
static int pair_set_features(struct pair *p, void *arg)
{
    struct dev *d = p->dev;
    int rc = netbe_set_cap(p->be, d->features & NETBE_F_OFFLOADS, d->hdr_len);
    if (rc < 0)
        say("backend refused features 0x%llx: %s", (unsigned long long)d->features,
            strerror(-rc));
    if (!(d->features & VU_F_PROTOCOL_FEATURES)) {
        p->q[RXQ].enabled = p->q[TXQ].enabled = 1;
        pair_attach(p);
    }
    return rc;
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
    say("features 0x%llx", (unsigned long long)f);
    return pairs_call(d, pair_set_features, NULL);
}

/* On each pair's thread: halt its rings (ARG: which were started, by
** ring), or start again those that were. */
static int pair_halt(struct pair *p, void *arg)
{
    int *started = arg;
    for (int i = 0; i < 2; i++) {
        started[p->q[i].index] = p->q[i].started;
        ring_halt(&p->q[i]);
    }
    return 0;
}

static int pair_restart(struct pair *p, void *arg)
{
    const int *started = arg;
    for (int i = 0; i < 2; i++)
        if (started[p->q[i].index] && ring_start(&p->q[i]) < 0)
            return -EFAULT;
    return 0;
}

/* The regions were checked (vu_msg_check): counts, sizes, no wrap, no
** overlap. Rings stop before the old memory goes and restart in the new. */
static int set_mem_table(struct dev *d, struct vu_msg *m)
{
    uint32_t n = m->p.mem.nregions;
    int started[VU_MAX_QUEUES];
    pairs_call(d, pair_halt, started);
    mem_unmap(d);
    for (uint32_t i = 0; i < n; i++) {
        struct vu_region reg;
        memcpy(&reg, &m->p.mem.r[i], sizeof reg);
        int rc = mem_map(&d->mem[i], &reg, m->fds[i], i);
        if (rc < 0)
            return rc;
        d->nmem = (int)i + 1;
    }
    return pairs_call(d, pair_restart, started);
}

static int get_config(struct dev *d, struct vu_msg *m)
{
    uint8_t cfg[VU_MAX_CONFIG] = {0};
    uint32_t off = m->p.config.offset, size = m->p.config.size;
    memcpy(cfg, d->mac, 6);
    cfg[6] = 1;                                  /* status: link up */
    cfg[8] = (uint8_t)d->npairs;                 /* max_virtqueue_pairs */
    cfg[10] = (uint8_t)d->mtu;
    cfg[11] = (uint8_t)(d->mtu >> 8);
    memcpy(m->p.config.data, cfg + off, size);
    return send_reply(d, m, 12 + size);
}

/* On the pair's thread: a message that addresses one of its rings (the
** index was checked). Returns 1 when it sent its reply. */
static int pair_ring_message(struct pair *p, void *arg)
{
    struct vu_msg *m = arg;
    struct vring *r = &p->q[vu_msg_ring(m) % 2];
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
        ring_stop(r);
        m->p.state.num = r->base;
        return send_reply(p->dev, m, sizeof m->p.state) < 0 ? -EIO : 1;
    case VU_SET_VRING_CALL:
        set_fd(&r->call_fd, take_fd(m));
        return 0;
    case VU_SET_VRING_ERR:
        set_fd(&r->err_fd, take_fd(m));
        return 0;
    case VU_SET_VRING_KICK:
        fd = take_fd(m);
        ring_stop(r);
        set_fd(&r->kick_fd, fd);
        return ring_start(r);
    case VU_SET_VRING_ENABLE:
        r->enabled = m->p.state.num != 0;
        if (!r->enabled && r->index % 2 == RXQ)
            netbe_rx_disable(p->be);
        pair_attach(p);
        if (r->enabled && r->started)
            ring_kick(r);
        return 0;
    }
    return -ENOTSUP;
}

/* On each pair's thread: forget the guest's rings. */
static int pair_forget(struct pair *p, void *arg)
{
    ring_forget(&p->q[RXQ]);
    ring_forget(&p->q[TXQ]);
    pair_attach(p);
    return 0;
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
        pairs_call(d, pair_forget, NULL);
        d->features = 0;
        return 0;
    case VU_SET_MEM_TABLE:
        return set_mem_table(d, m);
    case VU_GET_QUEUE_NUM:
        return reply_u64(d, m, (uint64_t)d->npairs) < 0 ? -EIO : 1;
    case VU_NET_SET_MTU:
        d->mtu = (unsigned)m->p.u64;
        return 0;
    case VU_GET_CONFIG:
        return get_config(d, m) < 0 ? -EIO : 1;
    }
    return pair_call(d->pairs[vu_msg_ring(m) / 2], pair_ring_message, m);
}

int dev_message(struct dev *d, struct vu_msg *m)
{
    char err[300], name[32];
    int rc = vu_msg_check(m, 2 * (unsigned)d->npairs, err, sizeof err);
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
    pairs_call(d, pair_forget, NULL);
    mem_unmap(d);
    d->features = d->protocol = 0;
}

/* ====================================================================
** Setup and counters
** ==================================================================== */

/* Pair I on BASE, its backend queue BE (NULL: open queue I of d->be). */
static int pair_open(struct dev *d, int i, struct event_base *base, netbe *be)
{
    char err[NETBE_ERRMAX];
    struct pair *p = calloc(1, sizeof *p);
    if (!p || !(p->rx_frame = malloc(NETBE_MAX_FRAME + 12))) {
        free(p);
        say("out of memory");
        return -1;
    }
    d->pairs[i] = p;
    p->dev = d;
    p->index = i;
    p->base = base;
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int k = 0; k < 2; k++)
        p->q[k].kick_fd = p->q[k].call_fd = p->q[k].err_fd = p->q[k].timer_fd = -1;
    for (int k = 0; k < 2; k++) {
        struct vring *r = &p->q[k];
        r->pair = p;
        r->index = 2 * i + k;
        r->et = (event_base_get_features(base) & EV_FEATURE_ET) != 0;
        r->resume_ev = event_new(base, -1, 0, on_resume, r);
        r->timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        r->timer_ev = r->timer_fd < 0 ? NULL : event_new(base, r->timer_fd,
            EV_READ | EV_PERSIST | (r->et ? EV_ET : 0), on_timer, r);
        if (netbe_vq_new(&r->vq, guest_map, d) < 0 || !r->resume_ev || !r->timer_ev ||
            event_add(r->timer_ev, NULL) < 0) {
            say("queue %d: out of memory or descriptors", r->index);
            return -1;
        }
    }
    p->call_ev = event_new(base, -1, 0, on_call, p);
    if (!p->call_ev) {
        say("out of memory");
        return -1;
    }
    if (be) {
        p->be = be;
        netbe_set_callback(be, on_backend, p);
    } else if (netbe_open_queue(&p->be, d->be, i, base, on_backend, p, err, sizeof err) < 0) {
        say("%s", err);
        return -1;
    }
    pair_attach(p);              /* detached until the guest enables the pair */
    return 0;
}

/* Pairs after the first: a base and a thread each, and their queue. */
static int pair_open_threaded(struct dev *d, int i)
{
    struct event_base *base = event_base_new();
    if (!base) {
        say("pair %d: cannot create an event base", i);
        return -1;
    }
    if (pair_open(d, i, base, NULL) < 0) {
        if (!d->pairs[i])
            event_base_free(base);
        return -1;
    }
    return pair_thread_start(d->pairs[i]);
}

int dev_open(struct dev *d, struct event_base *base, const netbe_config *cfg,
             const char *name)
{
    char err[NETBE_ERRMAX];
    d->base = base;
    d->conn_fd = -1;
    d->coalesce_us = COALESCE_DEFAULT_US;
    if (netbe_open(&d->be, cfg, base, NULL, NULL, err, sizeof err) < 0) {
        say("%s", err);
        return -1;
    }
    int queues = netbe_queues(d->be);
    if (queues > VU_MAX_PAIRS) {
        say("%s has %d queues: this device serves at most %d queue pairs",
            netbe_name(d->be), queues, VU_MAX_PAIRS);
        return -1;
    }
    /* npairs counts the pairs set up whole, for dev_close after a failure. */
    for (int i = 0; i < queues; i++) {
        if ((i ? pair_open_threaded(d, i) : pair_open(d, 0, base, d->be)) < 0)
            return -1;
        d->npairs++;
    }
    d->offered = NETBE_F_VERSION_1 | NETBE_F_RING_EVENT_IDX | NETBE_F_RING_INDIRECT_DESC |
                 VU_F_PROTOCOL_FEATURES | NETBE_F_MTU | NETBE_F_MRG_RXBUF | F_IN_ORDER |
                 (d->npairs > 1 ? NET_F_MQ : 0) | (netbe_get_cap(d->be) & NETBE_F_OFFLOADS);
    d->mtu = netbe_get_mtu(d->be);
    if (netbe_get_mac(d->be, d->mac) < 0)
        netbe_mac_generate(0, 0, name, d->mac);
    return 0;
}

/* What dev_report prints of a pair, read on its thread. */
struct pair_counts {
    uint64_t frames[2], drops[2], oversize[2], watched_ns[2];
    struct netbe_stats st;
};

static int pair_count(struct pair *p, void *arg)
{
    struct pair_counts *c = arg;
    for (int i = 0; i < 2; i++) {
        uint64_t given_back = netbe_vq_dropped(p->q[i].vq);
        c->frames[i] = p->q[i].frames;
        c->drops[i] = p->q[i].drops + given_back;
        c->oversize[i] = p->q[i].oversize + given_back;
        c->watched_ns[i] = p->q[i].watched_ns;
    }
    netbe_get_stats(p->be, &c->st);
    return 0;
}

void dev_report(struct dev *d, FILE *out)
{
    static const char *const names[2] = {"rx", "tx"};
    for (int i = 0; i < d->npairs; i++) {
        struct pair_counts c;
        char queue[32] = "";
        pair_call(d->pairs[i], pair_count, &c);
        for (int k = 0; k < 2; k++)
            fprintf(out, "queue %d (%s): %llu frames, %llu dropped, of them %llu oversize; "
                    "watched dry %llu us\n", 2 * i + k, names[k], (unsigned long long)c.frames[k],
                    (unsigned long long)c.drops[k], (unsigned long long)c.oversize[k],
                    (unsigned long long)(c.watched_ns[k] / 1000));
        if (d->npairs > 1)
            snprintf(queue, sizeof queue, " queue %d", i);
        fprintf(out, "%s%s: rx %llu frames %llu bytes, tx %llu frames %llu bytes, "
                "drops %llu/%llu, errors %llu/%llu\n", netbe_name(d->be), queue,
                (unsigned long long)c.st.rx_frames, (unsigned long long)c.st.rx_bytes,
                (unsigned long long)c.st.tx_frames, (unsigned long long)c.st.tx_bytes,
                (unsigned long long)c.st.rx_drops, (unsigned long long)c.st.tx_drops,
                (unsigned long long)c.st.rx_errors, (unsigned long long)c.st.tx_errors);
    }
    fflush(out);
}

static void pair_close(struct pair *p)
{
    pair_thread_stop(p);
    for (int k = 0; k < 2; k++) {
        struct vring *r = &p->q[k];
        netbe_vq_free(r->vq);
        if (r->resume_ev)
            event_free(r->resume_ev);
        if (r->timer_ev)
            event_free(r->timer_ev);
        if (r->timer_fd >= 0)
            close(r->timer_fd);
    }
    if (p->call_ev)
        event_free(p->call_ev);
    if (p->index > 0) {
        netbe_close(p->be);
        event_base_free(p->base);
    }
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->done);
    free(p->rx_frame);
    free(p);
}

void dev_close(struct dev *d)
{
    if (d->npairs)
        dev_disconnect(d);
    for (int i = VU_MAX_PAIRS - 1; i >= 0; i--) {
        if (d->pairs[i])
            pair_close(d->pairs[i]);
        d->pairs[i] = NULL;
    }
    d->npairs = 0;
    netbe_close(d->be);
    d->be = NULL;
}
