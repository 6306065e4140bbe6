/*
** virtq_test.c: the split-virtqueue helper against rings this test builds in
** a buffer that plays guest memory: normal and indirect chains, used ring
** and notification suppression (flags and EVENT_IDX), then hostile rings:
** buffers outside guest memory, loops, absurd lengths, index jumps, nested
** indirect tables, wrong directions. Every hostile ring must be rejected
** with an error and leave the queue broken, never crash or hang (this
** binary runs under ASan and UBSan). Ends with random rings.
*/
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "netbe.h"

#define MEM_SIZE (1 << 20)
#define QSIZE 8
#define DESC_GPA  0x1000
#define AVAIL_GPA 0x2000
#define USED_GPA  0x3000
#define INDIR_GPA 0x4000
#define DATA_GPA  0x10000

static uint8_t *mem;

static void *map(void *arg, uint64_t gpa, uint64_t len)
{
    if (gpa > MEM_SIZE || len > MEM_SIZE - gpa)
        return NULL;
    return mem + gpa;
}

static void put16(uint64_t gpa, uint16_t v) { memcpy(mem + gpa, &v, 2); }
static uint16_t get16(uint64_t gpa) { uint16_t v; memcpy(&v, mem + gpa, 2); return v; }
static uint32_t get32(uint64_t gpa) { uint32_t v; memcpy(&v, mem + gpa, 4); return v; }

static void desc_at(uint64_t table, unsigned i, uint64_t addr, uint32_t len,
                    uint16_t flags, uint16_t next)
{
    uint8_t *d = mem + table + 16 * i;
    memcpy(d, &addr, 8);
    memcpy(d + 8, &len, 4);
    memcpy(d + 12, &flags, 2);
    memcpy(d + 14, &next, 2);
}

static void desc(unsigned i, uint64_t addr, uint32_t len, uint16_t flags, uint16_t next)
{
    desc_at(DESC_GPA, i, addr, len, flags, next);
}

/* Make HEAD available as entry number IDX and publish idx IDX + 1. */
static void offer(uint16_t idx, uint16_t head)
{
    put16(AVAIL_GPA + 4 + 2 * (idx % QSIZE), head);
    put16(AVAIL_GPA + 2, (uint16_t)(idx + 1));
}

#define F_NEXT 1
#define F_WRITE 2
#define F_INDIRECT 4

static netbe_vq *fresh(uint64_t features)
{
    netbe_vq *vq;
    char err[NETBE_ERRMAX];
    memset(mem, 0, MEM_SIZE);
    netbe_vq_new(&vq, map, NULL);
    int rc = netbe_vq_setup(vq, QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA, features, err, sizeof err);
    CHECK(rc == 0, "setup: %s", err);
    return vq;
}

static void test_setup_rejects(void)
{
    netbe_vq *vq;
    char err[NETBE_ERRMAX] = "";
    netbe_vq_new(&vq, map, NULL);
    CHECK(netbe_vq_setup(vq, 0, DESC_GPA, AVAIL_GPA, USED_GPA, 0, err, sizeof err) == -EINVAL,
          "size 0");
    CHECK(netbe_vq_setup(vq, 6, DESC_GPA, AVAIL_GPA, USED_GPA, 0, err, sizeof err) == -EINVAL,
          "size 6");
    CHECK(strstr(err, "power of 2") != NULL, "message: %s", err);
    CHECK(netbe_vq_setup(vq, 65536, DESC_GPA, AVAIL_GPA, USED_GPA, 0, err, sizeof err) == -EINVAL,
          "size 65536");
    CHECK(netbe_vq_setup(vq, 8, DESC_GPA + 8, AVAIL_GPA, USED_GPA, 0, err, sizeof err) == -EINVAL,
          "misaligned table");
    CHECK(strstr(err, "descriptor table") != NULL, "message: %s", err);
    CHECK(netbe_vq_setup(vq, 8, DESC_GPA, MEM_SIZE - 4, USED_GPA, 0, err, sizeof err) == -EINVAL,
          "avail ring past the end of memory");
    CHECK(netbe_vq_setup(vq, 32768, MEM_SIZE - 4096, AVAIL_GPA, USED_GPA, 0, err,
                         sizeof err) == -EINVAL, "table past the end of memory");
    CHECK(netbe_vq_setup(vq, 8, DESC_GPA, AVAIL_GPA, UINT64_MAX - 3, 0, err, sizeof err) == -EINVAL,
          "used ring at a wrapping address");
    CHECK(!netbe_vq_ready(vq), "not ready after failed setups");
    struct iovec iov[4];
    struct netbe_vq_chain ch;
    CHECK(netbe_vq_pop(vq, iov, 4, 3, &ch) == -EIO, "pop on a queue never set up");
    CHECK(netbe_vq_push(vq, 0, 0) == -EIO, "push on a queue never set up");
    netbe_vq_free(vq);
}

