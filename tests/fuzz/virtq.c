/*
** virtq.c: the split-virtqueue helper walking rings a hostile guest wrote.
** Guest memory is a 1 MiB buffer; the input places the queue (size,
** features: EVENT_IDX, INDIRECT_DESC; ring addresses, aligned or not),
** writes descriptors, indirect tables and ring entries, and mixes pops of
** either direction with unpop, push, publish, notification changes, base
** changes and resets, rewriting memory in between as a guest may. Chains
** popped for transmit go to netbe_send (a null backend with offloads
** negotiated, as examples/vhost-user-net does); chains for receive are
** filled to the last byte.
** What must hold:
**   - every buffer a pop returns lies inside guest memory, is not empty,
**     has the direction asked for, and the lengths add up;
**   - no chain a pop returns reads more than NETBE_VQ_MAX_READ: longer
**     ones go back to the used ring with length 0, counted, and the
**     count never goes down;
**   - a pop that fails leaves the queue broken with a message, and every
**     later pop fails until it is set up again;
**   - pending counts never exceed the queue size.
*/
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>

#include <event2/event.h>

#include "fuzz.h"

#define MEM_SIZE (1u << 20)
#define IOV_ROOM 2048

static uint8_t *mem;
static struct iovec iov[IOV_ROOM];
static struct event_base *base;
static netbe *tx;                /* where transmit chains go */

static void *map(void *arg, uint64_t gpa, uint64_t len)
{
    if (gpa > MEM_SIZE || len > MEM_SIZE - gpa)
        return NULL;
    return mem + gpa;
}

struct ctx {
    netbe_vq *vq;
    unsigned size;               /* as set up, 0 when not */
    uint64_t desc, avail, used;
    uint16_t next_avail;         /* the guest's next avail index */
};

static void put(uint64_t gpa, const void *p, size_t n)
{
    if (gpa <= MEM_SIZE && n <= MEM_SIZE - gpa)
        memcpy(mem + gpa, p, n);
}

static void op_setup(struct ctx *c, struct fz *in)
{
    char err[NETBE_ERRMAX] = "";
    unsigned flags = fz_u8(in);
    unsigned size = 1u << (fz_u8(in) % 16);
    uint64_t features = (flags & 1 ? NETBE_F_RING_EVENT_IDX : 0) |
                        (flags & 2 ? NETBE_F_RING_INDIRECT_DESC : 0) | NETBE_F_VERSION_1;
    if (flags & 4) {
        c->desc = fz_u32(in) % (MEM_SIZE + 64);
        c->avail = fz_u32(in) % (MEM_SIZE + 64);
        c->used = fz_u32(in) % (MEM_SIZE + 64);
    } else {
        c->desc = 0;
        c->avail = 16ull * size;
        c->used = (c->avail + 6 + 2ull * size + 3) & ~3ull;
    }
    int rc = netbe_vq_setup(c->vq, size, c->desc, c->avail, c->used, features, err,
                            sizeof err);
    FZ_ASSERT(rc == 0 || (rc == -EINVAL && err[0]), "setup returned %d (%s)", rc, err);
    c->size = rc == 0 ? size : 0;
    FZ_ASSERT(netbe_vq_ready(c->vq) == (rc == 0), "ready says %d after setup %d",
              netbe_vq_ready(c->vq), rc);
}

/* Descriptor I of the ring's table, or of a table at a guest address. */
static void op_desc(struct ctx *c, struct fz *in)
{
    uint8_t d[16];
    unsigned i = fz_u16(in);
    uint64_t table = fz_u8(in) & 1 ? fz_u32(in) % MEM_SIZE : c->desc;
    uint64_t addr = fz_u32(in);
    addr = fz_u8(in) & 0x80 ? addr << 32 | fz_u32(in) : addr % MEM_SIZE;
    uint32_t len = fz_u8(in) & 0x80 ? fz_u32(in) : fz_u16(in);
    uint16_t flags = (uint16_t)fz_u8(in), next = (uint16_t)fz_u16(in);
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
    put(table + 16ull * (c->size ? i % c->size : i), d, 16);
}

/* Make HEAD available and move the avail index (by one, or anywhere). */
static void op_offer(struct ctx *c, struct fz *in)
{
    uint16_t head = (uint16_t)fz_u16(in), idx;
    unsigned how = fz_u8(in);
    if (c->size)
        put(c->avail + 4 + 2 * (c->next_avail % c->size), &head, 2);
    c->next_avail = how & 0x80 ? (uint16_t)fz_u16(in) : (uint16_t)(c->next_avail + 1);
    idx = c->next_avail;
    put(c->avail + 2, &idx, 2);
    uint16_t event = (uint16_t)fz_u16(in), aflags = how & 1;
    put(c->avail + 4 + 2ull * c->size, &event, 2);
    put(c->avail, &aflags, 2);
}

static void op_write(struct fz *in)
{
    const uint8_t *src;
    uint64_t gpa = fz_u32(in) % MEM_SIZE;
    size_t n = fz_take(in, fz_u8(in), &src);
    put(gpa, src, n);
}

