/*
** check.h: the smallest test harness for netbe's C tests.
** CHECK records a pass or a failure with its line; check_summary prints the
** "N passed, N failed" line that scripts/run-tests reads.
*/
#ifndef NETBE_CHECK_H
#define NETBE_CHECK_H

#include <stdio.h>

static int check_passed, check_failed;

#define CHECK(cond, ...) do {                                          \
        if (cond) {                                                    \
            check_passed++;                                            \
        } else {                                                       \
            check_failed++;                                            \
            printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);     \
            printf(__VA_ARGS__);                                       \
            printf("\n");                                              \
        }                                                              \
    } while (0)

static int check_summary(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed != 0;
}

#endif