static void test_normal_chain(void)
{
    netbe_vq *vq = fresh(0);
    struct iovec iov[QSIZE];
    struct netbe_vq_chain ch;
    CHECK(netbe_vq_pop(vq, iov, QSIZE, 3, &ch) == 0, "empty ring");
    desc(3, DATA_GPA, 12, F_NEXT, 5);
    desc(5, DATA_GPA + 100, 1500, F_NEXT, 1);
    desc(1, DATA_GPA + 4000, 2048, F_WRITE, 0);
    offer(0, 3);
    CHECK(netbe_vq_pending(vq) == 1, "one pending");
    CHECK(netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_READ | NETBE_VQ_WRITE, &ch) == 1, "pop");
    CHECK(ch.head == 3 && ch.nread == 2 && ch.nwrite == 1, "head %u r %d w %d", ch.head,
          ch.nread, ch.nwrite);
    CHECK(ch.read_len == 1512 && ch.write_len == 2048, "lengths");
    CHECK(iov[0].iov_base == mem + DATA_GPA && iov[1].iov_base == mem + DATA_GPA + 100 &&
          iov[2].iov_base == mem + DATA_GPA + 4000 && iov[2].iov_len == 2048, "iovecs");
    CHECK(netbe_vq_get_base(vq) == 1, "base advanced");
    CHECK(netbe_vq_pop(vq, iov, QSIZE, 3, &ch) == 0, "ring empty again");

    /* Used ring: the element, then the index on publish; interrupts wanted. */
    CHECK(netbe_vq_push(vq, 3, 77) == 0, "push");
    CHECK(get16(USED_GPA + 2) == 0, "idx not visible before publish");
    CHECK(netbe_vq_publish(vq) == 1, "interrupt wanted");
    CHECK(get16(USED_GPA + 2) == 1 && get32(USED_GPA + 4) == 3 && get32(USED_GPA + 8) == 77,
          "used element");
    CHECK(netbe_vq_publish(vq) == 0, "nothing new: no interrupt");
    CHECK(netbe_vq_push(vq, QSIZE, 0) == -EINVAL, "push of a head outside the queue");

    /* NO_INTERRUPT suppresses; notify_disable/enable flip NO_NOTIFY. */
    put16(AVAIL_GPA, 1);
    desc(0, DATA_GPA, 60, 0, 0);
    offer(1, 0);
    CHECK(netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_READ, &ch) == 1, "tx-only pop");
    netbe_vq_push(vq, ch.head, 0);
    CHECK(netbe_vq_publish(vq) == 0, "NO_INTERRUPT respected");
    netbe_vq_notify_disable(vq);
    CHECK(get16(USED_GPA) == 1, "NO_NOTIFY set");
    CHECK(netbe_vq_notify_enable(vq) == 0, "enable on an empty ring");
    CHECK(get16(USED_GPA) == 0, "NO_NOTIFY cleared");
    offer(2, 0);
    CHECK(netbe_vq_notify_enable(vq) == 1, "enable reports a chain that is waiting");

    /* Unpop gives the same chain again. */
    CHECK(netbe_vq_pop(vq, iov, QSIZE, 3, &ch) == 1 && ch.head == 0, "pop");
    netbe_vq_unpop(vq);
    CHECK(netbe_vq_get_base(vq) == 2, "unpop moved the base back");
    CHECK(netbe_vq_pop(vq, iov, QSIZE, 3, &ch) == 1 && ch.head == 0, "same chain again");
    netbe_vq_unpop(vq);
    netbe_vq_unpop(vq);
    CHECK(netbe_vq_get_base(vq) == 2, "a second unpop does nothing");
    netbe_vq_free(vq);
}

