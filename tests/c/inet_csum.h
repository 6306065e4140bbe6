/*
** inet_csum.h: the Internet checksum for the C tests, byte at a time and
** written apart from netbe's, so a test checks netbe against something else.
*/
#ifndef NETBE_TEST_INET_CSUM_H
#define NETBE_TEST_INET_CSUM_H

#include <stddef.h>
#include <stdint.h>

/* Add LEN bytes at P to the running sum S, as 16-bit big-endian words. */
static uint32_t sum16(const uint8_t *p, size_t len, uint32_t s)
{
    for (size_t i = 0; i < len; i++)
        s += i & 1 ? p[i] : (uint32_t)p[i] << 8;
    return s;
}

static uint16_t fold(uint32_t s)
{
    while (s >> 16)
        s = (s & 0xffff) + (s >> 16);
    return (uint16_t)s;
}

#endif
