/*
** be_bytes.h: big-endian (network order) reads and writes for the C tests
** and fuzzers, which build and check frames byte by byte.
*/
#ifndef NETBE_TEST_BE_BYTES_H
#define NETBE_TEST_BE_BYTES_H

#include <stdint.h>

static inline unsigned be_get16(const uint8_t *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

static inline uint32_t be_get32(const uint8_t *p)
{
    return (uint32_t)be_get16(p) << 16 | be_get16(p + 2);
}

static inline void be_put16(uint8_t *p, unsigned v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static inline void be_put32(uint8_t *p, uint32_t v)
{
    be_put16(p, v >> 16);
    be_put16(p + 2, v & 0xffff);
}

#endif