static void test_wraparound(void)
{
    netbe_vq *vq = fresh(0);
    struct iovec iov[QSIZE];
    struct netbe_vq_chain ch;
    netbe_vq_set_base(vq, 65533);
    put16(USED_GPA + 2, 65533);
    char err[NETBE_ERRMAX];
    netbe_vq_setup(vq, QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA, 0, err, sizeof err);
    desc(2, DATA_GPA, 64, 0, 0);
    int got = 0;
    for (uint16_t idx = 65533; idx != 3; idx++) {
        offer(idx, 2);
        got += netbe_vq_pop(vq, iov, QSIZE, 3, &ch) == 1 && ch.head == 2;
        netbe_vq_push(vq, ch.head, 64);
    }
    CHECK(got == 6, "six chains across the 16-bit wrap, got %d", got);
    netbe_vq_publish(vq);
    CHECK(get16(USED_GPA + 2) == 3, "used idx wrapped to 3: %u", get16(USED_GPA + 2));
    netbe_vq_free(vq);
}

static void test_indirect(void)
{
    netbe_vq *vq = fresh(NETBE_F_RING_INDIRECT_DESC);
    struct iovec iov[QSIZE];
    struct netbe_vq_chain ch;
    desc_at(INDIR_GPA, 0, DATA_GPA, 12, F_NEXT | F_WRITE, 2);
    desc_at(INDIR_GPA, 2, DATA_GPA + 12, 1000, F_NEXT | F_WRITE, 1);
    desc_at(INDIR_GPA, 1, DATA_GPA + 2000, 500, F_WRITE, 0);
    desc(4, INDIR_GPA, 3 * 16, F_INDIRECT, 0);
    offer(0, 4);
    CHECK(netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_WRITE, &ch) == 1, "indirect pop: %s",
          netbe_vq_error(vq));
    CHECK(ch.head == 4 && ch.nwrite == 3 && ch.write_len == 1512, "indirect chain");
    CHECK(iov[2].iov_base == mem + DATA_GPA + 2000, "third buffer");
    /* A table longer than the queue is fine: only its own size bounds it. */
    for (unsigned i = 0; i < 20; i++)
        desc_at(INDIR_GPA, i, DATA_GPA + 64 * i, 64, i < 19 ? F_NEXT : 0, (uint16_t)(i + 1));
    desc(4, INDIR_GPA, 20 * 16, F_INDIRECT, 0);
    offer(1, 4);
    struct iovec big[32];
    CHECK(netbe_vq_pop(vq, big, 32, NETBE_VQ_READ, &ch) == 1 && ch.nread == 20,
          "20-entry indirect table: %s", netbe_vq_error(vq));
    netbe_vq_free(vq);
}