static void op_pop(struct ctx *c, struct fz *in)
{
    struct netbe_vq_chain ch;
    int allow = 1 + (int)(fz_u8(in) % 3);
    int iovmax = 1 + (int)(fz_u16(in) % IOV_ROOM);
    int was_ready = netbe_vq_ready(c->vq);
    uint64_t dropped = netbe_vq_dropped(c->vq);
    int rc = netbe_vq_pop(c->vq, iov, iovmax, allow, &ch);
    FZ_ASSERT(netbe_vq_dropped(c->vq) >= dropped, "the drop count went down");
    if (rc < 0) {
        FZ_ASSERT(!netbe_vq_ready(c->vq), "pop failed (%d) and the queue is still ready", rc);
        FZ_ASSERT(!was_ready || netbe_vq_error(c->vq)[0], "pop failed (%d) without a "
                  "message", rc);
        FZ_ASSERT(netbe_vq_pop(c->vq, iov, iovmax, allow, &ch) < 0, "a broken queue popped");
        return;
    }
    if (rc == 0)
        return;
    FZ_ASSERT(rc == 1 && ch.head < c->size, "pop returned %d, head %u", rc, ch.head);
    FZ_ASSERT(ch.nread >= 0 && ch.nwrite >= 0 && ch.nread + ch.nwrite <= iovmax,
              "%d + %d buffers for room %d", ch.nread, ch.nwrite, iovmax);
    FZ_ASSERT(!(ch.nread && !(allow & NETBE_VQ_READ)) && !(ch.nwrite &&
              !(allow & NETBE_VQ_WRITE)), "a buffer of a direction not asked for");
    uint64_t rlen = 0, wlen = 0;
    for (int i = 0; i < ch.nread + ch.nwrite; i++) {
        uint8_t *b = iov[i].iov_base;
        FZ_ASSERT(iov[i].iov_len > 0 && b >= mem && iov[i].iov_len <= MEM_SIZE &&
                  b + iov[i].iov_len <= mem + MEM_SIZE, "buffer %d outside guest memory", i);
        *(i < ch.nread ? &rlen : &wlen) += iov[i].iov_len;
    }
    FZ_ASSERT(rlen == ch.read_len && wlen == ch.write_len, "lengths do not add up");
    FZ_ASSERT(ch.read_len <= NETBE_VQ_MAX_READ, "a chain of %llu bytes to read",
              (unsigned long long)ch.read_len);
    if (ch.nwrite)
        for (int i = ch.nread; i < ch.nread + ch.nwrite; i++)
            memset(iov[i].iov_base, 0x5a, iov[i].iov_len);
    if (ch.nread && ch.nread < IOV_MAX)
        netbe_send(tx, iov, ch.nread);
    if (fz_u8(in) & 1)
        netbe_vq_push(c->vq, ch.head, (uint32_t)ch.write_len);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[NETBE_ERRMAX];
    struct fz in = {data, size};
    struct ctx c = {0};
    if (!mem) {
        mem = malloc(MEM_SIZE);
        base = event_base_new();
        FZ_ASSERT(netbe_open_str(&tx, "null", base, NULL, NULL, err, sizeof err) == 0,
                  "%s", err);
        FZ_ASSERT(netbe_set_cap(tx, NETBE_F_CSUM | NETBE_F_HOST_TSO4 | NETBE_F_HOST_TSO6 |
                                NETBE_F_HOST_UFO | NETBE_F_HOST_USO, 12) == 0, "set_cap");
    }
    memset(mem, 0, MEM_SIZE);
    netbe_vq_new(&c.vq, map, NULL);
    op_setup(&c, &in);
    for (int ops = 0; in.n && ops < 256; ops++) {
        int n;
        switch (fz_u8(&in) % 14) {
        case 0: case 1: op_desc(&c, &in); break;
        case 2: op_offer(&c, &in); break;
        case 3: op_write(&in); break;
        case 4: case 5: op_pop(&c, &in); break;
        case 6: netbe_vq_unpop(c.vq); break;
        case 7: netbe_vq_push(c.vq, (uint16_t)fz_u16(&in), fz_u32(&in)); break;
        case 8:
            n = netbe_vq_publish(c.vq);
            FZ_ASSERT(n == 0 || n == 1 || n == -EIO, "publish returned %d", n);
            break;
        case 9:
            if (fz_u8(&in) & 1) {
                n = netbe_vq_notify_enable(c.vq);
                FZ_ASSERT(n == 0 || n == 1 || n < 0, "notify_enable returned %d", n);
            } else {
                netbe_vq_notify_disable(c.vq);
            }
            break;
        case 10:
            n = netbe_vq_pending(c.vq);
            FZ_ASSERT(n < 0 || (unsigned)n <= c.size, "%d pending in a queue of %u", n,
                      c.size);
            break;
        case 11: netbe_vq_set_base(c.vq, (uint16_t)fz_u16(&in)); break;
        case 12: op_setup(&c, &in); break;
        case 13:
            netbe_vq_reset(c.vq);
            c.size = 0;
            break;
        }
    }
    netbe_vq_free(c.vq);
    return 0;
}