static void test_event_idx(void)
{
    netbe_vq *vq = fresh(NETBE_F_RING_EVENT_IDX);
    struct iovec iov[QSIZE];
    struct netbe_vq_chain ch;
    desc(0, DATA_GPA, 64, F_WRITE, 0);
    /* used_event = 2: interrupt only when the used index moves past 2. */
    put16(AVAIL_GPA + 4 + 2 * QSIZE, 2);
    int irq[4];
    for (int i = 0; i < 4; i++) {
        offer((uint16_t)i, 0);
        netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_WRITE, &ch);
        netbe_vq_push(vq, 0, 64);
        irq[i] = netbe_vq_publish(vq);
    }
    CHECK(!irq[0] && !irq[1] && irq[2] && !irq[3], "interrupts %d %d %d %d", irq[0], irq[1],
          irq[2], irq[3]);
    /* Enabling kicks writes avail_event = the next entry we will take. */
    CHECK(netbe_vq_notify_enable(vq) == 0, "nothing pending");
    CHECK(get16(USED_GPA + 4 + 8 * QSIZE) == 4, "avail_event %u",
          get16(USED_GPA + 4 + 8 * QSIZE));
    put16(USED_GPA, 0);
    netbe_vq_notify_disable(vq);
    CHECK(get16(USED_GPA) == 0, "flags untouched with EVENT_IDX");
    /* A batch that jumps over used_event still interrupts. */
    put16(AVAIL_GPA + 4 + 2 * QSIZE, 5);
    for (int i = 4; i < 8; i++) {
        offer((uint16_t)i, 0);
        netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_WRITE, &ch);
        netbe_vq_push(vq, 0, 64);
    }
    CHECK(netbe_vq_publish(vq) == 1, "batch crossing used_event");
    netbe_vq_free(vq);
}

/* Run POP on a ring prepared by SETUP; expect error CODE and a message with WHAT. */
static void expect_broken(const char *name, uint64_t features, int allow, int iovmax,
                          void (*setup)(void), int code, const char *what)
{
    netbe_vq *vq = fresh(features);
    struct iovec iov[QSIZE];
    struct netbe_vq_chain ch;
    setup();
    int rc = netbe_vq_pop(vq, iov, iovmax, allow, &ch);
    CHECK(rc == code, "%s: got %d, expected %d (%s)", name, rc, code, netbe_vq_error(vq));
    CHECK(strstr(netbe_vq_error(vq), what) != NULL, "%s: message '%s' lacks '%s'", name,
          netbe_vq_error(vq), what);
    CHECK(!netbe_vq_ready(vq), "%s: queue not broken", name);
    CHECK(netbe_vq_pop(vq, iov, iovmax, allow, &ch) < 0, "%s: broken queue popped", name);
    CHECK(netbe_vq_push(vq, 0, 0) == -EIO && netbe_vq_publish(vq) == -EIO,
          "%s: broken queue accepts used entries", name);
    char err[NETBE_ERRMAX];
    memset(mem + AVAIL_GPA, 0, 0x2000);
    CHECK(netbe_vq_setup(vq, QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA, features, err,
                         sizeof err) == 0 && netbe_vq_ready(vq) && !*netbe_vq_error(vq),
          "%s: setup again clears the broken state", name);
    netbe_vq_free(vq);
}

static void h_outside(void) { desc(0, MEM_SIZE - 10, 64, 0, 0); offer(0, 0); }
static void h_huge_len(void) { desc(0, DATA_GPA, 0xffffffffu, F_WRITE, 0); offer(0, 0); }
static void h_wrap_addr(void) { desc(0, UINT64_MAX - 15, 64, 0, 0); offer(0, 0); }
static void h_loop(void)
{
    desc(0, DATA_GPA, 64, F_NEXT, 1);
    desc(1, DATA_GPA, 64, F_NEXT, 0);
    offer(0, 0);
}
static void h_self_loop(void) { desc(2, DATA_GPA, 0, F_NEXT, 2); offer(0, 2); }
static void h_next_range(void) { desc(0, DATA_GPA, 64, F_NEXT, QSIZE); offer(0, 0); }
static void h_head_range(void) { offer(0, 1000); }
static void h_idx_jump(void) { put16(AVAIL_GPA + 2, QSIZE + 1); }
static void h_nested_indirect(void)
{
    desc_at(INDIR_GPA, 0, INDIR_GPA, 32, F_INDIRECT, 0);
    desc(0, INDIR_GPA, 32, F_INDIRECT, 0);
    offer(0, 0);
}
static void h_indirect_next(void) { desc(0, INDIR_GPA, 32, F_INDIRECT | F_NEXT, 1); offer(0, 0); }
static void h_indirect_len(void) { desc(0, INDIR_GPA, 24, F_INDIRECT, 0); offer(0, 0); }
static void h_indirect_huge(void) { desc(0, INDIR_GPA, 0xfffffff0u, F_INDIRECT, 0); offer(0, 0); }
static void h_indirect_outside(void) { desc(0, MEM_SIZE - 16, 64, F_INDIRECT, 0); offer(0, 0); }
static void h_indirect_loop(void)
{
    desc_at(INDIR_GPA, 0, DATA_GPA, 8, F_NEXT, 1);
    desc_at(INDIR_GPA, 1, DATA_GPA, 8, F_NEXT, 0);
    desc(0, INDIR_GPA, 32, F_INDIRECT, 0);
    offer(0, 0);
}
static void h_indirect_next_range(void)
{
    desc_at(INDIR_GPA, 0, DATA_GPA, 8, F_NEXT, 2);
    desc(0, INDIR_GPA, 32, F_INDIRECT, 0);
    offer(0, 0);
}
static void h_writable(void) { desc(0, DATA_GPA, 64, F_WRITE, 0); offer(0, 0); }
static void h_readable(void) { desc(0, DATA_GPA, 64, 0, 0); offer(0, 0); }
static void h_read_after_write(void)
{
    desc(0, DATA_GPA, 64, F_WRITE | F_NEXT, 1);
    desc(1, DATA_GPA, 64, 0, 0);
    offer(0, 0);
}
static void h_many(void)
{
    for (unsigned i = 0; i < QSIZE; i++)
        desc(i, DATA_GPA, 64, i + 1 < QSIZE ? F_NEXT : 0, (uint16_t)(i + 1));
    offer(0, 0);
}
static void h_total_4g(void)
{
    /* Guest memory in this test is 1 MiB, so a mapping that accepts huge
    ** lengths is needed to reach the 4 GiB check: overlapping buffers. */
    for (unsigned i = 0; i < 3; i++)
        desc(i, 0, 0xfff00000u, i < 2 ? F_NEXT : 0, (uint16_t)(i + 1));
    offer(0, 0);
}

static uint8_t *huge_base;
static void *map_anything(void *arg, uint64_t gpa, uint64_t len)
{
    return gpa < MEM_SIZE ? huge_base + gpa : NULL;
}

static void test_hostile(void)
{
    int rw = NETBE_VQ_READ | NETBE_VQ_WRITE;
    uint64_t ind = NETBE_F_RING_INDIRECT_DESC;
    expect_broken("buffer past the end of memory", 0, rw, QSIZE, h_outside, -EFAULT, "outside");
    expect_broken("4 GiB length", 0, rw, QSIZE, h_huge_len, -EFAULT, "outside");
    expect_broken("address that wraps", 0, rw, QSIZE, h_wrap_addr, -EFAULT, "outside");
    expect_broken("two-descriptor loop", 0, rw, QSIZE, h_loop, -ELOOP, "loop");
    expect_broken("self loop of empty buffers", 0, rw, QSIZE, h_self_loop, -ELOOP, "loop");
    expect_broken("next outside the table", 0, rw, QSIZE, h_next_range, -EINVAL, "outside its table");
    expect_broken("head outside the queue", 0, rw, QSIZE, h_head_range, -EINVAL, "head 1000");
    expect_broken("avail idx jump", 0, rw, QSIZE, h_idx_jump, -EINVAL, "jumped");
    expect_broken("indirect not negotiated", 0, rw, QSIZE, h_nested_indirect, -EINVAL,
                  "without INDIRECT_DESC");
    expect_broken("indirect in indirect", ind, rw, QSIZE, h_nested_indirect, -EINVAL,
                  "inside an indirect table");
    expect_broken("indirect with NEXT", ind, rw, QSIZE, h_indirect_next, -EINVAL, "NEXT");
    expect_broken("indirect length 24", ind, rw, QSIZE, h_indirect_len, -EINVAL, "multiple of 16");
    expect_broken("indirect length 4 GiB", ind, rw, QSIZE, h_indirect_huge, -EINVAL, "multiple of 16");
    expect_broken("indirect table outside", ind, rw, QSIZE, h_indirect_outside, -EFAULT, "outside");
    expect_broken("loop in an indirect table", ind, rw, QSIZE, h_indirect_loop, -ELOOP, "loop");
    expect_broken("next outside an indirect table", ind, rw, QSIZE, h_indirect_next_range,
                  -EINVAL, "outside its table");
    expect_broken("writable buffer on a tx queue", 0, NETBE_VQ_READ, QSIZE, h_writable,
                  -EINVAL, "device-writable");
    expect_broken("readable buffer on an rx queue", 0, NETBE_VQ_WRITE, QSIZE, h_readable,
                  -EINVAL, "device-readable");
    expect_broken("readable after writable", 0, rw, QSIZE, h_read_after_write, -EINVAL,
                  "after a writable");
    expect_broken("more buffers than iovecs", 0, rw, 4, h_many, -E2BIG, "more than 4");

    /* The 4 GiB total needs a map that says yes to anything. */
    huge_base = mem;
    netbe_vq *vq;
    char err[NETBE_ERRMAX];
    struct iovec iov[QSIZE];
    struct netbe_vq_chain ch;
    memset(mem, 0, MEM_SIZE);
    netbe_vq_new(&vq, map_anything, NULL);
    netbe_vq_setup(vq, QSIZE, DESC_GPA, AVAIL_GPA, USED_GPA, 0, err, sizeof err);
    h_total_4g();
    CHECK(netbe_vq_pop(vq, iov, QSIZE, 3, &ch) == -EINVAL &&
          strstr(netbe_vq_error(vq), "4 GiB"), "chain over 4 GiB: %s", netbe_vq_error(vq));
    netbe_vq_free(vq);
}

/* A tx chain longer than any frame goes back with length 0, counted, and
** the queue goes on with the next chain; rx chains may be larger. */
static void test_oversize_chain(void)
{
    netbe_vq *vq = fresh(NETBE_F_RING_INDIRECT_DESC);
    struct iovec iov[QSIZE];
    struct netbe_vq_chain ch;
    desc(0, DATA_GPA, 200 * 1024, 0, 0);                    /* one 200 KB buffer */
    desc(1, DATA_GPA, 60000, F_NEXT, 2);                     /* two, 1 byte over */
    desc(2, DATA_GPA, NETBE_VQ_MAX_READ - 60000 + 1, 0, 0);
    desc_at(INDIR_GPA, 0, DATA_GPA, 70000, 0, 0);            /* indirect, 70000 */
    desc(3, INDIR_GPA, 16, F_INDIRECT, 0);
    desc(4, DATA_GPA, NETBE_VQ_MAX_READ, 0, 0);              /* the longest frame */
    desc(5, DATA_GPA, 200 * 1024, F_WRITE, 0);               /* a big rx buffer */
    offer(0, 0);
    offer(1, 1);
    offer(2, 3);
    offer(3, 4);
    CHECK(netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_READ, &ch) == 1 && ch.head == 4 &&
          ch.read_len == NETBE_VQ_MAX_READ, "pop gave head %u of %llu bytes, expected the "
          "longest frame behind three oversize chains", ch.head,
          (unsigned long long)ch.read_len);
    CHECK(netbe_vq_dropped(vq) == 3, "%llu chains dropped",
          (unsigned long long)netbe_vq_dropped(vq));
    CHECK(netbe_vq_ready(vq), "the queue broke: %s", netbe_vq_error(vq));
    /* Undo gives back only the chain returned, never a dropped one. */
    netbe_vq_unpop(vq);
    CHECK(netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_READ, &ch) == 1 && ch.head == 4,
          "unpop then pop: head %u", ch.head);
    /* Only an oversize chain in the ring: pop says none, and the chain it
    ** dropped cannot be undone into being taken twice. */
    offer(4, 0);
    CHECK(netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_READ, &ch) == 0, "oversize chain returned");
    netbe_vq_unpop(vq);
    CHECK(netbe_vq_get_base(vq) == 5, "unpop after a drop moved the base to %u",
          netbe_vq_get_base(vq));
    netbe_vq_push(vq, 4, 0);
    CHECK(netbe_vq_publish(vq) == 1 && get16(USED_GPA + 2) == 5, "used idx %u",
          get16(USED_GPA + 2));
    static const unsigned heads[5] = {0, 1, 3, 0, 4};
    for (unsigned i = 0; i < 5; i++)
        CHECK(get32(USED_GPA + 4 + 8 * i) == heads[i] && get32(USED_GPA + 8 + 8 * i) == 0,
              "used entry %u: head %u len %u", i, get32(USED_GPA + 4 + 8 * i),
              get32(USED_GPA + 8 + 8 * i));
    offer(5, 5);
    CHECK(netbe_vq_pop(vq, iov, QSIZE, NETBE_VQ_WRITE, &ch) == 1 && ch.head == 5 &&
          ch.write_len == 200 * 1024, "a 200 KB rx buffer is taken");
    CHECK(netbe_vq_dropped(vq) == 4, "%llu dropped", (unsigned long long)netbe_vq_dropped(vq));
    netbe_vq_free(vq);
}

/* Random rings: whatever the guest writes, pops end and stay in memory. */
static void test_random_rings(void)
{
    srand(12345);
    int broken = 0, popped = 0;
    for (int round = 0; round < 3000; round++) {
        uint64_t f = (round & 1 ? NETBE_F_RING_INDIRECT_DESC : 0) |
                     (round & 2 ? NETBE_F_RING_EVENT_IDX : 0);
        netbe_vq *vq = fresh(f);
        for (unsigned i = 0; i < QSIZE; i++) {
            unsigned table = rand() % 4 == 0 ? INDIR_GPA : DESC_GPA;
            desc_at(table, i, (uint64_t)(rand() % (MEM_SIZE + 4096)), (uint32_t)rand() % 70000,
                    (uint16_t)(rand() % 8), (uint16_t)(rand() % (QSIZE + 2)));
        }
        for (unsigned i = 0; i < QSIZE; i++)
            desc_at(INDIR_GPA, i, (uint64_t)rand() % MEM_SIZE, (uint32_t)(rand() % 5) * 16,
                    (uint16_t)(rand() % 8), (uint16_t)(rand() % (QSIZE + 2)));
        for (unsigned i = 0; i < QSIZE; i++)
            put16(AVAIL_GPA + 4 + 2 * i, (uint16_t)(rand() % (QSIZE + 1)));
        put16(AVAIL_GPA + 2, (uint16_t)(rand() % (QSIZE + 3)));
        struct iovec iov[QSIZE];
        struct netbe_vq_chain ch;
        int rc;
        for (int n = 0; n < 2 * QSIZE && (rc = netbe_vq_pop(vq, iov, QSIZE, 3, &ch)) > 0; n++) {
            popped++;
            for (int i = 0; i < ch.nread + ch.nwrite; i++)
                CHECK((uint8_t *)iov[i].iov_base >= mem &&
                      (uint8_t *)iov[i].iov_base + iov[i].iov_len <= mem + MEM_SIZE,
                      "buffer outside guest memory");
            netbe_vq_push(vq, ch.head, (uint32_t)ch.write_len);
        }
        broken += !netbe_vq_ready(vq);
        netbe_vq_publish(vq);
        netbe_vq_free(vq);
    }
    CHECK(broken > 1000 && popped > 100, "random rings: %d broken, %d chains", broken, popped);
}

int main(void)
{
    mem = calloc(1, MEM_SIZE);
    RUN(test_setup_rejects());
    RUN(test_normal_chain());
    RUN(test_wraparound());
    RUN(test_indirect());
    RUN(test_event_idx());
    RUN(test_hostile());
    RUN(test_oversize_chain());
    RUN(test_random_rings());
    free(mem);
    return check_summary();
}
